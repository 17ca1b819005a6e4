package nar

import (
	"bytes"
	"fmt"
	"io"
	"testing"
)

// pattern is an endless non-zero byte stream for big file contents.
type pattern struct{ i int }

var patternBlock = func() []byte {
	b := make([]byte, 64<<10)
	for i := range b {
		b[i] = byte(i*7 + 1)
	}
	return b
}()

func (p *pattern) Read(b []byte) (int, error) {
	n := copy(b, patternBlock[p.i:])
	p.i = (p.i + n) % len(patternBlock)
	return n, nil
}

func bigFileNAR(b *testing.B, size int64) []byte {
	var buf bytes.Buffer
	buf.Grow(int(size) + 1024)
	w := NewWriter(&buf)
	if err := w.File(false, size, &pattern{}); err != nil {
		b.Fatal(err)
	}
	if err := w.Close(); err != nil {
		b.Fatal(err)
	}
	return buf.Bytes()
}

// smallFilesNAR has n files of 0-1023 bytes spread over 100 directories,
// roughly the shape of a large package's store path.
func smallFilesNAR(b *testing.B, n int) []byte {
	var buf bytes.Buffer
	w := NewWriter(&buf)
	data := make([]byte, 1024)
	must := func(err error) {
		if err != nil {
			b.Fatal(err)
		}
	}
	must(w.StartDirectory())
	const dirs = 100
	for d := range dirs {
		must(w.Entry(fmt.Sprintf("dir%03d", d)))
		must(w.StartDirectory())
		for i := range n / dirs {
			must(w.Entry(fmt.Sprintf("file%05d.txt", i)))
			size := (d*131 + i*17) % len(data)
			must(w.File(i%7 == 0, int64(size), bytes.NewReader(data[:size])))
		}
		must(w.EndDirectory())
	}
	must(w.EndDirectory())
	must(w.Close())
	return buf.Bytes()
}

func BenchmarkWalk(b *testing.B) {
	for _, bc := range []struct {
		name string
		nar  func(*testing.B) []byte
	}{
		{"64MiB-file", func(b *testing.B) []byte { return bigFileNAR(b, 64<<20) }},
		{"10000-files", func(b *testing.B) []byte { return smallFilesNAR(b, 10000) }},
	} {
		nar := bc.nar(b)
		b.Run(bc.name+"/Check", func(b *testing.B) {
			b.SetBytes(int64(len(nar)))
			b.ReportAllocs()
			for b.Loop() {
				if _, err := Check(bytes.NewReader(nar)); err != nil {
					b.Fatal(err)
				}
			}
		})
		b.Run(bc.name+"/Walk", func(b *testing.B) {
			b.SetBytes(int64(len(nar)))
			b.ReportAllocs()
			for b.Loop() {
				if _, err := Walk(bytes.NewReader(nar), func(Entry) error { return nil }); err != nil {
					b.Fatal(err)
				}
			}
		})
		b.Run(bc.name+"/Listing", func(b *testing.B) {
			b.SetBytes(int64(len(nar)))
			b.ReportAllocs()
			for b.Loop() {
				if _, err := Listing(bytes.NewReader(nar)); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

func BenchmarkWriter(b *testing.B) {
	const size = 64 << 20
	b.SetBytes(size)
	b.ReportAllocs()
	for b.Loop() {
		w := NewWriter(io.Discard)
		if err := w.File(false, size, io.LimitReader(&pattern{}, size)); err != nil {
			b.Fatal(err)
		}
		if err := w.Close(); err != nil {
			b.Fatal(err)
		}
	}
}
