package server_test

// Refused uploads: each must be a 4xx (never a 5xx, which makes nix retry a PUT it cannot
// rewind) whose body names the offending field, and must leave nothing visible.

import (
	"bytes"
	"encoding/base64"
	"encoding/binary"
	"fmt"
	"hash/crc32"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/cached-dev/cached/internal/cache"
	"github.com/cached-dev/cached/internal/narinfo"
	"github.com/nix-community/go-nix/pkg/nixbase32"
	"github.com/ulikunitz/xz"
)

// testMaxNar is the decompressed NAR size limit of the refusal tests (--max-nar-size).
const testMaxNar = 8 << 20

// refusal is one upload the server must refuse.
type refusal struct {
	name string
	// send performs the request (and any accepted uploads it needs first) and returns the answer
	// to the refused one, plus the paths that must stay absent afterwards.
	send   func(t *testing.T, tc *testCache) (r *response, absent []string)
	status int
	fields []string // the body names one of these
}

func TestUploadRefusals(t *testing.T) {
	tests := []refusal{
		// NAR uploads.
		{
			name: "NAR bytes tampered (xz)", status: http.StatusBadRequest, fields: []string{"NAR", "FileHash"},
			send: func(t *testing.T, tc *testCache) (*response, []string) {
				u := newUpload(t, "tampered-xz", "xz")
				bad := bytes.Clone(u.File)
				bad[len(bad)/2] ^= 0x01
				return tc.put(t, u.NarPath, bad), []string{u.NarPath}
			},
		},
		{
			name: "NAR bytes tampered (uncompressed)", status: http.StatusBadRequest, fields: []string{"FileHash"},
			send: func(t *testing.T, tc *testCache) (*response, []string) {
				u := newUpload(t, "tampered-none", "none")
				bad := bytes.Clone(u.File)
				i := bytes.Index(bad, []byte("hello from")) // inside file contents: still a valid NAR
				bad[i] ^= 0x20
				return tc.put(t, u.NarPath, bad), []string{u.NarPath}
			},
		},
		{
			name: "valid NAR under another NAR's hash", status: http.StatusBadRequest, fields: []string{"FileHash"},
			send: func(t *testing.T, tc *testCache) (*response, []string) {
				a, b := newUpload(t, "named", "zstd"), newUpload(t, "content", "zstd")
				return tc.put(t, a.NarPath, b.File), []string{a.NarPath, b.NarPath}
			},
		},
		{
			name: "truncated NAR, validly compressed", status: http.StatusBadRequest, fields: []string{"NAR"},
			send: func(t *testing.T, tc *testCache) (*response, []string) {
				full := buildNAR(t, "truncated")
				u := newUploadNAR(t, "truncated", "xz", full[:len(full)-24])
				return tc.put(t, u.NarPath, u.File), []string{u.NarPath}
			},
		},
		{
			name: "NAR with trailing bytes", status: http.StatusBadRequest, fields: []string{"NAR"},
			send: func(t *testing.T, tc *testCache) (*response, []string) {
				u := newUploadNAR(t, "trailing", "zstd", append(buildNAR(t, "trailing"), make([]byte, 8)...))
				return tc.put(t, u.NarPath, u.File), []string{u.NarPath}
			},
		},
		{
			name: "garbage after the xz stream", status: http.StatusBadRequest, fields: []string{"NAR"},
			send: func(t *testing.T, tc *testCache) (*response, []string) {
				return putWithSuffix(t, tc, "garbage-xz", "xz", []byte("GARBAGE!"))
			},
		},
		{
			name: "garbage after the zstd stream", status: http.StatusBadRequest, fields: []string{"NAR"},
			send: func(t *testing.T, tc *testCache) (*response, []string) {
				return putWithSuffix(t, tc, "garbage-zstd", "zstd", []byte("GARBAGE!"))
			},
		},
		{
			name: "NAR with unsorted entries", status: http.StatusBadRequest, fields: []string{"NAR"},
			send: func(t *testing.T, tc *testCache) (*response, []string) {
				u := newUploadNAR(t, "unsorted", "none", dirNAR("b", "a"))
				return tc.put(t, u.NarPath, u.File), []string{u.NarPath}
			},
		},
		{
			name: "NAR with duplicate entries", status: http.StatusBadRequest, fields: []string{"NAR"},
			send: func(t *testing.T, tc *testCache) (*response, []string) {
				u := newUploadNAR(t, "duplicate", "xz", dirNAR("a", "a"))
				return tc.put(t, u.NarPath, u.File), []string{u.NarPath}
			},
		},
		{
			name: "NAR with an entry named ..", status: http.StatusBadRequest, fields: []string{"NAR"},
			send: func(t *testing.T, tc *testCache) (*response, []string) {
				u := newUploadNAR(t, "dotdot", "none", dirNAR(".."))
				return tc.put(t, u.NarPath, u.File), []string{u.NarPath}
			},
		},
		{
			name: "NAR with an entry containing a slash", status: http.StatusBadRequest, fields: []string{"NAR"},
			send: func(t *testing.T, tc *testCache) (*response, []string) {
				u := newUploadNAR(t, "slash", "zstd", dirNAR("a/b"))
				return tc.put(t, u.NarPath, u.File), []string{u.NarPath}
			},
		},
		{
			name: "NAR with bad magic", status: http.StatusBadRequest, fields: []string{"NAR"},
			send: func(t *testing.T, tc *testCache) (*response, []string) {
				u := newUploadNAR(t, "magic", "none", handNAR("nix-archive-2", "(", "type", "regular", "contents", "x", ")"))
				return tc.put(t, u.NarPath, u.File), []string{u.NarPath}
			},
		},
		{
			name: "NAR with nonzero padding", status: http.StatusBadRequest, fields: []string{"NAR"},
			send: func(t *testing.T, tc *testCache) (*response, []string) {
				b := handNAR("nix-archive-1", "(", "type", "regular", "contents", "x", ")")
				b[bytes.Index(b, []byte("x"))+1] = 'y'
				u := newUploadNAR(t, "padding", "none", b)
				return tc.put(t, u.NarPath, u.File), []string{u.NarPath}
			},
		},
		{
			name: "not compressed as the name says", status: http.StatusBadRequest, fields: []string{"NAR", "Compression"},
			send: func(t *testing.T, tc *testCache) (*response, []string) {
				u := newUpload(t, "wrong-compression", "zstd")
				path := strings.TrimSuffix(u.NarPath, ".zst") + ".xz"
				return tc.put(t, path, u.File), []string{path, u.NarPath}
			},
		},
		{
			name: "NAR name with an unknown extension", status: http.StatusBadRequest, fields: []string{"URL"},
			send: func(t *testing.T, tc *testCache) (*response, []string) {
				u := newUpload(t, "ext", "zstd")
				path := u.NarPath + ".gz"
				return tc.put(t, path, u.File), []string{u.NarPath}
			},
		},
		{
			name: "NAR over MaxUploadSize", status: http.StatusRequestEntityTooLarge, fields: []string{"limit of 4.0 MiB (--max-upload-size)"},
			send: func(t *testing.T, tc *testCache) (*response, []string) {
				big := make([]byte, testMaxUpload+1024)
				u := newUploadNAR(t, "big", "none", handNAR("nix-archive-1", "(", "type", "regular", "contents", string(big), ")"))
				return tc.put(t, u.NarPath, u.File), []string{u.NarPath}
			},
		},
		{
			name: "zstd bomb over MaxNarSize", status: http.StatusRequestEntityTooLarge, fields: []string{"limit of 8.0 MiB once decompressed (--max-nar-size)"},
			send: func(t *testing.T, tc *testCache) (*response, []string) {
				// 64 MiB of zeros: a valid NAR, a few KiB compressed.
				zeros := string(make([]byte, 64<<20))
				u := newUploadNAR(t, "bomb", "zstd", handNAR("nix-archive-1", "(", "type", "regular", "contents", zeros, ")"))
				if len(u.File) > 64<<10 {
					t.Fatalf("the bomb is %d bytes compressed", len(u.File))
				}
				return tc.put(t, u.NarPath, u.File), []string{u.NarPath}
			},
		},

		// narinfo uploads, after an accepted NAR.
		narinfoRefusal("wrong NarHash", "NarHash", func(u *upload) { u.Info.NarHash = sha256Hash([]byte("other")) }),
		narinfoRefusal("wrong NarSize", "NarSize", func(u *upload) { u.Info.NarSize++ }),
		narinfoRefusal("wrong FileSize", "FileSize", func(u *upload) { u.Info.FileSize-- }),
		narinfoRefusal("wrong FileHash", "FileHash", func(u *upload) { u.Info.FileHash = sha256Hash([]byte("other")) }),
		narinfoRefusal("Compression does not match URL", "Compression", func(u *upload) { u.Info.Compression = "zstd" }),
		narinfoRefusal("Compression line missing (bzip2) for an xz URL", "Compression", func(u *upload) { u.Info.Compression = "" }),
		narinfoRefusal("URL points at a NAR never uploaded", "URL", func(u *upload) {
			u.Info.URL = "nar/" + nixbase32.EncodeToString(sha256Hash([]byte("never")).Digest) + ".nar.xz"
		}),
		narinfoRefusal("URL is not a NAR name", "URL", func(u *upload) { u.Info.URL = "../secret-key" }),
		narinfoRefusal("StorePath has another hash than the upload path", "StorePath", func(u *upload) {
			u.Info.StorePath = "/nix/store/" + storeHash("someone else") + "-hello"
		}),
		narinfoTextRefusal("malformed text", "narinfo", func(u *upload) []byte { return []byte("this is not a narinfo\n") }),
		narinfoTextRefusal("CRLF line ends", "narinfo", func(u *upload) []byte {
			return bytes.ReplaceAll(u.Text(), []byte("\n"), []byte("\r\n"))
		}),
		narinfoTextRefusal("NarSize missing", "NarSize", func(u *upload) []byte { return dropLine(u.Text(), "NarSize") }),
		narinfoTextRefusal("two NarHash lines", "NarHash", func(u *upload) []byte {
			return append(u.Text(), "NarHash: "+u.Info.NarHash.String()+"\n"...)
		}),
		narinfoTextRefusal("NarHash in the wrong alphabet (has an e)", "NarHash", func(u *upload) []byte {
			nh := u.Info.NarHash.String()
			return bytes.Replace(u.Text(), []byte(nh), []byte(nh[:len(nh)-1]+"e"), 1)
		}),
		narinfoTextRefusal("StorePath hash in the wrong alphabet (has an e)", "StorePath", func(u *upload) []byte {
			return bytes.Replace(u.Text(), []byte("StorePath: /nix/store/"+u.Hash[:1]), []byte("StorePath: /nix/store/e"), 1)
		}),
		narinfoTextRefusal("StorePath outside /nix/store", "StorePath", func(u *upload) []byte {
			return bytes.Replace(u.Text(), []byte("/nix/store/"+u.Hash), []byte("/gnu/store/"+u.Hash), 1)
		}),
		narinfoTextRefusal("Sig that is not name:base64", "Sig", func(u *upload) []byte {
			return append(u.Text(), "Sig: not-a-signature\n"...)
		}),
		{
			name: "narinfo PUT under a hash in the wrong alphabet", status: http.StatusBadRequest, fields: []string{"path"},
			send: func(t *testing.T, tc *testCache) (*response, []string) {
				u := newUpload(t, "alphabet", "xz")
				mustStatus(t, "PUT nar", tc.put(t, u.NarPath, u.File), http.StatusOK)
				bad := "e" + u.Hash[1:]
				u.Info.StorePath = "/nix/store/" + bad + "-alphabet"
				return tc.put(t, "/"+bad+".narinfo", u.Text()), []string{u.NarInfoPath()}
			},
		},
		{
			name: "narinfo PUT under an upper-case hash", status: http.StatusBadRequest, fields: []string{"path"},
			send: func(t *testing.T, tc *testCache) (*response, []string) {
				u := newUpload(t, "upper", "xz")
				mustStatus(t, "PUT nar", tc.put(t, u.NarPath, u.File), http.StatusOK)
				return tc.put(t, "/"+strings.ToUpper(u.Hash)+".narinfo", u.Text()), []string{u.NarInfoPath()}
			},
		},
		{
			name: "narinfo over MaxMetaSize", status: http.StatusRequestEntityTooLarge, fields: []string{"limit of 64 KiB after decoding (--max-meta-size)"},
			send: func(t *testing.T, tc *testCache) (*response, []string) {
				u := newUpload(t, "huge-narinfo", "xz")
				mustStatus(t, "PUT nar", tc.put(t, u.NarPath, u.File), http.StatusOK)
				body := append(u.Text(), strings.Repeat("X-Padding: "+strings.Repeat("p", 100)+"\n", testMaxMeta/100)...)
				return tc.put(t, u.NarInfoPath(), body), []string{u.NarInfoPath()}
			},
		},
		{
			name: "narinfo over MaxMetaSize once decoded", status: http.StatusRequestEntityTooLarge, fields: []string{"limit of 64 KiB after decoding (--max-meta-size)"},
			send: func(t *testing.T, tc *testCache) (*response, []string) {
				u := newUpload(t, "bomb-narinfo", "xz")
				mustStatus(t, "PUT nar", tc.put(t, u.NarPath, u.File), http.StatusOK)
				body := append(u.Text(), strings.Repeat("X-Padding: "+strings.Repeat("p", 100)+"\n", 4*testMaxMeta/100)...)
				return tc.put(t, u.NarInfoPath(), compress(t, "zstd", body), withHeader("Content-Encoding", "zstd")), []string{u.NarInfoPath()}
			},
		},
		{
			name: "narinfo with Content-Encoding xz declaring a 3 GiB dictionary", status: http.StatusBadRequest, fields: []string{"dictionary"},
			send: func(t *testing.T, tc *testCache) (*response, []string) {
				u := newUpload(t, "xz-dict-narinfo", "xz")
				mustStatus(t, "PUT nar", tc.put(t, u.NarPath, u.File), http.StatusOK)
				body := hugeDictXZ(t, compress(t, "xz", u.Text()))
				return tc.put(t, u.NarInfoPath(), body, withHeader("Content-Encoding", "xz")), []string{u.NarInfoPath()}
			},
		},
		{
			name: "xz NAR of 16-byte blocks each declaring a 128 MiB dictionary", status: http.StatusBadRequest, fields: []string{"too costly"},
			send: func(t *testing.T, tc *testCache) (*response, []string) {
				u := newUpload(t, "xz-tiny-blocks-nar", "xz")
				u.withFile(tinyBlocksXZ(t, u.NAR, 30))
				return tc.put(t, u.NarPath, u.File), []string{u.NarPath}
			},
		},
		{
			name: "narinfo with Content-Encoding xz of 16-byte blocks each declaring a 64 MiB dictionary", status: http.StatusBadRequest, fields: []string{"too costly"},
			send: func(t *testing.T, tc *testCache) (*response, []string) {
				u := newUpload(t, "xz-tiny-blocks-narinfo", "xz")
				mustStatus(t, "PUT nar", tc.put(t, u.NarPath, u.File), http.StatusOK)
				return tc.put(t, u.NarInfoPath(), tinyBlocksXZ(t, u.Text(), 28), withHeader("Content-Encoding", "xz")), []string{u.NarInfoPath()}
			},
		},
		{
			name: "xz NAR declaring a 3 GiB dictionary", status: http.StatusBadRequest, fields: []string{"dictionary"},
			send: func(t *testing.T, tc *testCache) (*response, []string) {
				u := newUpload(t, "xz-dict-nar", "xz")
				file := hugeDictXZ(t, u.File)
				path := "/nar/" + nix32(sha256Hash(file).Digest) + ".nar.xz"
				return tc.put(t, path, file), []string{path}
			},
		},
		{
			name: "listing that is not JSON", status: http.StatusBadRequest, fields: []string{"JSON"},
			send: func(t *testing.T, tc *testCache) (*response, []string) {
				p := "/" + storeHash("listing") + ".ls"
				return tc.put(t, p, []byte("{not json")), []string{p}
			},
		},
		{
			name: "log for a name that is not a derivation", status: http.StatusBadRequest, fields: []string{"path"},
			send: func(t *testing.T, tc *testCache) (*response, []string) {
				p := "/log/" + storeHash("log") + "-hello"
				return tc.put(t, p, []byte("log\n")), nil // a GET of it is refused as well
			},
		},
		{
			name: "realisation with an upper-case hex hash", status: http.StatusBadRequest, fields: []string{"path"},
			send: func(t *testing.T, tc *testCache) (*response, []string) {
				p := "/realisations/sha256:" + strings.Repeat("ABCDEF0123456789", 4) + "!out.doi"
				return tc.put(t, p, []byte("{}")), nil
			},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tc := newTestCacheWith(t, cache.Options{MaxNarSize: testMaxNar}, nil)
			before := tc.files(t)
			r, absent := tt.send(t, tc)
			if r.Status >= 500 {
				t.Fatalf("got %s: a 5xx makes nix retry an upload it caused", r)
			}
			mustStatus(t, "refused upload", r, tt.status)
			if len(tt.fields) > 0 {
				named := false
				for _, f := range tt.fields {
					named = named || bytes.Contains(r.Body, []byte(f))
				}
				if !named {
					t.Errorf("refusal body does not name %s: %q", strings.Join(tt.fields, " or "), r.Body)
				}
			}
			for _, p := range absent {
				for _, method := range []string{http.MethodHead, http.MethodGet} {
					if got := tc.do(t, method, p, nil); got.Status != http.StatusNotFound {
						t.Errorf("after the refusal, %s %s = %s, want 404", method, p, got)
					}
				}
			}
			after := tc.files(t)
			for _, f := range after {
				if isTemporary(f) {
					t.Errorf("temporary file left behind: %s", f)
				}
			}
			if len(after) > len(before)+1 { // at most the NAR accepted before a narinfo refusal
				t.Errorf("refusal left objects in the backend: before %q, after %q", before, after)
			}
		})
	}
}

// narinfoRefusal uploads a valid xz NAR, then a narinfo edited by edit, which must be refused
// with 400 naming field.
func narinfoRefusal(name, field string, edit func(*upload)) refusal {
	return narinfoTextRefusal(name, field, func(u *upload) []byte {
		edit(u)
		return u.Text()
	})
}

func narinfoTextRefusal(name, field string, text func(*upload) []byte) refusal {
	return refusal{
		name: "narinfo " + name, status: http.StatusBadRequest, fields: []string{field},
		send: func(t *testing.T, tc *testCache) (*response, []string) {
			u := newUpload(t, "refused", "xz")
			mustStatus(t, "PUT nar", tc.put(t, u.NarPath, u.File), http.StatusOK)
			body := text(u)
			return tc.put(t, u.NarInfoPath(), body), []string{u.NarInfoPath()}
		},
	}
}

// putWithSuffix PUTs a valid compressed NAR with suffix appended, named by the hash of what is
// sent.
func putWithSuffix(t *testing.T, tc *testCache, name, compression string, suffix []byte) (*response, []string) {
	u := newUpload(t, name, compression)
	file := append(bytes.Clone(u.File), suffix...)
	path := "/nar/" + nix32(sha256Hash(file).Digest) + ".nar" + narExt[compression]
	return tc.put(t, path, file), []string{path, u.NarPath}
}

func dropLine(text []byte, key string) []byte {
	var out []byte
	for _, line := range bytes.SplitAfter(text, []byte("\n")) {
		if !bytes.HasPrefix(line, []byte(key+": ")) {
			out = append(out, line...)
		}
	}
	return out
}

// TestRefusedNarInfoThenValidOneIsAccepted shows a refusal leaves no state behind that blocks the
// correct upload that follows (what a fixed client does next).
func TestRefusedNarInfoThenValidOneIsAccepted(t *testing.T) {
	tc := newTestCache(t)
	u := newUpload(t, "retry", "xz")
	mustStatus(t, "PUT nar", tc.put(t, u.NarPath, u.File), http.StatusOK)
	bad := u.Info
	bad.NarSize++
	mustStatus(t, "PUT wrong narinfo", tc.put(t, u.NarInfoPath(), bad.Bytes()), http.StatusBadRequest)
	mustStatus(t, "PUT right narinfo", tc.put(t, u.NarInfoPath(), u.Text()), http.StatusOK)
	r := tc.get(t, u.NarInfoPath())
	mustStatus(t, "GET narinfo", r, http.StatusOK)
	checkSameNarInfo(t, tc.parseServed(t, r.Body), &u.Info)
}

// TestNarInfoHashFormsAreNormalised uploads NarHash in base16, base64 and SRI form: all are
// accepted and served as sha256:<nix32>.
func TestNarInfoHashFormsAreNormalised(t *testing.T) {
	forms := map[string]func(h narinfo.Hash) string{
		"base16": func(h narinfo.Hash) string { return "sha256:" + hexString(h.Digest) },
		"base64": func(h narinfo.Hash) string { return "sha256:" + base64String(h.Digest) },
		"SRI":    func(h narinfo.Hash) string { return "sha256-" + base64String(h.Digest) },
	}
	for name, form := range forms {
		t.Run(name, func(t *testing.T) {
			tc := newTestCache(t)
			u := newUpload(t, "forms-"+name, "xz")
			mustStatus(t, "PUT nar", tc.put(t, u.NarPath, u.File), http.StatusOK)
			text := bytes.Replace(u.Text(), []byte("NarHash: "+u.Info.NarHash.String()), []byte("NarHash: "+form(u.Info.NarHash)), 1)
			mustStatus(t, "PUT narinfo", tc.put(t, u.NarInfoPath(), text), http.StatusOK)
			r := tc.get(t, u.NarInfoPath())
			mustStatus(t, "GET narinfo", r, http.StatusOK)
			if !bytes.Contains(r.Body, []byte("NarHash: "+u.Info.NarHash.String()+"\n")) {
				t.Errorf("served narinfo does not carry NarHash as sha256:<nix32>:\n%s", r.Body)
			}
			tc.parseServed(t, r.Body)
		})
	}
}

// TestAbortedNarUploadLeavesNothing: a client that goes away mid-body (a killed nix copy) leaves
// no NAR visible and no staged file behind, and the retry succeeds.
func TestAbortedNarUploadLeavesNothing(t *testing.T) {
	for _, comp := range []string{"xz", "zstd", "none"} {
		t.Run(comp, func(t *testing.T) {
			tc := newTestCache(t)
			u := newUpload(t, "aborted-"+comp, comp)
			conn, err := net.Dial("tcp", tc.Addr)
			if err != nil {
				t.Fatal(err)
			}
			auth := base64.StdEncoding.EncodeToString([]byte("nix:" + testToken))
			fmt.Fprintf(conn, "PUT %s HTTP/1.1\r\nHost: %s\r\nAuthorization: Basic %s\r\nContent-Length: %d\r\n\r\n",
				u.NarPath, tc.Addr, auth, len(u.File))
			conn.Write(u.File[:len(u.File)-10])
			time.Sleep(50 * time.Millisecond)
			conn.Close()

			deadline := time.Now().Add(5 * time.Second)
			for {
				var left []string
				for _, f := range tc.files(t) {
					if f != "nix-cache-info" {
						left = append(left, f)
					}
				}
				if len(left) == 0 {
					break
				}
				if time.Now().After(deadline) {
					t.Fatalf("an aborted upload left %q in the backend", left)
				}
				time.Sleep(20 * time.Millisecond)
			}
			mustStatus(t, "HEAD nar after aborted upload", tc.head(t, u.NarPath), http.StatusNotFound)
			u.store(t, tc)
			tc.checkServedNar(t, tc.narinfoOf(t, u), u.NAR)
		})
	}
}

// hugeDictXZ returns an xz file whose first block header declares a 3 GiB LZMA2 dictionary (its
// CRC fixed): a few bytes that would make a decoder allocate 3 GiB.
func hugeDictXZ(t *testing.T, file []byte) []byte {
	t.Helper()
	return xzWithDict(t, file, 39)
}

// tinyBlocksXZ compresses data into xz blocks of 16 bytes that each declare the dictionary of
// properties byte p (30: 128 MiB), as xz -T1 --block-size=16 --lzma2=preset=0,dict=128MiB
// writes them: a decoder that allocates each block's dictionary allocates 128 MiB per 16 bytes.
// (Written with 4 KiB dictionaries, then declared larger: no block refers back further than 16
// bytes.)
func tinyBlocksXZ(t *testing.T, data []byte, p byte) []byte {
	t.Helper()
	var buf bytes.Buffer
	w, err := xz.WriterConfig{BlockSize: 16, DictCap: 4096}.NewWriter(&buf)
	if err != nil {
		t.Fatal(err)
	}
	w.Write(data)
	w.Close()
	f := buf.Bytes()
	// The index (before the 12-byte footer, its size there) gives each block's unpadded size.
	index := f[len(f)-12-(int(binary.LittleEndian.Uint32(f[len(f)-8:]))+1)*4:][1:]
	varint := func() int {
		v, n := binary.Uvarint(index)
		index = index[n:]
		return int(v)
	}
	off, blocks := 12, varint()
	for range blocks {
		unpadded, _ := varint(), varint()
		setBlockDict(t, f[off:], p)
		off += (unpadded + 3) &^ 3
	}
	if blocks < 3 {
		t.Fatalf("%d blocks", blocks)
	}
	return f
}

// xzWithDict returns an xz file whose first block header declares the LZMA2 dictionary of
// properties byte p (28: 64 MiB, 30: 128 MiB, 39: 3 GiB), its CRC fixed.
func xzWithDict(t *testing.T, file []byte, p byte) []byte {
	t.Helper()
	f := append([]byte{}, file...)
	setBlockDict(t, f[12:], p)
	return f
}

// setBlockDict sets the LZMA2 dictionary of the block header at the start of h to properties
// byte p, and fixes the header's CRC.
func setBlockDict(t *testing.T, h []byte, p byte) {
	t.Helper()
	size := (int(h[0]) + 1) * 4
	for i := 2; i+2 < size-4; i++ {
		if h[i] == 0x21 && h[i+1] == 0x01 { // LZMA2 filter, one byte of properties
			h[i+2] = p
			crc := crc32.ChecksumIEEE(h[:size-4])
			binary.LittleEndian.PutUint32(h[size-4:], crc)
			return
		}
	}
	t.Fatal("no LZMA2 filter in the block header")
}
