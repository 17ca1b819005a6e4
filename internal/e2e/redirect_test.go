package e2e

import (
	"io"
	"net/http"
	"strings"
	"testing"

	"github.com/cached-dev/cached/internal/backend/backendtest"
)

// noFollow is an HTTP client that reports redirects instead of following them.
var noFollow = &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}

// TestS3NarRedirectPresigned: with --nar-redirect presign, a NAR GET is a 307 to a presigned
// URL of the object on the S3 server, which serves the NAR's bytes itself; nix substitutes a
// closure through it, signatures required, into a fresh store. The substituting client has no
// credentials for 127.0.0.1 (curl would send netrc credentials for the same host name to the S3
// server too, and S3 refuses a request that carries two authentications).
func TestS3NarRedirectPresigned(t *testing.T) {
	requireNix(t)
	gw := backendtest.StartVersityGW(t)
	shared, pk, token := sharedSecrets(t)
	srv := startServer(t, t.TempDir(), s3Args(gw, shared, "--nar-redirect", "presign", "--nar-redirect-expiry", "10m")...)
	up := newNixClient(t, hostOf(srv.URL), token)
	c := buildClosure(t, up, 3<<20)
	up.run("nix", "copy", "--to", srv.URL, c.Top)

	narURL := srv.URL + "/" + narURLOf(t, srv.URL, c.Top)
	resp, err := noFollow.Get(narURL)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	loc := resp.Header.Get("Location")
	if resp.StatusCode != http.StatusTemporaryRedirect || !strings.HasPrefix(loc, gw.Endpoint+"/"+gw.Bucket+"/nar/") ||
		!strings.Contains(loc, "X-Amz-Signature=") || !strings.Contains(loc, "X-Amz-Expires=600") {
		t.Fatalf("GET %s: %d, Location %q; want 307 to a presigned URL on %s valid 600s", narURL, resp.StatusCode, loc, gw.Endpoint)
	}
	if cc := resp.Header.Get("Cache-Control"); cc != "no-store" {
		t.Errorf("Cache-Control of the redirect to an expiring URL = %q, want no-store", cc)
	}
	// The redirect's target serves the NAR itself, byte for byte what cached would send.
	direct, err := http.Get(loc)
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(direct.Body)
	direct.Body.Close()
	if direct.StatusCode != 200 || len(body) == 0 {
		t.Fatalf("GET of the presigned URL: %d, %d bytes", direct.StatusCode, len(body))
	}
	// Narinfos still come from cached.
	if code, _ := get(t, srv.URL+"/"+hashOf(c.Top)+".narinfo"); code != 200 {
		t.Fatalf("narinfo with --nar-redirect: %d", code)
	}
	// A NAR the cache does not have is a 404 from cached, not a redirect to a missing object.
	missing := srv.URL + "/nar/" + strings.Repeat("0", 52) + ".nar.zst"
	if r2, err := noFollow.Get(missing); err != nil || r2.StatusCode != 404 {
		t.Fatalf("GET of a NAR not in the cache: %v, %v; want 404", r2.StatusCode, err)
	}

	down := newNixClient(t, "upload.invalid", token) // no credentials for 127.0.0.1
	substituteFreshFrom(t, down, srv.URL, pk, c, up)
}

// TestS3NarRedirectBaseURL: --nar-redirect URL answers NAR GETs with a 307 to that URL followed
// by the object's key (a CDN in front of the bucket), and a bad value stops start-up.
func TestS3NarRedirectBaseURL(t *testing.T) {
	requireNix(t)
	gw := backendtest.StartVersityGW(t)
	shared, _, token := sharedSecrets(t)
	srv := startServer(t, t.TempDir(), s3Args(gw, shared, "--nar-redirect", "https://cdn.example/cache/")...)
	up := newNixClient(t, hostOf(srv.URL), token)
	c := buildClosure(t, up, 64<<10)
	up.run("nix", "copy", "--to", srv.URL, c.Top)
	nar := narURLOf(t, srv.URL, c.Top)
	resp, err := noFollow.Get(srv.URL + "/" + nar)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if loc := resp.Header.Get("Location"); resp.StatusCode != http.StatusTemporaryRedirect || loc != "https://cdn.example/cache/"+nar {
		t.Fatalf("GET %s: %d, Location %q; want 307 to https://cdn.example/cache/%s", nar, resp.StatusCode, loc, nar)
	}

	for _, bad := range [][]string{
		{"--nar-redirect", "ftp://cdn.example/"},
		{"--nar-redirect", "cdn.example"},
		{"--nar-redirect", "presign", "--nar-redirect-expiry", "200h"},
	} {
		args := append([]string{"serve", "--listen", "127.0.0.1:0", "--data", t.TempDir()}, s3Args(gw, shared, bad...)...)
		out, err := runCached(args...)
		if err == nil || !strings.Contains(out, "--nar-redirect") {
			t.Errorf("serve %v: %v\n%s\nwant a start-up error naming the flag", bad, err, tail(out, 5))
		}
	}
	out, err := runCached("serve", "--listen", "127.0.0.1:0", "--data", t.TempDir(), "--nar-redirect", "presign")
	if err == nil || !strings.Contains(out, "needs --backend s3") {
		t.Errorf("serve --nar-redirect on the disk backend: %v\n%s", err, tail(out, 5))
	}
}
