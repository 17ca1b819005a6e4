package xzlimit

import (
	"bytes"
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

// The guard never panics, and never lets through a stream whose decoding allocates more than
// the limit allows (with room for the decoder's own buffers).
func FuzzNewReader(f *testing.F) {
	var buf bytes.Buffer
	w, _ := xz.WriterConfig{BlockSize: 4096}.NewWriter(&buf)
	w.Write(sample(20000))
	w.Close()
	f.Add(buf.Bytes())
	f.Add([]byte{0xfd, '7', 'z', 'X', 'Z', 0, 0, 1, 0x69, 0x22, 0xde, 0x36})
	f.Fuzz(func(t *testing.T, file []byte) {
		const limit = 1 << 20
		var before, after runtime.MemStats
		runtime.ReadMemStats(&before)
		r, err := NewReader(bytes.NewReader(file), limit)
		if err == nil {
			io.Copy(io.Discard, io.LimitReader(r, 1<<20))
		}
		runtime.ReadMemStats(&after)
		if grew := after.TotalAlloc - before.TotalAlloc; grew > 64<<20 {
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
