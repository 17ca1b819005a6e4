package server_test

// Hostile request paths, sent raw (Go's client would clean them): traversal in plain and encoded
// forms, NUL bytes, backslashes and names outside the alphabets. Each must be a 4xx (400 for
// traversal), never a 5xx, never a panic, and never the contents of the secret-key files put next
// to the backend root and its parent.

import (
	"bufio"
	"bytes"
	"encoding/base64"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// rawRequest sends one request with target written verbatim in the request line and reads the
// answer.
func rawRequest(t *testing.T, addr, method, target string, body []byte, headers ...string) *response {
	t.Helper()
	conn, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	conn.SetDeadline(time.Now().Add(10 * time.Second))
	var b bytes.Buffer
	fmt.Fprintf(&b, "%s %s HTTP/1.1\r\nHost: %s\r\nConnection: close\r\n", method, target, addr)
	for _, h := range headers {
		b.WriteString(h + "\r\n")
	}
	if body != nil {
		fmt.Fprintf(&b, "Content-Length: %d\r\n", len(body))
	}
	b.WriteString("\r\n")
	b.Write(body)
	if _, err := conn.Write(b.Bytes()); err != nil {
		t.Fatal(err)
	}
	resp, err := http.ReadResponse(bufio.NewReader(conn), &http.Request{Method: method})
	if err != nil {
		t.Fatalf("%s %s: reading the answer: %v (the server dropped the connection?)", method, target, err)
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("%s %s: reading the body: %v", method, target, err)
	}
	return &response{Status: resp.StatusCode, Header: resp.Header, Body: data}
}

var hostileTargets = []string{
	"/nar/../x",
	"/nar/../secret-key",
	"/nar/../../secret-key",
	"/nar/..%2fx",
	"/nar/..%2F..%2Fsecret-key",
	"/nar/%2e%2e/secret",
	"/nar/%2e%2e/%2e%2e/secret-key",
	"/nar/.%2e/.%2e/secret-key",
	"/nar/%2e%2e%2f%2e%2e%2fsecret-key",
	"/..%2f..%2fetc/passwd",
	"/..%2f..%2fsecret-key",
	"/..%2fsecret-key",
	"/log/..%2F..%2Fsecret-key",
	"/log/../../secret-key",
	"/log/%2e%2e/%2e%2e/secret-key",
	"/log/%252e%252e%252f%252e%252e%252fsecret-key",
	"/nar/%00",
	"/nar/x%00.nar",
	"/log/secret-key%00.drv",
	"/%2e%2e/secret-key",
	"/%2e%2e/%2e%2e/secret-key",
	"/../secret-key",
	"/../../secret-key",
	"/./secret-key",
	"//secret-key",
	"/nar//../../secret-key",
	`/nar\..\..\secret-key`,
	`/nar/..\..\secret-key`,
	`/..\secret-key`,
	"/log/%5c..%5c..%5csecret-key",
	"/nar/..%5c..%5csecret-key",
	"/realisations/..%2f..%2f..%2fsecret-key",
	"/realisations/../../secret-key",
	"/build-trace-v2/..%2f..%2f/secret-key",
	"/build-trace-v2/../../secret-key",
	"/build-trace-v2/x.drv/..%2f..%2f..%2fsecret-key",
	"/debuginfo/..%2f..%2fsecret-key",
	"/debuginfo/../../secret-key",
	"http://127.0.0.1/nar/../../secret-key",
	"http://127.0.0.1/..%2f..%2fsecret-key",
}

// badNames are well-formed paths naming something outside the protocol's alphabets.
var badNames = []string{
	"/" + strings.ToUpper(storeHash("upper")) + ".narinfo",
	"/e" + storeHash("with-e")[1:] + ".narinfo",
	"/" + storeHash("short")[1:] + ".narinfo",
	"/" + storeHash("long") + "0.narinfo",
	"/" + strings.ToUpper(storeHash("upper-ls")) + ".ls",
	"/u" + storeHash("with-u")[1:] + ".ls",
	"/nar/" + strings.Repeat("E", 52) + ".nar.xz",
	"/nar/secret-key",
	"/log/secret-key",
	"/log/.." + storeHash("x") + "-x.drv",
	"/debuginfo/XYZ",
	"/realisations/sha256:" + strings.Repeat("g", 64) + "!out.doi",
}

func TestHostilePathsAreRefused(t *testing.T) {
	tc := newTestCache(t)
	u := newUpload(t, "present", "xz")
	u.store(t, tc)
	secret := tc.secretKeyString()
	auth := "Authorization: Basic " + base64.StdEncoding.EncodeToString([]byte("nix:"+testToken))

	check := func(t *testing.T, method, target string, r *response, want func(int) bool, wantDesc string) {
		t.Helper()
		if r.Status >= 500 {
			t.Errorf("%s %s: got %s, a 5xx", method, target, r)
		} else if !want(r.Status) {
			t.Errorf("%s %s: got %s, want %s", method, target, r, wantDesc)
		}
		if bytes.Contains(r.Body, []byte(secretContent)) || bytes.Contains(r.Body, []byte("SECRET-KEY")) {
			t.Errorf("%s %s: the body contains the secret-key file!", method, target)
		}
		if secret != "" && bytes.Contains(r.Body, []byte(secret[strings.IndexByte(secret, ':')+1:])) {
			t.Errorf("%s %s: the body contains the server's signing key!", method, target)
		}
	}
	// Control: the raw client itself works, so refusals below are the server's doing.
	if r := rawRequest(t, tc.Addr, http.MethodGet, u.NarInfoPath(), nil); r.Status != http.StatusOK {
		t.Fatalf("raw GET of a present narinfo: got %s, want 200", r)
	}
	is400 := func(s int) bool { return s == http.StatusBadRequest }
	is4xx := func(s int) bool { return s >= 400 && s < 500 }

	for _, target := range hostileTargets {
		t.Run("traversal "+target, func(t *testing.T) {
			for _, method := range []string{http.MethodGet, http.MethodHead} {
				check(t, method, target, rawRequest(t, tc.Addr, method, target, nil), is400, "400")
			}
			r := rawRequest(t, tc.Addr, http.MethodPut, target, []byte("{\"pwned\":true}\n"), auth)
			check(t, http.MethodPut, target, r, is400, "400")
		})
	}
	for _, target := range badNames {
		t.Run("bad name "+target, func(t *testing.T) {
			for _, method := range []string{http.MethodGet, http.MethodHead} {
				check(t, method, target, rawRequest(t, tc.Addr, method, target, nil), is4xx, "4xx")
			}
			r := rawRequest(t, tc.Addr, http.MethodPut, target, []byte("{\"pwned\":true}\n"), auth)
			check(t, http.MethodPut, target, r, is4xx, "4xx")
		})
	}
	t.Run("narinfo names", func(t *testing.T) {
		// The protocol calls for 400 for hashes outside the alphabet on the narinfo lookup.
		for _, target := range badNames[:4] {
			check(t, http.MethodGet, target, rawRequest(t, tc.Addr, http.MethodGet, target, nil), is400, "400")
		}
	})
	t.Run("plain names never serve secrets", func(t *testing.T) {
		for _, target := range []string{"/", "/secret-key", "/nix-cache-info", "/.tmp", "/public-key", "/upload-tokens"} {
			r := rawRequest(t, tc.Addr, http.MethodGet, target, nil)
			check(t, http.MethodGet, target, r, func(s int) bool { return s == 200 || s == 404 }, "200 or 404")
		}
	})

	// Nothing was written outside the backend root, and the secret files are untouched.
	err := filepath.WalkDir(tc.Base, func(p string, d os.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() || strings.HasPrefix(p, tc.Root+string(filepath.Separator)) {
			return nil
		}
		data, err := os.ReadFile(p)
		if err != nil {
			return err
		}
		if filepath.Base(p) != "secret-key" || string(data) != secretContent+"\n" {
			t.Errorf("file outside the backend root was created or changed: %s (%q)", p, data)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range tc.files(t) {
		if strings.Contains(f, "secret") || strings.Contains(f, "..") {
			t.Errorf("a hostile PUT created %s in the backend", f)
		}
	}
}

// TestHostilePathsViaGoClient sends encoded traversal through net/http's client with an opaque
// URL, which is how a Go program (and a proxy that does not normalise) would send them.
func TestHostilePathsViaGoClient(t *testing.T) {
	tc := newTestCache(t)
	for _, target := range []string{"/nar/..%2fx", "/log/..%2F..%2Fsecret-key", "/%2e%2e/secret-key", "/nar/%2e%2e/secret"} {
		req, err := http.NewRequest(http.MethodGet, tc.URL, nil)
		if err != nil {
			t.Fatal(err)
		}
		req.URL.Opaque = target
		resp, err := tc.client.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != http.StatusBadRequest {
			t.Errorf("GET %s: got %d %q, want 400", target, resp.StatusCode, body)
		}
		if bytes.Contains(body, []byte(secretContent)) {
			t.Errorf("GET %s returned the secret key", target)
		}
	}
}
