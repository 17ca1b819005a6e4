package xzlimit

import (
	"bytes"
	"encoding/binary"
	"errors"
	"hash/crc32"
	"io"
	"math/rand/v2"
	"os"
	"os/exec"
	"runtime"
	"testing"

	"github.com/ulikunitz/xz"
)

// sample is compressible text with some noise, larger than one LZMA2 chunk.
func sample(n int) []byte {
	r := rand.New(rand.NewPCG(1, 2))
	b := make([]byte, n)
	for i := range b {
		if r.IntN(8) == 0 {
			b[i] = byte(r.IntN(256))
		} else {
			b[i] = "abcdefgh\n"[i%9]
		}
	}
	return b
}

func xzTool(t *testing.T, data []byte, args ...string) []byte {
	t.Helper()
	if _, err := exec.LookPath("xz"); err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatal("xz (xz-utils) not installed (./test.sh installs it)")
		}
		t.Skip("xz (xz-utils) not installed (./test.sh installs it); skipped outside CI, fails when CI=true")
	}
	cmd := exec.Command("xz", append([]string{"-c"}, args...)...)
	cmd.Stdin = bytes.NewReader(data)
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("xz %v: %v", args, err)
	}
	return out
}

func decode(file []byte, maxDict int64) ([]byte, error) {
	r, err := NewReader(bytes.NewReader(file), maxDict)
	if err != nil {
		return nil, err
	}
	return io.ReadAll(r)
}

// Every shape of xz a client may send decodes as it did without the guard: xz-utils with every
// check, several blocks, the largest preset, concatenated and padded streams, and
// github.com/ulikunitz/xz's own writer.
func TestValidStreamsDecode(t *testing.T) {
	data := sample(1 << 20)
	var ulik bytes.Buffer
	w, _ := xz.WriterConfig{BlockSize: 256 << 10}.NewWriter(&ulik)
	w.Write(data)
	w.Close()
	empty := xzTool(t, nil)
	cases := map[string][]byte{
		"default":      xzTool(t, data),
		"check none":   xzTool(t, data, "--check=none"),
		"check crc32":  xzTool(t, data, "--check=crc32"),
		"check sha256": xzTool(t, data, "--check=sha256"),
		"-9":           xzTool(t, data, "-9"),
		"-0 extreme":   xzTool(t, data, "-0e"),
		"blocks":       xzTool(t, data, "--block-size=100KiB", "-T2"),
		"ulikunitz":    ulik.Bytes(),
	}
	for name, file := range cases {
		got, err := decode(file, DefaultMaxDict)
		if err != nil || !bytes.Equal(got, data) {
			t.Errorf("%s: %d bytes, %v; want the %d-byte input", name, len(got), err, len(data))
		}
	}
	// Streams one after another, with stream padding between them, and an empty stream.
	a, b := xzTool(t, data[:1000]), xzTool(t, data[1000:5000], "--check=sha256")
	cat := append(append(append(append([]byte{}, a...), 0, 0, 0, 0), empty...), b...)
	if got, err := decode(cat, DefaultMaxDict); err != nil || !bytes.Equal(got, data[:5000]) {
		t.Errorf("concatenated streams: %d bytes, %v", len(got), err)
	}
	if got, err := decode(empty, DefaultMaxDict); err != nil || len(got) != 0 {
		t.Errorf("empty stream: %q, %v", got, err)
	}
}

// withDict returns file with every LZMA2 dictionary byte of its (first) block header set to p,
// and the header's CRC32 fixed, so that only the guard stands between it and the decoder.
func withDict(t *testing.T, file []byte, p byte) []byte {
	t.Helper()
	f := append([]byte{}, file...)
	h := f[12:]
	size := (int(h[0]) + 1) * 4
	found := false
	for i := 2; i+2 < size-4; i++ {
		if h[i] == 0x21 && h[i+1] == 0x01 {
			h[i+2] = p
			found = true
			break
		}
	}
	if !found {
		t.Fatal("no LZMA2 filter in the first block header")
	}
	crc := crc32.ChecksumIEEE(h[:size-4])
	h[size-4], h[size-3], h[size-2], h[size-1] = byte(crc), byte(crc>>8), byte(crc>>16), byte(crc>>24)
	return f
}

// withDicts returns the single stream file with every block header's LZMA2 dictionary byte set
// to p and the headers' CRC32 fixed. The blocks are found through the index.
func withDicts(t *testing.T, file []byte, p byte) []byte {
	t.Helper()
	f := append([]byte{}, file...)
	backward := int(binary.LittleEndian.Uint32(f[len(f)-8:]))
	index := f[len(f)-12-(backward+1)*4:]
	varint := func() uint64 {
		v, n := binary.Uvarint(index)
		index = index[n:]
		return v
	}
	index = index[1:]
	off := 12
	for range varint() {
		unpadded, _ := int(varint()), varint()
		h := f[off:]
		size := (int(h[0]) + 1) * 4
		i := 2
		for _, flag := range []byte{0x40, 0x80} { // compressed, uncompressed size
			if h[1]&flag != 0 {
				_, n := binary.Uvarint(h[i:])
				i += n
			}
		}
		if h[1]&0x03 != 0 || h[i] != 0x21 || h[i+1] != 1 {
			t.Fatalf("block at %d: not a lone LZMA2 filter", off)
		}
		h[i+2] = p
		binary.LittleEndian.PutUint32(h[size-4:], crc32.ChecksumIEEE(h[:size-4]))
		off += (unpadded + 3) &^ 3
	}
	return f
}

// Without the guard, a few bytes make the decoder allocate what they declare.
func TestHugeDictionaryRefused(t *testing.T) {
	// A 64-byte stream declaring a 3 GiB dictionary: refused before the decoder allocates it.
	var buf bytes.Buffer
	w, _ := xz.NewWriter(&buf)
	w.Write([]byte("hello"))
	w.Close()
	hostile := withDict(t, buf.Bytes(), 39) // 3 GiB

	var before, after runtime.MemStats
	runtime.ReadMemStats(&before)
	_, err := decode(hostile, DefaultMaxDict)
	runtime.ReadMemStats(&after)
	if !errors.Is(err, ErrDictTooLarge) {
		t.Fatalf("decode of a 3 GiB-dictionary stream: %v, want ErrDictTooLarge", err)
	}
	if grew := after.TotalAlloc - before.TotalAlloc; grew > 16<<20 {
		t.Fatalf("refusing it allocated %d MiB", grew>>20)
	}
	t.Logf("refused: %v", err)

	// The guard is what refuses it: the decoder alone takes such a stream (shown with 256 MiB,
	// which takes less time to allocate than 3 GiB).
	hostile = withDict(t, buf.Bytes(), 32)
	if _, err := decode(hostile, DefaultMaxDict); !errors.Is(err, ErrDictTooLarge) {
		t.Fatalf("decode of a 256 MiB-dictionary stream: %v, want ErrDictTooLarge", err)
	}
	runtime.ReadMemStats(&before)
	r, err := xz.NewReader(bytes.NewReader(hostile))
	if err == nil {
		_, err = io.ReadAll(r)
	}
	runtime.ReadMemStats(&after)
	if err != nil || after.TotalAlloc-before.TotalAlloc < 256<<20 {
		t.Fatalf("without the guard: %v after allocating %d MiB; the test no longer shows the danger", err, (after.TotalAlloc-before.TotalAlloc)>>20)
	}
}

func TestDictionaryLimit(t *testing.T) {
	data := sample(1 << 20)
	file := xzTool(t, data, "--lzma2=preset=6,dict=128MiB")
	if _, err := decode(file, DefaultMaxDict); !errors.Is(err, ErrDictTooLarge) {
		t.Fatalf("a 128 MiB dictionary with a 64 MiB limit: %v, want ErrDictTooLarge", err)
	}
	if got, err := decode(file, 128<<20); err != nil || !bytes.Equal(got, data) {
		t.Fatalf("a 128 MiB dictionary with a 128 MiB limit: %v", err)
	}
	// A later block is checked as well as the first.
	small := xzTool(t, data, "--lzma2=preset=6,dict=1MiB")
	big := withDict(t, small, 39)
	cat := append(append([]byte{}, small...), big...)
	if _, err := decode(cat, DefaultMaxDict); !errors.Is(err, ErrDictTooLarge) {
		t.Fatalf("a 3 GiB dictionary in the second stream: %v, want ErrDictTooLarge", err)
	}
}

// allocated is what decoding file through the guard allocates (TotalAlloc), and its error.
func allocated(file []byte, c Config) (uint64, error) {
	var before, after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	r, err := c.NewReader(bytes.NewReader(file))
	if err == nil {
		_, err = io.Copy(io.Discard, r)
	}
	runtime.ReadMemStats(&after)
	return after.TotalAlloc - before.TotalAlloc, err
}

// Blocks of 16 bytes that each declare a 128 MiB dictionary made the decoder allocate (and
// clear) 128 MiB per block: 6,250 blocks, 800 GB. Without sizes in the block headers (xz -T1)
// the second such block is refused; with them (xz -T2) each dictionary shrinks to 4 KiB and the
// stream is refused after about a thousand blocks. Either way it costs the decoder little more
// than one dictionary.
func TestTinyBlocksRefused(t *testing.T) {
	data := sample(100000)
	for _, threads := range []string{"-T1", "-T2"} {
		// Made with a 4 KiB dictionary (xz allocates a 128 MiB one per block too, slowly), then
		// declaring 128 MiB.
		file := withDicts(t, xzTool(t, data, threads, "--block-size=16", "--lzma2=preset=0,dict=4KiB"), 30)
		grew, err := allocated(file, Config{MaxDict: 128 << 20})
		if !errors.Is(err, ErrTooCostly) {
			t.Errorf("%s: 16-byte blocks with 128 MiB dictionaries: %v, want ErrTooCostly", threads, err)
		}
		if grew > 128<<20+Allowance+8<<20 {
			t.Errorf("%s: refusing it allocated %d MiB", threads, grew>>20)
		}
		t.Logf("%s (%d bytes): %d MiB allocated, %v", threads, len(file), grew>>20, err)
	}
}

// A block whose header declares its uncompressed size gets a dictionary of that size: xz -T2
// with 100 KiB blocks and a 64 MiB dictionary decodes with 128 KiB dictionaries.
func TestDictionaryShrunkToBlock(t *testing.T) {
	data := sample(1 << 20)
	file := xzTool(t, data, "-T2", "--block-size=100KiB", "--lzma2=preset=6,dict=64MiB")
	var needs []int64
	c := Config{MaxDict: DefaultMaxDict, Need: func(n int64) error { needs = append(needs, n); return nil }}
	grew, err := allocated(file, c)
	if err != nil {
		t.Fatalf("decode: %v", err)
	}
	if grew > 16<<20 {
		t.Errorf("eleven 100 KiB blocks allocated %d MiB", grew>>20)
	}
	if len(needs) != 1 || needs[0] != 128<<10+Overhead {
		t.Errorf("Need was told %v, want once %d (a 128 KiB dictionary and Overhead)", needs, 128<<10+Overhead)
	}
	got, err := decode(file, DefaultMaxDict)
	if err != nil || !bytes.Equal(got, data) {
		t.Errorf("decoded %d bytes, %v; want the input", len(got), err)
	}
}

// Need is told before the first dictionary is allocated, and its error refuses the stream.
func TestNeedRefuses(t *testing.T) {
	file := xzTool(t, sample(1000), "--lzma2=preset=6,dict=32MiB")
	refusal := errors.New("no memory left")
	var told int64
	grew, err := allocated(file, Config{MaxDict: DefaultMaxDict, Need: func(n int64) error { told = n; return refusal }})
	if !errors.Is(err, refusal) || told != 32<<20+Overhead {
		t.Fatalf("Need told %d, decode: %v; want %d and its refusal", told, err, 32<<20+Overhead)
	}
	if grew > 4<<20 {
		t.Errorf("refusing allocated %d MiB", grew>>20)
	}
}

// LZMA2 allows lc + lp ≤ 4; the decoder takes lc=8, lp=4, whose tables are 6 MiB per chunk.
func TestLcLpRefused(t *testing.T) {
	file := xzTool(t, sample(1000), "--check=none")
	f := append([]byte{}, file...)
	h := f[12:]
	chunk := h[(int(h[0])+1)*4:]
	if chunk[0] < 0xe0 {
		t.Fatalf("first chunk control 0x%02x, want a dictionary and properties reset", chunk[0])
	}
	chunk[5] = byte((2*5+4)*9 + 8) // pb 2, lp 4, lc 8
	if _, err := decode(f, DefaultMaxDict); err == nil || !bytes.Contains([]byte(err.Error()), []byte("lc 8 + lp 4")) {
		t.Fatalf("lc 8, lp 4: %v, want a refusal naming them", err)
	}
}

// The guard's charges cover what github.com/ulikunitz/xz allocates per block and per stream,
// beside a little per decoded byte (its reads); a new version of it may need new figures.
func TestChargesCoverAllocations(t *testing.T) {
	data := sample(1 << 20)
	huge := Config{MaxDict: DefaultMaxDict}
	one, err := allocated(xzTool(t, data, "--lzma2=preset=0,dict=4KiB"), huge)
	if err != nil {
		t.Fatal(err)
	}
	blocks := int64(len(data)+999) / 1000
	many, err := allocated(xzTool(t, data, "-T2", "--block-size=1000", "--lzma2=preset=0,dict=4KiB"), huge)
	if err != nil {
		t.Fatal(err)
	}
	perBlock := (int64(many) - int64(one)) / (blocks - 1)
	if perBlock > 4<<10+blockCost+stateCost {
		t.Errorf("a block of 1000 bytes allocates %d bytes, charged %d", perBlock, 4<<10+blockCost+stateCost)
	}
	var streams []byte
	for range 1000 {
		streams = append(streams, xzTool(t, nil)...)
	}
	all, err := allocated(streams, huge)
	if err != nil {
		t.Fatal(err)
	}
	if perStream := int64(all) / 1000; perStream > streamCost {
		t.Errorf("an empty stream allocates %d bytes, charged %d", perStream, streamCost)
	}
	if perByte := float64(one) / float64(len(data)); perByte > 4 {
		t.Errorf("decoding allocates %.1f bytes per byte", perByte)
	}
	t.Logf("per block %d, per stream %d, per byte %.1f", perBlock, int64(all)/1000, float64(one)/float64(len(data)))
}

func TestMalformedRefused(t *testing.T) {
	file := xzTool(t, sample(100000))
	// The footer's backward size gives the index's: cutting both leaves whole blocks, which the
	// decoder alone takes for a complete stream.
	footer := file[len(file)-12:]
	indexSize := (int(footer[4]) | int(footer[5])<<8 | int(footer[6])<<16 | int(footer[7])<<24 + 1) * 4
	for name, f := range map[string][]byte{
		"not xz":              []byte("definitely not an xz stream"),
		"truncated":           file[:len(file)/2],
		"bad control":         append(append([]byte{}, file[:24]...), 0x42, 0x00),
		"empty":               nil,
		"no index and footer": file[:len(file)-12-indexSize],
		"no footer":           file[:len(file)-12],
		"half a footer":       file[:len(file)-6],
	} {
		if _, err := decode(f, DefaultMaxDict); err == nil {
			t.Errorf("%s: decoded without an error", name)
		}
	}
}

// The guard never panics, never lets through a stream whose decoding allocates more than the
// limits allow (one dictionary, Allowance and PerByte per decoded byte, with room for the
// decoder's buffers), and tells Need ever larger needs within the dictionary limit.
func FuzzNewReader(f *testing.F) {
	var buf bytes.Buffer
	w, _ := xz.WriterConfig{BlockSize: 4096}.NewWriter(&buf)
	w.Write(sample(20000))
	w.Close()
	f.Add(buf.Bytes())
	f.Add([]byte{0xfd, '7', 'z', 'X', 'Z', 0, 0, 1, 0x69, 0x22, 0xde, 0x36})
	f.Fuzz(func(t *testing.T, file []byte) {
		const limit, out = 1 << 20, 1 << 20
		var told int64
		need := func(n int64) error {
			if n <= told || n > limit+Overhead {
				t.Fatalf("Need told %d after %d (limit %d + Overhead)", n, told, limit)
			}
			told = n
			return nil
		}
		var before, after runtime.MemStats
		runtime.ReadMemStats(&before)
		r, err := Config{MaxDict: limit, Need: need}.NewReader(bytes.NewReader(file))
		if err == nil {
			io.Copy(io.Discard, io.LimitReader(r, out))
		}
		runtime.ReadMemStats(&after)
		if grew := after.TotalAlloc - before.TotalAlloc; grew > limit+Allowance+PerByte*out+8<<20 {
			t.Fatalf("decoding %d bytes allocated %d MiB with a 1 MiB dictionary limit", len(file), grew>>20)
		}
	})
}

// The guard's cost beside the decoder's: go test -bench . ./internal/xzlimit
func BenchmarkDecode(b *testing.B) {
	data := sample(4 << 20)
	var buf bytes.Buffer
	w, _ := xz.NewWriter(&buf)
	w.Write(data)
	w.Close()
	file := buf.Bytes()
	for _, guarded := range []bool{false, true} {
		name := "ulikunitz"
		if guarded {
			name = "guarded"
		}
		b.Run(name, func(b *testing.B) {
			b.SetBytes(int64(len(data)))
			for b.Loop() {
				var r io.Reader
				var err error
				if guarded {
					r, err = NewReader(bytes.NewReader(file), DefaultMaxDict)
				} else {
					r, err = xz.NewReader(bytes.NewReader(file))
				}
				if err != nil {
					b.Fatal(err)
				}
				if n, err := io.Copy(io.Discard, r); err != nil || n != int64(len(data)) {
					b.Fatal(n, err)
				}
			}
		})
	}
}
