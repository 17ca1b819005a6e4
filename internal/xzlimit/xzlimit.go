// Package xzlimit bounds the memory an xz stream can make its decoder take. An LZMA2 decoder
// allocates the dictionary that each block header declares, up to 4 GiB, and
// github.com/ulikunitz/xz takes that size as given: a 64-byte upload could make the server
// allocate 3 GiB. NewReader opens an xz stream through a reader that follows the container's
// structure (stream headers, block headers, LZMA2 chunk headers, index, footer) as the bytes go
// by, without decoding anything, and fails before a block header that declares a larger
// dictionary than allowed reaches the decoder. It does not check CRCs or decode data: the decoder
// still does that.
package xzlimit

import (
	"errors"
	"fmt"
	"io"

	"github.com/ulikunitz/xz"
)

// DefaultMaxDict is the largest dictionary accepted by default: xz -9's (64 MiB), the largest of
// xz's presets; Nix compresses with xz's default preset (8 MiB).
const DefaultMaxDict = 64 << 20

// ErrDictTooLarge is returned (wrapped) for a block that declares a larger dictionary than
// allowed.
var ErrDictTooLarge = errors.New("xz dictionary too large")

// NewReader returns a decoder of the xz stream(s) in r that refuses a block declaring a
// dictionary larger than maxDict bytes.
func NewReader(r io.Reader, maxDict int64) (io.Reader, error) {
	return xz.NewReader(&guard{r: r, maxDict: maxDict})
}

type state int

const (
	stStreamHeader  state = iota // the 12-byte stream header
	stBlockStart                 // a block header's size byte, or the index indicator (0)
	stBlockHeader                // the rest of a block header
	stChunkControl               // an LZMA2 chunk's control byte
	stChunkHeader                // the rest of an LZMA2 chunk header
	stSkip                       // payload to pass without looking
	stIndex                      // the index, up to its CRC
	stFooter                     // the 12-byte stream footer
	stStreamPadding              // zero bytes between streams
)

// guard follows the structure of the bytes read through it.
type guard struct {
	r       io.Reader
	maxDict int64
	err     error

	st    state
	buf   []byte // the header being collected
	need  int    // bytes of it still to come
	skip  int64  // bytes to pass in stSkip
	after state  // where stSkip goes next
	check int    // size of each block's check field, from the stream flags

	blockLen int64 // bytes of the current block so far (for its padding)
	index    indexState
}

// indexState follows the index: indicator, record count, records (two varints each), padding
// to four bytes, CRC32.
type indexState struct {
	len      int64  // bytes of the index so far
	varints  uint64 // varints still to read (count first, then 2 per record)
	started  bool
	varint   uint64
	shift    uint
	trailing int // padding + CRC bytes still to come
}

func (g *guard) Read(p []byte) (int, error) {
	if g.err != nil {
		return 0, g.err
	}
	n, err := g.r.Read(p)
	for i := 0; i < n; i++ {
		if g.st == stSkip { // payload: passed in bulk
			k := min(g.skip, int64(n-i))
			g.skip -= k
			i += int(k) - 1
			if g.skip == 0 {
				g.st = g.after
			}
			continue
		}
		if e := g.step(p[i]); e != nil {
			g.err = e
			// The bytes before the offending one are harmless and the decoder may use them;
			// the offending header never reaches it whole.
			if i == 0 {
				return 0, e
			}
			return i, nil
		}
	}
	if err == io.EOF && g.st != stStreamPadding {
		// The decoder takes an end of input where a block could start as the end of the
		// stream, index and footer missing: only the end of a whole stream may end the input.
		g.err = fmt.Errorf("xz: %w: the input ends before the end of its stream (no index and footer)", io.ErrUnexpectedEOF)
		return n, g.err
	}
	return n, err
}

var streamMagic = []byte{0xfd, '7', 'z', 'X', 'Z', 0x00}

// step takes one byte of the stream.
func (g *guard) step(b byte) error {
	switch g.st {
	case stStreamHeader:
		g.buf = append(g.buf, b)
		if len(g.buf) <= len(streamMagic) && b != streamMagic[len(g.buf)-1] {
			return errors.New("xz: not an xz stream header")
		}
		if len(g.buf) == 12 {
			g.check = checkSize(g.buf[7] & 0x0f)
			g.buf = g.buf[:0]
			g.st = stBlockStart
		}
	case stBlockStart:
		if b == 0 {
			g.index = indexState{len: 1}
			g.st = stIndex
			return nil
		}
		g.buf = append(g.buf[:0], b)
		g.need = (int(b)+1)*4 - 1
		g.st = stBlockHeader
	case stBlockHeader:
		g.buf = append(g.buf, b)
		if g.need--; g.need == 0 {
			if err := g.blockHeader(g.buf); err != nil {
				return err
			}
			g.blockLen = int64(len(g.buf))
			g.buf = g.buf[:0]
			g.st = stChunkControl
		}
	case stChunkControl:
		g.blockLen++
		switch {
		case b == 0x00: // end of the LZMA2 data: block padding, then the check
			pad := (4 - g.blockLen%4) % 4
			g.skipThen(pad+int64(g.check), stBlockStart)
		case b == 0x01 || b == 0x02: // uncompressed chunk: 2 bytes of size - 1
			g.buf = append(g.buf[:0], b)
			g.need = 2
			g.st = stChunkHeader
		case b >= 0x80: // LZMA chunk: 2 bytes of unpacked size, 2 of packed size - 1, props
			g.buf = append(g.buf[:0], b)
			g.need = 4
			if b >= 0xc0 {
				g.need = 5
			}
			g.st = stChunkHeader
		default:
			return fmt.Errorf("xz: invalid LZMA2 chunk control byte 0x%02x", b)
		}
	case stChunkHeader:
		g.blockLen++
		g.buf = append(g.buf, b)
		if g.need--; g.need == 0 {
			var size int64
			if g.buf[0] < 0x80 {
				size = int64(g.buf[1])<<8 | int64(g.buf[2]) + 1
			} else {
				size = int64(g.buf[3])<<8 | int64(g.buf[4]) + 1
			}
			g.blockLen += size
			g.skipThen(size, stChunkControl)
		}
	case stIndex:
		return g.indexByte(b)
	case stFooter:
		if g.need--; g.need == 0 {
			g.st = stStreamPadding
		}
	case stStreamPadding:
		if b != 0 {
			g.buf = g.buf[:0]
			g.st = stStreamHeader
			return g.step(b)
		}
	}
	return nil
}

// skipThen passes n bytes, then goes to next.
func (g *guard) skipThen(n int64, next state) {
	if n == 0 {
		g.st = next
		return
	}
	g.skip, g.after, g.st = n, next, stSkip
}

// blockHeader checks the filter flags of a whole block header (size byte to CRC).
func (g *guard) blockHeader(h []byte) error {
	flags := h[1]
	if flags&0x3c != 0 {
		return errors.New("xz: reserved block header flags set")
	}
	rest := h[2 : len(h)-4]
	var err error
	if flags&0x40 != 0 { // compressed size
		if _, rest, err = uvarint(rest); err != nil {
			return err
		}
	}
	if flags&0x80 != 0 { // uncompressed size
		if _, rest, err = uvarint(rest); err != nil {
			return err
		}
	}
	for i := 0; i <= int(flags&0x03); i++ {
		var id, size uint64
		if id, rest, err = uvarint(rest); err != nil {
			return err
		}
		if size, rest, err = uvarint(rest); err != nil {
			return err
		}
		if size > uint64(len(rest)) {
			return errors.New("xz: block header filter properties overflow the header")
		}
		props := rest[:size]
		rest = rest[size:]
		if id == 0x21 { // LZMA2
			if len(props) != 1 || props[0] > 40 {
				return errors.New("xz: invalid LZMA2 filter properties")
			}
			if d := dictSize(props[0]); d > g.maxDict {
				return fmt.Errorf("%w: a block declares a %d MiB dictionary, at most %d MiB accepted", ErrDictTooLarge, d>>20, g.maxDict>>20)
			}
		}
	}
	return nil
}

// indexByte takes one byte of the index (after its indicator).
func (g *guard) indexByte(b byte) error {
	x := &g.index
	x.len++
	if x.trailing > 0 {
		if x.trailing--; x.trailing == 0 {
			g.need = 12
			g.st = stFooter
		}
		return nil
	}
	if x.shift >= 63 {
		return errors.New("xz: index varint overflow")
	}
	x.varint |= uint64(b&0x7f) << x.shift
	x.shift += 7
	if b&0x80 != 0 {
		return nil
	}
	v := x.varint
	x.varint, x.shift = 0, 0
	switch {
	case !x.started:
		x.started = true
		if v > 1<<40 {
			return errors.New("xz: index record count out of range")
		}
		x.varints = 2 * v
	default:
		x.varints--
	}
	if x.varints == 0 {
		x.trailing = int((4-x.len%4)%4) + 4 // padding, CRC32
	}
	return nil
}

func uvarint(b []byte) (uint64, []byte, error) {
	var v uint64
	for i := 0; i < len(b) && i < 9; i++ {
		v |= uint64(b[i]&0x7f) << (7 * i)
		if b[i]&0x80 == 0 {
			return v, b[i+1:], nil
		}
	}
	return 0, nil, errors.New("xz: bad varint in block header")
}

// dictSize is the dictionary size an LZMA2 properties byte (0..40) declares.
func dictSize(p byte) int64 {
	if p == 40 {
		return 1<<32 - 1
	}
	return int64(2|p&1) << (p/2 + 11)
}

// checkSize is the size of a block's check field for a stream's check ID.
func checkSize(id byte) int {
	if id == 0 {
		return 0
	}
	return 4 << ((id - 1) / 3)
}
