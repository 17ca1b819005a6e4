package cache

import (
	"bufio"
	"compress/bzip2"
	"compress/gzip"
	"encoding/binary"
	"fmt"
	"io"

	"github.com/andybalholm/brotli"
	"github.com/cached-dev/cached/internal/xzlimit"
	"github.com/klauspost/compress/zstd"
)

// MaxNarWindow is the largest xz dictionary or zstd window a NAR upload may declare: xz -9 (the
// most Nix uses) needs 64 MiB, zstd --long=27 128 MiB.
const MaxNarWindow = 128 << 20

// What decoders take besides the dictionary or window their stream declares, measured with the
// libraries in go.mod and rounded up.
const (
	decoderOverhead = 1 << 20   // zstd and brotli: tables and block buffers
	bzip2Need       = 5 << 20   // compress/bzip2: 900 KB blocks of uint32, and tables
	gzipNeed        = 256 << 10 // compress/flate: a 32 KiB window and tables
)

// NewDecoder returns a reader of the decompressed bytes of r, which is compressed as compression
// says: "none", "xz", "zstd", "bzip2", "br" or "gzip". A stream declaring an xz dictionary or a
// zstd window larger than maxWindow is refused when the decoder reads that declaration, as are
// xz streams whose blocks would make the decoder allocate far more than they decode
// (xzlimit). need, when not nil, is told before the decoder allocates what the stream declares
// it needs at once (its dictionary or window and the decoder's own tables), and again, with
// the larger total, if a later part of the stream declares more; an error from need refuses
// the stream there (a memory budget shared by concurrent uploads, package membudget).
func NewDecoder(compression string, r io.Reader, maxWindow int64, need func(int64) error) (io.ReadCloser, error) {
	if need == nil {
		need = func(int64) error { return nil }
	}
	switch compression {
	case "none":
		return io.NopCloser(r), nil
	case "xz":
		xr, err := xzlimit.Config{MaxDict: maxWindow, Need: need}.NewReader(r)
		if err != nil {
			return nil, fmt.Errorf("xz: %w", err)
		}
		return io.NopCloser(xr), nil
	case "zstd":
		br := peeker(r)
		window, err := zstdWindow(br, maxWindow)
		if err != nil {
			return nil, fmt.Errorf("zstd: %w", err)
		}
		if err := need(window + decoderOverhead); err != nil {
			return nil, err
		}
		// Later frames may declare no larger a window than the first: what was reserved.
		zr, err := zstd.NewReader(br, zstd.WithDecoderConcurrency(1), zstd.WithDecoderLowmem(true), zstd.WithDecoderMaxWindow(uint64(window)))
		if err != nil {
			return nil, fmt.Errorf("zstd: %w", err)
		}
		return zr.IOReadCloser(), nil
	case "br":
		br := peeker(r)
		if err := need(brotliWindow(br) + decoderOverhead); err != nil {
			return nil, err
		}
		return io.NopCloser(brotli.NewReader(br)), nil
	case "bzip2":
		if err := need(bzip2Need); err != nil {
			return nil, err
		}
		return io.NopCloser(bzip2.NewReader(r)), nil
	case "gzip":
		if err := need(gzipNeed); err != nil {
			return nil, err
		}
		gr, err := gzip.NewReader(r)
		if err != nil {
			return nil, fmt.Errorf("gzip: %w", err)
		}
		return gr, nil
	}
	return nil, fmt.Errorf("unsupported compression %q", compression)
}

func peeker(r io.Reader) *bufio.Reader {
	if br, ok := r.(*bufio.Reader); ok {
		return br
	}
	return bufio.NewReaderSize(r, 64<<10)
}

// zstdWindow is the window the first frame of a zstd stream declares (its content size for a
// single-segment frame), at least zstd's 1 KiB minimum; a larger one than maxWindow is refused.
// A stream that does not start with a regular frame header gets maxWindow: the decoder says
// what is wrong with it, and the window of any frame it finds is held to that.
func zstdWindow(br *bufio.Reader, maxWindow int64) (int64, error) {
	h, _ := br.Peek(14) // magic, descriptor, window, dictionary id (≤4), content size (≤8)
	if len(h) < 6 || binary.LittleEndian.Uint32(h) != 0xfd2fb528 {
		return maxWindow, nil
	}
	fhd := h[4]
	var window uint64
	if fhd&0x20 == 0 { // a window descriptor
		wd := h[5]
		base := uint64(1) << (10 + wd>>3)
		window = base + base/8*uint64(wd&7)
	} else { // single segment: the window is the content size
		off := 5 + []int{0, 1, 2, 4}[fhd&3]
		size := []int{1, 2, 4, 8}[fhd>>6]
		if len(h) < off+size {
			return maxWindow, nil
		}
		var b [8]byte
		copy(b[:], h[off:off+size])
		window = binary.LittleEndian.Uint64(b[:])
		if size == 2 {
			window += 256
		}
	}
	window = max(window, 1<<10)
	if window > uint64(maxWindow) {
		return 0, fmt.Errorf("the stream declares a %d MiB window, at most %d MiB accepted", window>>20, maxWindow>>20)
	}
	return int64(window), nil
}

// brotliWindow is the window a brotli stream declares in its first bits (WBITS, RFC 7932
// 9.1): at most 16 MiB, which is also what a stream that does not say gets.
func brotliWindow(br *bufio.Reader) int64 {
	h, _ := br.Peek(1)
	if len(h) == 0 {
		return 16 << 20
	}
	b := h[0]
	switch {
	case b&1 == 0:
		return 1 << 16
	case b>>1&7 != 0:
		return 1 << (17 + b>>1&7)
	case b>>4&7 != 0:
		return 1 << (8 + b>>4&7)
	}
	return 1 << 17
}
