package narinfo

import (
	"bytes"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

// upstreamDir holds narinfos served by cache.nixos.org (copied from shared/testdata); nixDir holds narinfos Nix 2.8 wrote
// (see testdata/nix-2.8/README.md). Neither was written by this package.
const (
	upstreamDir = "testdata/cache.nixos.org"
	nixDir      = "testdata/nix-2.8"
)

// fixtures returns the contents of every *.narinfo in dir, failing if there are none so that
// a moved directory cannot make the tests pass vacuously.
func fixtures(t testing.TB, dir string) map[string][]byte {
	t.Helper()
	paths, err := filepath.Glob(filepath.Join(dir, "*.narinfo"))
	if err != nil || len(paths) == 0 {
		t.Fatalf("no narinfo fixtures in %s (err %v)", dir, err)
	}
	out := make(map[string][]byte, len(paths))
	for _, p := range paths {
		data, err := os.ReadFile(p)
		if err != nil {
			t.Fatal(err)
		}
		out[filepath.Base(p)] = data
	}
	return out
}

func TestFixturesRoundTrip(t *testing.T) {
	for _, dir := range []string{upstreamDir, nixDir} {
		for name, data := range fixtures(t, dir) {
			t.Run(name, func(t *testing.T) {
				ni, err := Parse(data)
				if err != nil {
					t.Fatal(err)
				}
				if got := ni.Bytes(); !bytes.Equal(got, data) {
					t.Errorf("Bytes() differs from the file\n got: %q\nwant: %q", got, data)
				}
				if want := strings.TrimSuffix(name, ".narinfo"); ni.HashPart() != want {
					t.Errorf("HashPart() = %q, want %q", ni.HashPart(), want)
				}
			})
		}
	}
}

func TestParseFields(t *testing.T) {
	data, err := os.ReadFile(filepath.Join(upstreamDir, "syd87l2rxw8cbsxmxl853h0r6pdwhwjr.narinfo"))
	if err != nil {
		t.Fatal(err)
	}
	ni, err := Parse(data)
	if err != nil {
		t.Fatal(err)
	}
	want := &NarInfo{
		StorePath:   "/nix/store/syd87l2rxw8cbsxmxl853h0r6pdwhwjr-curl-7.82.0-bin",
		URL:         "nar/05ra3y72i3qjri7xskf9qj8kb29r6naqy1sqpbs3azi3xcigmj56.nar.xz",
		Compression: "xz",
		FileSize:    68852,
		NarSize:     196040,
		References: []string{
			"0jqd0rlxzra1rs38rdxl43yh6rxchgc6-curl-7.82.0",
			"6w8g7njm4mck5dmjxws0z1xnrxvl81xa-glibc-2.34-115",
			"j5jxw3iy7bbz4a57fh9g2xm2gxmyal8h-zlib-1.2.12",
			"yxvjs9drzsphm9pcf42a4byzj1kb9m7k-openssl-1.1.1n",
		},
		Deriver: "5rwxzi7pal3qhpsyfc16gzkh939q1np6-curl-7.82.0.drv",
		Sigs:    []string{"cache.nixos.org-1:TsTTb3WGTZKphvYdBHXwo6weVILmTytUjLB+vcX89fOjjRicCHmKA4RCPMVLkj6TMJ4GMX3HPVWRdD1hkeKZBQ=="},
	}
	want.FileHash, _ = ParseHash("sha256:05ra3y72i3qjri7xskf9qj8kb29r6naqy1sqpbs3azi3xcigmj56")
	want.NarHash, _ = ParseHash("sha256:1b4sb93wp679q4zx9k1ignby1yna3z7c4c2ri3wphylbc2dwsys0")
	if !equalNarInfo(ni, want) {
		t.Errorf("Parse:\n got %+v\nwant %+v", ni, want)
	}
	const fp = "1;/nix/store/syd87l2rxw8cbsxmxl853h0r6pdwhwjr-curl-7.82.0-bin;" +
		"sha256:1b4sb93wp679q4zx9k1ignby1yna3z7c4c2ri3wphylbc2dwsys0;196040;" +
		"/nix/store/0jqd0rlxzra1rs38rdxl43yh6rxchgc6-curl-7.82.0," +
		"/nix/store/6w8g7njm4mck5dmjxws0z1xnrxvl81xa-glibc-2.34-115," +
		"/nix/store/j5jxw3iy7bbz4a57fh9g2xm2gxmyal8h-zlib-1.2.12," +
		"/nix/store/yxvjs9drzsphm9pcf42a4byzj1kb9m7k-openssl-1.1.1n"
	if got := ni.Fingerprint(); got != fp {
		t.Errorf("Fingerprint:\n got %q\nwant %q", got, fp)
	}
}

func equalNarInfo(a, b *NarInfo) bool {
	return a.StorePath == b.StorePath && a.URL == b.URL && a.Compression == b.Compression &&
		a.FileHash.Equal(b.FileHash) && a.FileSize == b.FileSize &&
		a.NarHash.Equal(b.NarHash) && a.NarSize == b.NarSize &&
		slices.Equal(a.References, b.References) && a.Deriver == b.Deriver &&
		a.System == b.System && slices.Equal(a.Sigs, b.Sigs) && a.CA == b.CA
}

// minimal is the smallest narinfo Parse accepts; the tables below vary it one line at a time.
const minimal = "StorePath: /nix/store/w9yy7v61ipb5rx6i35zq1mvc2iqfmps1-hello-2.10\n" +
	"URL: nar/15zk4zszw9lgkdkkwy7w11m5vag11n5dhv2i6hj308qpxczvdddx.nar.xz\n" +
	"NarHash: sha256:1mi14cqk363wv368ffiiy01knardmnlyphi6h9xv6dkjz44hk30i\n" +
	"NarSize: 205968\n"

const (
	validSig = "Sig: cache.nixos.org-1:uP5KU8MCmyRnKGlN5oEv6xWJBI5EO/Pf5aFztZuLSz8BpCcZ1fdBnJkVXhBAlxkdm/CemsgQskhwvyd2yghTAg==\n"
	validRef = "9df65igwjmf2wbw0gbrrgair6piqjgmi-glibc-2.31"
)

func TestParseAccepts(t *testing.T) {
	for _, tc := range []struct {
		name, in string
		check    func(*NarInfo) bool
	}{
		{"minimal", minimal, func(ni *NarInfo) bool {
			return ni.Compression == "" && ni.FileHash.IsZero() && ni.References == nil
		}},
		{"unknown key", minimal + "Foo: bar\nX-Future: 1\nX-Future: 2\n", nil},
		{"unknown key with empty value", minimal + "Foo: \n", nil},
		{"empty References", minimal + "References: \n", func(ni *NarInfo) bool { return len(ni.References) == 0 }},
		{"References with extra spaces", minimal + "References:  " + validRef + "  " + validRef + " \n",
			func(ni *NarInfo) bool { return len(ni.References) == 2 }},
		{"unknown-deriver", minimal + "Deriver: unknown-deriver\n", func(ni *NarInfo) bool { return ni.Deriver == "" }},
		{"several Sigs", minimal + validSig + strings.Replace(validSig, "cache.nixos.org-1", "other-1", 1),
			func(ni *NarInfo) bool { return len(ni.Sigs) == 2 }},
		{"keys in any order", "NarSize: 1\n" + strings.Replace(minimal, "NarSize: 205968\n", "", 1),
			func(ni *NarInfo) bool { return ni.NarSize == 1 }},
		{"base16 NarHash", strings.Replace(minimal, "sha256:1mi14cqk363wv368ffiiy01knardmnlyphi6h9xv6dkjz44hk30i",
			"sha256:3673014e72b67383be302485694555a57ad393afdebaed6ded110a775bd0556d", 1), nil},
		{"SRI NarHash", strings.Replace(minimal, "sha256:1mi14cqk363wv368ffiiy01knardmnlyphi6h9xv6dkjz44hk30i",
			"sha256-NnMBTnK2c4O+MCSFaUVVpXrTk6/euu1t7REKd1vQVW0=", 1), nil},
		{"CA fixed", minimal + "CA: fixed:r:sha256:0gqhj2vb2nr7idmy28anl0r4708hzchdm8438s4ph5pmjb0zpq4n\n", nil},
		{"CA fixed flat sha1", minimal + "CA: fixed:sha1:vxzmapf64bl04kvvgf4wzz233qy734qc\n", nil},
		{"CA text", minimal + "CA: text:sha256:0gqhj2vb2nr7idmy28anl0r4708hzchdm8438s4ph5pmjb0zpq4n\n", nil},
		{"empty CA", minimal + "CA: \n", func(ni *NarInfo) bool { return ni.CA == "" }},
		{"value with colons", minimal + "System: a: b: c\n", func(ni *NarInfo) bool { return ni.System == "a: b: c" }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ni, err := Parse([]byte(tc.in))
			if err != nil {
				t.Fatal(err)
			}
			if tc.check != nil && !tc.check(ni) {
				t.Errorf("unexpected result %+v", ni)
			}
		})
	}
}

func TestParseRejects(t *testing.T) {
	replace := func(old, new string) string {
		if !strings.Contains(minimal, old) {
			panic(old)
		}
		return strings.Replace(minimal, old, new, 1)
	}
	const sp = "StorePath: /nix/store/w9yy7v61ipb5rx6i35zq1mvc2iqfmps1-hello-2.10"
	for _, tc := range []struct {
		name, in string
		errHas   string // the error must name the field or line
	}{
		{"empty", "", "StorePath missing"},
		{"CRLF", strings.ReplaceAll(minimal, "\n", "\r\n"), "carriage return"},
		{"CR in value", replace("hello-2.10\n", "hello-2.10\r\n"), "carriage return"},
		{"no final newline", strings.TrimSuffix(minimal, "\n"), "newline"},
		{"blank line", minimal + "\n", "line 5"},
		{"garbage line", minimal + "garbage\n", "garbage"},
		{"no space after colon", replace("NarSize: ", "NarSize:"), "NarSize:205968"},
		{"tab after colon", replace("NarSize: ", "NarSize:\t"), "line 4"},
		{"colon only", minimal + "Foo:\n", "Foo:"},
		{"empty key", minimal + ": x\n", "line 5"},
		{"missing StorePath", replace(sp+"\n", ""), "StorePath missing"},
		{"missing URL", replace("URL: nar/15zk4zszw9lgkdkkwy7w11m5vag11n5dhv2i6hj308qpxczvdddx.nar.xz\n", ""), "URL missing"},
		{"empty URL", replace("URL: nar/15zk4zszw9lgkdkkwy7w11m5vag11n5dhv2i6hj308qpxczvdddx.nar.xz\n", "URL: \n"), "URL missing"},
		{"missing NarHash", replace("NarHash: sha256:1mi14cqk363wv368ffiiy01knardmnlyphi6h9xv6dkjz44hk30i\n", ""), "NarHash missing"},
		{"missing NarSize", replace("NarSize: 205968\n", ""), "NarSize missing"},
		{"NarSize 0", replace("NarSize: 205968", "NarSize: 0"), "NarSize missing or zero"},
		{"NarSize negative", replace("NarSize: 205968", "NarSize: -1"), `NarSize: invalid size "-1"`},
		{"NarSize hex", replace("NarSize: 205968", "NarSize: 0x10"), "NarSize"},
		{"NarSize overflow", replace("NarSize: 205968", "NarSize: 18446744073709551616"), "NarSize"},
		{"NarSize with space", replace("NarSize: 205968", "NarSize: 205968 "), "NarSize"},
		{"FileSize garbage", minimal + "FileSize: 12k\n", `FileSize: invalid size "12k"`},
		{"bad NarHash", replace("sha256:1mi14cqk363wv368ffiiy01knardmnlyphi6h9xv6dkjz44hk30i", "sha256:xyz"),
			`narinfo: NarHash: invalid hash "sha256:xyz"`},
		{"NarHash with e", replace("sha256:1mi14cqk363wv368ffiiy01knardmnlyphi6h9xv6dkjz44hk30i",
			"sha256:1mi14cqk363wv368ffiiy01knardmnlyphi6h9xv6dkjz44hk30e"), "NarHash"},
		{"NarHash sha1", replace("sha256:1mi14cqk363wv368ffiiy01knardmnlyphi6h9xv6dkjz44hk30i",
			"sha1:vxzmapf64bl04kvvgf4wzz233qy734qc"), "NarHash"},
		{"NarHash no algo", replace("sha256:1mi14cqk363wv368ffiiy01knardmnlyphi6h9xv6dkjz44hk30i",
			"1mi14cqk363wv368ffiiy01knardmnlyphi6h9xv6dkjz44hk30i"), "NarHash"},
		{"bad FileHash", minimal + "FileHash: md5:xx\n", "FileHash"},
		{"duplicate References", minimal + "References: \nReferences: " + validRef + "\n", "duplicate References"},
		{"duplicate CA", minimal + "CA: fixed:r:sha256:0gqhj2vb2nr7idmy28anl0r4708hzchdm8438s4ph5pmjb0zpq4n\n" +
			"CA: fixed:r:sha256:0gqhj2vb2nr7idmy28anl0r4708hzchdm8438s4ph5pmjb0zpq4n\n", "duplicate CA"},
		{"duplicate StorePath", minimal + sp + "\n", "duplicate StorePath"},
		{"duplicate NarSize", minimal + "NarSize: 205968\n", "duplicate NarSize"},
		{"duplicate URL", minimal + "URL: nar/x.nar\n", "duplicate URL"},
		{"StorePath hash with e", replace("w9yy7v61ipb5rx6i35zq1mvc2iqfmps1-hello", "e9yy7v61ipb5rx6i35zq1mvc2iqfmps1-hello"), "StorePath"},
		{"StorePath hash too short", replace("w9yy7v61ipb5rx6i35zq1mvc2iqfmps1-hello", "w9yy7v61ipb5rx6i35zq1mvc2iqfmps-hello"), "StorePath"},
		{"StorePath name starts with dot", replace("-hello-2.10", "-.hello-2.10"), "StorePath"},
		{"StorePath name with slash", replace("-hello-2.10", "-hello/2.10"), "StorePath"},
		{"StorePath other store", replace("/nix/store/", "/gnu/store/"), "StorePath"},
		{"StorePath relative", replace("/nix/store/", ""), "StorePath"},
		{"StorePath with trailing slash", replace("hello-2.10", "hello-2.10/"), "StorePath"},
		{"bad reference", minimal + "References: " + validRef + " /nix/store/" + validRef + "\n", "References"},
		{"reference with e", minimal + "References: e" + validRef[1:] + "\n", "References"},
		{"bad Deriver", minimal + "Deriver: foo.drv\n", "Deriver"},
		{"Sig without name", minimal + "Sig: uP5KU8MCmyRnKGlN5oEv6xWJBI5EO/Pf5aFztZuLSz8BpCcZ1fdBnJkVXhBAlxkdm/CemsgQskhwvyd2yghTAg==\n", "Sig"},
		{"Sig empty name", minimal + "Sig: :uP5KU8MCmyRnKGlN5oEv6xWJBI5EO/Pf5aFztZuLSz8BpCcZ1fdBnJkVXhBAlxkdm/CemsgQskhwvyd2yghTAg==\n", "Sig"},
		{"Sig bad base64", minimal + "Sig: k:not base64!\n", "Sig"},
		{"Sig wrong length", minimal + "Sig: k:AAAA\n", "Sig"},
		{"Sig empty", minimal + "Sig: \n", "Sig"},
		{"CA garbage", minimal + "CA: sha256:0gqhj2vb2nr7idmy28anl0r4708hzchdm8438s4ph5pmjb0zpq4n\n", "CA"},
		{"CA bad hash", minimal + "CA: fixed:r:sha256:xyz\n", "CA"},
		{"CA text sha1", minimal + "CA: text:sha1:vxzmapf64bl04kvvgf4wzz233qy734qc\n", "CA"},
		{"CA SRI", minimal + "CA: fixed:r:sha256-NnMBTnK2c4O+MCSFaUVVpXrTk6/euu1t7REKd1vQVW0=\n", "CA"},
		{"too large", minimal + "X: " + strings.Repeat("a", MaxSize) + "\n", "larger than"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ni, err := Parse([]byte(tc.in))
			if err == nil {
				t.Fatalf("Parse succeeded: %+v", ni)
			}
			if !strings.Contains(err.Error(), tc.errHas) {
				t.Errorf("error %q does not contain %q", err, tc.errHas)
			}
			if !strings.HasPrefix(err.Error(), "narinfo: ") {
				t.Errorf("error %q lacks the narinfo: prefix", err)
			}
			if len(err.Error()) > 400 {
				t.Errorf("error is %d bytes long; offending values must be truncated", len(err.Error()))
			}
		})
	}
}

// Nix keeps References and Sigs in sets, so it writes and signs them sorted and deduplicated;
// Bytes and Fingerprint must too, whatever order a writer used.
func TestBytesCanonicalizes(t *testing.T) {
	const (
		a = "0jqd0rlxzra1rs38rdxl43yh6rxchgc6-curl-7.82.0"
		b = "6w8g7njm4mck5dmjxws0z1xnrxvl81xa-glibc-2.34-115"
	)
	ni, err := Parse([]byte(minimal + "References: " + b + " " + a + " " + b + "\n" +
		strings.Replace(validSig, "cache.nixos.org-1", "z-1", 1) + validSig + validSig))
	if err != nil {
		t.Fatal(err)
	}
	if want := []string{b, a, b}; !slices.Equal(ni.References, want) {
		t.Errorf("Parse reordered References: %q", ni.References)
	}
	out := string(ni.Bytes())
	if !strings.Contains(out, "References: "+a+" "+b+"\n") {
		t.Errorf("References not sorted and deduplicated:\n%s", out)
	}
	if strings.Count(out, "Sig: ") != 2 || strings.Index(out, "Sig: cache") > strings.Index(out, "Sig: z-1") {
		t.Errorf("Sigs not sorted and deduplicated:\n%s", out)
	}
	if want := []string{b, a, b}; !slices.Equal(ni.References, want) {
		t.Errorf("Bytes modified References: %q", ni.References)
	}
	fp := ni.Fingerprint()
	if !strings.HasSuffix(fp, ";/nix/store/"+a+",/nix/store/"+b) {
		t.Errorf("Fingerprint references not sorted and deduplicated: %q", fp)
	}
}

// The line order and the empty References line are what Nix 2.8's file:// store wrote (see
// testdata/nix-2.8); this pins them for a NarInfo built in code, with every field set.
func TestBytesOrder(t *testing.T) {
	h, _ := ParseHash("sha256:0x1qh0iz5s8sds039vbydkrh4rmkhl60sv682lzpgnaxangp50mm")
	ni := &NarInfo{
		StorePath: "/nix/store/mgdx03r5b3rrkjb1bm9ibg0fskxjy3qz-cached-fixture-top", URL: "nar/x.nar.zst",
		Compression: "zstd", FileHash: h, FileSize: 10, NarHash: h, NarSize: 240,
		Deriver: "dsk0qqra75l0hsv7gslgcjhwshqyhl4f-cached-fixture-top.drv", System: "x86_64-linux",
		Sigs: []string{"k:" + strings.Repeat("A", 86) + "=="}, CA: "fixed:sha256:0x1qh0iz5s8sds039vbydkrh4rmkhl60sv682lzpgnaxangp50mm",
	}
	want := "StorePath: /nix/store/mgdx03r5b3rrkjb1bm9ibg0fskxjy3qz-cached-fixture-top\n" +
		"URL: nar/x.nar.zst\n" +
		"Compression: zstd\n" +
		"FileHash: sha256:0x1qh0iz5s8sds039vbydkrh4rmkhl60sv682lzpgnaxangp50mm\n" +
		"FileSize: 10\n" +
		"NarHash: sha256:0x1qh0iz5s8sds039vbydkrh4rmkhl60sv682lzpgnaxangp50mm\n" +
		"NarSize: 240\n" +
		"References: \n" +
		"Deriver: dsk0qqra75l0hsv7gslgcjhwshqyhl4f-cached-fixture-top.drv\n" +
		"System: x86_64-linux\n" +
		"Sig: k:" + strings.Repeat("A", 86) + "==\n" +
		"CA: fixed:sha256:0x1qh0iz5s8sds039vbydkrh4rmkhl60sv682lzpgnaxangp50mm\n"
	if got := string(ni.Bytes()); got != want {
		t.Errorf("Bytes():\n%s\nwant:\n%s", got, want)
	}
	if _, err := Parse(ni.Bytes()); err != nil {
		t.Errorf("Parse(Bytes()): %v", err)
	}
}

func TestHashPartInvalid(t *testing.T) {
	if got := (&NarInfo{StorePath: "nonsense"}).HashPart(); got != "" {
		t.Errorf("HashPart() = %q", got)
	}
}
