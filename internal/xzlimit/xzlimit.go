// Package xzlimit bounds the memory and the allocation work an xz stream can make its decoder
// take. github.com/ulikunitz/xz allocates, for every block, the whole dictionary its header
// declares (up to 4 GiB), and for every LZMA2 chunk that resets its properties, fresh
// probability tables (up to 6 MiB with lc=8, lp=4, which LZMA2 forbids but the decoder takes):
// a 64-byte upload could make the server allocate 3 GiB, and 40 KB of tiny blocks declaring
// 128 MiB each, 130 GB one after another. NewReader opens an xz stream through a reader that
// follows the container's structure (stream headers, block headers, LZMA2 chunk headers, index,
// footer) as the bytes go by, without decoding anything, and:
//   - refuses a block header that declares a larger dictionary than allowed;
//   - shrinks the dictionary of a block whose header declares its uncompressed size to that size
//     (a block cannot refer back further than what it produces), rewriting the header and its
//     CRC32 before the decoder sees it;
//   - refuses LZMA2 properties with lc + lp > 4;
//   - counts what the decoder will allocate (dictionaries, state tables) against the bytes the
//     chunks decode to, and refuses the stream once the allocations exceed one dictionary,
//     plus Allowance, plus PerByte bytes per decoded byte: normal streams (big blocks, one
//     properties reset per block) stay far below that, and a stream of tiny blocks is refused
//     after the second one that declares a big dictionary, or a few hundred small ones.
//
// It does not check data CRCs or decode anything: the decoder still does that, and it fails on
// a chunk that does not decode to the size its header declares, so the counts hold by the time
// the next allocation happens.
package xzlimit

import (
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"io"

	"github.com/ulikunitz/xz"
)

// DefaultMaxDict is the largest dictionary accepted by default: xz -9's (64 MiB), the largest of
// xz's presets; Nix compresses with xz's default preset (8 MiB).
const DefaultMaxDict = 64 << 20

const (
	// Allowance is what the decoder may allocate beyond its largest dictionary before
	// PerByte applies: a second default (8 MiB) dictionary, as two small streams one after the
	// other need, and the state tables of a few hundred small blocks.
	Allowance = 16 << 20
	// PerByte is how many bytes the decoder may allocate per byte it decodes, beyond its
	// largest dictionary and Allowance. Clearing that much memory costs less CPU than decoding
	// the byte; github.com/ulikunitz/xz's writer with 256 KiB blocks and an 8 MiB dictionary
	// needs 32.
	PerByte = 64

	// What the decoder allocates besides a block's dictionary, as measured with
	// github.com/ulikunitz/xz v0.5 (TestChargesCoverAllocations), rounded up.
	streamCost = 4 << 10  // a stream reader, its header, index and hash
	blockCost  = 8 << 10  // a block reader, LZMA2 reader, check hash
	stateCost  = 40 << 10 // LZMA state tables of a properties reset (lc + lp ≤ 4)

	// Overhead is what a decoder needs at once besides its dictionary (Config.Need).
	Overhead = streamCost + blockCost + stateCost + 64<<10
)

var (
	// ErrDictTooLarge is returned (wrapped) for a block that declares a larger dictionary than
	// allowed.
	ErrDictTooLarge = errors.New("xz dictionary too large")
	// ErrTooCostly is returned (wrapped) for a stream whose decoding would allocate more than
	// its largest dictionary, Allowance and PerByte bytes per decoded byte (tiny blocks, or
	// properties reset in tiny chunks).
	ErrTooCostly = errors.New("xz stream too costly to decode")
)

// Config says what a stream may make its decoder take.
type Config struct {
	// MaxDict is the largest dictionary a block may declare, in bytes.
	MaxDict int64
	// Need, when set, is called before the decoder allocates for a block whose dictionary is
	// larger than any before, with what the decoder then needs at once (the dictionary plus
	// Overhead); an error from it refuses the stream there.
	Need func(bytes int64) error
}

// NewReader returns a decoder of the xz stream(s) in r that refuses a block declaring a
// dictionary larger than maxDict bytes.
func NewReader(r io.Reader, maxDict int64) (io.Reader, error) {
	return Config{MaxDict: maxDict}.NewReader(r)
}

// NewReader returns a decoder of the xz stream(s) in r, bounded as c says.
func (c Config) NewReader(r io.Reader) (io.Reader, error) {
	return xz.NewReader(&guard{r: r, cfg: c, in: make([]byte, 16<<10)})
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

// guard follows the structure of the bytes read through it. It holds each block header back
// until it is whole, to check it and perhaps rewrite it, and passes everything else on.
type guard struct {
	r   io.Reader
	cfg Config
	err error // returned once what comes before it has been passed on

	in       []byte // bytes read from r, from pos to end not yet looked at
	pos, end int
	rerr     error  // r's error after those bytes
	out      []byte // a block header, checked, waiting to be passed on

	st    state
	buf   []byte // the header being collected
	need  int    // bytes of it still to come
	skip  int64  // bytes to pass in stSkip
	after state  // where stSkip goes next
	check int    // size of each block's check field, from the stream flags

	blockLen int64 // bytes of the current block so far (for its padding)
	index    indexState

	decoded   int64 // bytes the LZMA2 chunks seen so far decode to
	allocated int64 // what the decoder allocates for the structure seen so far
	largest   int64 // the largest dictionary so far
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
	if len(p) == 0 {
		return 0, nil
	}
	for {
		if len(g.out) > 0 {
			n := copy(p, g.out)
			g.out = g.out[n:]
			return n, nil
		}
		if g.err != nil {
			return 0, g.err
		}
		if g.pos == g.end {
			if g.rerr != nil {
				g.err = g.rerr
				if g.err == io.EOF && g.st != stStreamPadding {
					// The decoder takes an end of input where a block could start as the end
					// of the stream, index and footer missing: only the end of a whole stream
					// may end the input.
					g.err = fmt.Errorf("xz: %w: the input ends before the end of its stream (no index and footer)", io.ErrUnexpectedEOF)
				}
				continue
			}
			n, err := g.r.Read(g.in)
			g.pos, g.end, g.rerr = 0, n, err
			continue
		}
		n := 0
		for n < len(p) && g.pos < g.end && len(g.out) == 0 {
			if g.st == stSkip { // payload: passed in bulk
				k := int(min(g.skip, int64(g.end-g.pos), int64(len(p)-n)))
				copy(p[n:], g.in[g.pos:g.pos+k])
				n += k
				g.pos += k
				if g.skip -= int64(k); g.skip == 0 {
					g.st = g.after
				}
				continue
			}
			b := g.in[g.pos]
			g.pos++
			held, err := g.step(b)
			if err != nil {
				// The bytes before the offending one are harmless and the decoder may use
				// them; the offending header never reaches it whole.
				g.err = err
				break
			}
			if !held {
				p[n] = b
				n++
			}
		}
		if n > 0 {
			return n, nil
		}
	}
}

var streamMagic = []byte{0xfd, '7', 'z', 'X', 'Z', 0x00}

// step takes one byte of the stream. It reports whether the byte is held back (part of a block
// header; the whole header goes to g.out once checked).
func (g *guard) step(b byte) (held bool, err error) {
	switch g.st {
	case stStreamHeader:
		g.buf = append(g.buf, b)
		if len(g.buf) <= len(streamMagic) && b != streamMagic[len(g.buf)-1] {
			return false, errors.New("xz: not an xz stream header")
		}
		if len(g.buf) == 12 {
			g.check = checkSize(g.buf[7] & 0x0f)
			g.buf = g.buf[:0]
			g.st = stBlockStart
			return false, g.charge(streamCost)
		}
	case stBlockStart:
		if b == 0 {
			g.index = indexState{len: 1}
			g.st = stIndex
			return false, nil
		}
		g.buf = append(g.buf[:0], b)
		g.need = (int(b)+1)*4 - 1
		g.st = stBlockHeader
		return true, nil
	case stBlockHeader:
		g.buf = append(g.buf, b)
		if g.need--; g.need == 0 {
			if err := g.blockHeader(g.buf); err != nil {
				return true, err
			}
			g.blockLen = int64(len(g.buf))
			g.out = g.buf
			g.buf = nil
			g.st = stChunkControl
		}
		return true, nil
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
			return false, fmt.Errorf("xz: invalid LZMA2 chunk control byte 0x%02x", b)
		}
	case stChunkHeader:
		g.blockLen++
		g.buf = append(g.buf, b)
		if g.need--; g.need == 0 {
			return false, g.chunkHeader(g.buf)
		}
	case stIndex:
		return false, g.indexByte(b)
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
	return false, nil
}

// chunkHeader takes a whole LZMA2 chunk header (control byte first).
func (g *guard) chunkHeader(h []byte) error {
	var packed, unpacked int64
	if h[0] < 0x80 {
		unpacked = int64(binary.BigEndian.Uint16(h[1:])) + 1
		packed = unpacked
	} else {
		unpacked = (int64(h[0]&0x1f)<<16 | int64(binary.BigEndian.Uint16(h[1:]))) + 1
		packed = int64(binary.BigEndian.Uint16(h[3:])) + 1
	}
	if h[0] >= 0xc0 { // new properties: the decoder allocates new state tables
		p := h[5]
		lc, lp, pb := p%9, p/9%5, p/45
		if pb > 4 || lc+lp > 4 {
			return fmt.Errorf("xz: invalid LZMA2 properties 0x%02x (lc %d + lp %d > 4 or pb %d > 4)", p, lc, lp, pb)
		}
		if err := g.charge(stateCost); err != nil {
			return err
		}
	}
	g.decoded += unpacked
	g.blockLen += packed
	g.skipThen(packed, stChunkControl)
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

// charge counts n bytes the decoder will allocate, and refuses the stream if that makes the
// total more than its largest dictionary, Allowance and PerByte per decoded byte.
func (g *guard) charge(n int64) error {
	g.allocated += n
	if limit := g.largest + Allowance + PerByte*g.decoded; g.allocated > limit {
		return fmt.Errorf("%w: decoding %d bytes would allocate %d KiB (at most %d bytes per decoded byte beyond one %d KiB dictionary and %d KiB): too many blocks or properties resets for the data",
			ErrTooCostly, g.decoded, g.allocated>>10, PerByte, g.largest>>10, Allowance>>10)
	}
	return nil
}

// blockHeader checks the whole block header h (size byte to CRC), and shrinks its dictionary to
// the block's uncompressed size when it declares one.
func (g *guard) blockHeader(h []byte) error {
	flags := h[1]
	if flags&0x3c != 0 {
		return errors.New("xz: reserved block header flags set")
	}
	body := h[:len(h)-4]
	if crc32.ChecksumIEEE(body) != binary.LittleEndian.Uint32(h[len(h)-4:]) {
		return errors.New("xz: block header CRC32 mismatch")
	}
	rest := body[2:]
	var err error
	if flags&0x40 != 0 { // compressed size
		if _, rest, err = uvarint(rest); err != nil {
			return err
		}
	}
	size := int64(-1) // uncompressed size, if declared
	if flags&0x80 != 0 {
		var u uint64
		if u, rest, err = uvarint(rest); err != nil {
			return err
		}
		size = int64(min(u, 1<<62))
	}
	dict := int64(0)
	for i := 0; i <= int(flags&0x03); i++ {
		var id, n uint64
		if id, rest, err = uvarint(rest); err != nil {
			return err
		}
		if n, rest, err = uvarint(rest); err != nil {
			return err
		}
		if n > uint64(len(rest)) {
			return errors.New("xz: block header filter properties overflow the header")
		}
		props := rest[:n]
		rest = rest[n:]
		if id != 0x21 { // not LZMA2: the decoder refuses what it does not know
			continue
		}
		if len(props) != 1 || props[0] > 40 {
			return errors.New("xz: invalid LZMA2 filter properties")
		}
		d := dictSize(props[0])
		if d > g.cfg.MaxDict {
			return fmt.Errorf("%w: a block declares a %d MiB dictionary, at most %d MiB accepted", ErrDictTooLarge, d>>20, g.cfg.MaxDict>>20)
		}
		// With LZMA2 the only filter, the block's uncompressed size is LZMA2's output: no match
		// can reach further back than that. Rewrite the header with the smallest dictionary
		// that holds the whole block.
		if size >= 0 && flags&0x03 == 0 && d > size {
			p := props[0]
			for p > 0 && dictSize(p-1) >= size {
				p--
			}
			props[0] = p
			d = dictSize(p)
			binary.LittleEndian.PutUint32(h[len(h)-4:], crc32.ChecksumIEEE(body))
		}
		dict = max(dict, d)
	}
	if dict > g.largest {
		if g.cfg.Need != nil {
			if err := g.cfg.Need(dict + Overhead); err != nil {
				return err
			}
		}
		g.largest = dict
	}
	return g.charge(dict + blockCost)
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
