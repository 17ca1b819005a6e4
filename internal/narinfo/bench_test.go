package narinfo

import (
	"os"
	"path/filepath"
	"testing"
)

func benchData(b *testing.B) []byte {
	data, err := os.ReadFile(filepath.Join(upstreamDir, "syd87l2rxw8cbsxmxl853h0r6pdwhwjr.narinfo"))
	if err != nil {
		b.Fatal(err)
	}
	return data
}

func BenchmarkParse(b *testing.B) {
	data := benchData(b)
	b.SetBytes(int64(len(data)))
	b.ReportAllocs()
	for b.Loop() {
		if _, err := Parse(data); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkBytes(b *testing.B) {
	ni, err := Parse(benchData(b))
	if err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	for b.Loop() {
		_ = ni.Bytes()
	}
}

func BenchmarkFingerprint(b *testing.B) {
	ni, err := Parse(benchData(b))
	if err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	for b.Loop() {
		_ = ni.Fingerprint()
	}
}
