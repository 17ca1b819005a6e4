package narinfo

import (
	"bytes"
	"strings"
	"testing"
)

func FuzzParse(f *testing.F) {
	for _, dir := range []string{upstreamDir, nixDir} {
		for _, data := range fixtures(f, dir) {
			f.Add(data)
			f.Add(bytes.ReplaceAll(data, []byte("\n"), []byte("\r\n")))
			f.Add(append(bytes.Clone(data), "Unknown: x\nReferences: \n"...))
		}
	}
	f.Add([]byte(minimal))
	f.Add([]byte(minimal + "References: \nDeriver: unknown-deriver\nCA: \nCompression: \n"))
	f.Add([]byte(minimal + validSig + validSig + "References: " + validRef + " " + validRef + "\n"))
	f.Add([]byte(strings.Replace(minimal, "sha256:1mi14cqk363wv368ffiiy01knardmnlyphi6h9xv6dkjz44hk30i",
		"sha256-NnMBTnK2c4O+MCSFaUVVpXrTk6/euu1t7REKd1vQVW0=", 1)))

	f.Fuzz(func(t *testing.T, data []byte) {
		ni, err := Parse(data)
		if err != nil {
			return
		}
		_ = ni.Fingerprint()
		_ = ni.HashPart()
		out := ni.Bytes()
		ni2, err := Parse(out)
		if err != nil {
			t.Fatalf("Parse(Bytes()) failed: %v\ninput: %q\nBytes: %q", err, data, out)
		}
		if out2 := ni2.Bytes(); !bytes.Equal(out, out2) {
			t.Fatalf("Bytes is not a fixed point:\nfirst:  %q\nsecond: %q", out, out2)
		}
		if ni.Fingerprint() != ni2.Fingerprint() {
			t.Fatalf("Fingerprint changed across Bytes/Parse: %q vs %q", ni.Fingerprint(), ni2.Fingerprint())
		}
		if ni.HashPart() == "" {
			t.Fatalf("parsed narinfo has no hash part: %q", ni.StorePath)
		}
	})
}

func FuzzParseHash(f *testing.F) {
	for _, v := range nixHashVectors {
		for _, form := range v.forms {
			f.Add(form)
		}
	}
	f.Add("sha256:")
	f.Add("sha256-")
	f.Add("sha256:z" + strings.Repeat("0", 51))
	f.Fuzz(func(t *testing.T, s string) {
		h, err := ParseHash(s)
		if err != nil {
			if len(err.Error()) > 300 {
				t.Fatalf("error is %d bytes long", len(err.Error()))
			}
			return
		}
		if len(h.Digest) != digestSize(h.Algo) {
			t.Fatalf("ParseHash(%q) gave a %d-byte %s digest", s, len(h.Digest), h.Algo)
		}
		// The canonical form must parse back to the same hash.
		h2, err := ParseHash(h.String())
		if err != nil || !h2.Equal(h) {
			t.Fatalf("ParseHash(%q).String() = %q does not round-trip: %v", s, h.String(), err)
		}
	})
}
