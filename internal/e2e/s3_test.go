package e2e

import (
	"fmt"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/cached-dev/cached/internal/backend/backendtest"
)

// s3Args are the flags that put a server on the versitygw bucket. Replicas share the signing
// key and the upload token through files, as a deployment would.
func s3Args(gw *backendtest.VersityGW, shared string, extra ...string) []string {
	return append(s3BackendArgs(gw, shared), append([]string{"--upload-token-file", filepath.Join(shared, "tokens")}, extra...)...)
}

// s3BackendArgs are the flags every subcommand that opens the cache takes.
func s3BackendArgs(gw *backendtest.VersityGW, shared string) []string {
	return []string{"--backend", "s3", "--s3-bucket", gw.Bucket, "--s3-endpoint", gw.Endpoint,
		"--s3-region", gw.Region, "--s3-path-style", "--s3-access-key", gw.Access, "--s3-secret-key", gw.Secret,
		"--secret-key-file", filepath.Join(shared, "secret-key")}
}

// sharedSecrets writes a signing key and an upload token for replicas to share.
func sharedSecrets(t *testing.T) (dir, pk, token string) {
	t.Helper()
	dir = t.TempDir()
	out, err := runCached("keygen", "replicas.test-1", "--secret-key-file", filepath.Join(dir, "secret-key"), "--public-key-file", filepath.Join(dir, "public-key"))
	if err != nil {
		t.Fatalf("keygen: %v\n%s", err, out)
	}
	token = "replica-upload-token"
	os.WriteFile(filepath.Join(dir, "tokens"), []byte(token+"\n"), 0o600)
	return dir, strings.TrimSpace(readFile(t, filepath.Join(dir, "public-key"))), token
}

// TestS3RoundTrip: nix copy --to a cached on S3, then substitution with signatures required,
// with each client.
func TestS3RoundTrip(t *testing.T) {
	requireNix(t)
	gw := backendtest.StartVersityGW(t)
	shared, pk, token := sharedSecrets(t)
	srv := startServer(t, t.TempDir(), s3Args(gw, shared)...)
	forEachNix(t, func(t *testing.T, v nixVersion) {
		n := newNixClientOf(t, v, hostOf(srv.URL), token)
		c := buildClosure(t, n, 3<<20)
		n.run("nix", "copy", "--to", srv.URL, c.Top)
		n.run("nix", "store", "verify", "--store", srv.URL, "--trusted-public-keys", pk, "-r", c.Top)
		n.run("nix", "store", "ls", "--store", srv.URL, "-R", c.Top)
		substituteFresh(t, n, srv.URL, pk, c)
	})
}

// TestS3Replicas: two servers on one bucket, following each other's journal (the full listing
// every hour plays no part). A path uploaded through A is served by B within the journal's bound;
// B restarted with an empty index recovers everything by reindex; a path deleted through A stops
// being served by B within the bound; an S3 outage shows as 503s once B's journal is stale, and
// both recover when the S3 server returns, without restarting cached.
func TestS3Replicas(t *testing.T) {
	requireNix(t)
	gw := backendtest.StartVersityGW(t)
	shared, pk, token := sharedSecrets(t)
	// The README's bound: three journal intervals; a second more for the polls' own requests
	// and a loaded machine.
	const journalEvery = 500 * time.Millisecond
	const bound = 3*journalEvery + time.Second
	sync := []string{"--sync-interval", "1h", "--negative-ttl", "1h", "--journal-interval", journalEvery.String()}
	a := startServer(t, t.TempDir(), s3Args(gw, shared, sync...)...)
	bData := t.TempDir()
	b := startServer(t, bData, s3Args(gw, shared, sync...)...)
	n := newNixClient(t, hostOf(a.URL), token)
	c := buildClosure(t, n, 256<<10)

	// B is asked first (with no journal, a miss it would remember for the negative TTL), then
	// A gets the upload.
	if code, _ := get(t, b.URL+"/"+hashOf(c.Top)+".narinfo"); code != 404 {
		t.Fatalf("B before upload: %d", code)
	}
	n.run("nix", "copy", "--to", a.URL, c.Top)
	waitServes(t, b, bound, c.Top, c.Dep)
	substituteFresh(t, n, b.URL, pk, c)

	// B with an empty index: cached reindex rebuilds it from the bucket.
	b.Stop()
	os.RemoveAll(filepath.Join(bData, "index"))
	out, err := runCached(append([]string{"reindex", "--data", bData}, s3BackendArgs(gw, shared)...)...)
	if err != nil || !strings.Contains(out, "2 narinfos indexed") {
		t.Fatalf("reindex from the bucket: %v\n%s", err, out)
	}
	b = startServer(t, bData, s3Args(gw, shared, sync...)...)
	n.run("nix", "store", "verify", "--store", b.URL, "--trusted-public-keys", pk, "-r", c.Top)

	// Outage: once B's journal is stale, reads that need the bucket answer 503 (never a false
	// 404), uploads 503. Before that a miss is a 404 from the index, which holds all that
	// anyone could upload: the bucket takes no uploads either.
	gw.Stop()
	c2 := buildClosure(t, n, 1024)
	deadline := time.Now().Add(bound)
	for {
		code, _ := get(t, b.URL+"/"+hashOf(c2.Top)+".narinfo")
		if code == http.StatusServiceUnavailable {
			break
		}
		if code != 404 || time.Now().After(deadline) {
			t.Fatalf("narinfo miss during an S3 outage: %d, want 404 from the index, then 503 within %s", code, bound)
		}
		time.Sleep(100 * time.Millisecond)
	}
	narURL := narURLOf(t, b.URL, c.Top)
	if code, _ := get(t, b.URL+"/"+narURL); code != http.StatusServiceUnavailable {
		t.Errorf("NAR download during an S3 outage: %d, want 503", code)
	}
	if code, _ := get(t, b.URL+"/"+hashOf(c.Top)+".narinfo"); code != 200 {
		t.Errorf("indexed narinfo during an S3 outage: %d, want 200 from the index", code)
	}
	if _, err := n.try("nix", "copy", "--to", a.URL, c2.Top); err == nil {
		t.Error("nix copy succeeded during an S3 outage")
	}
	// A gc that cannot reach the bucket (nothing old enough to delete; listing NARs fails)
	// must fail its cron job, not report success.
	if out, err := cachedAdmin(t, a, "gc", "--older-than", "1000h"); err == nil {
		t.Errorf("gc during an S3 outage exited 0:\n%s", out)
	}
	if err := gw.Start(); err != nil {
		t.Fatal(err)
	}
	n.run("nix", "copy", "--to", a.URL, c2.Top)
	waitServes(t, b, bound, c2.Top, c2.Dep)
	substituteFresh(t, n, b.URL, pk, c2)

	// Deletion through A reaches B within the bound.
	out, err = cachedAdmin(t, a, "gc", "--older-than", "0s", "--grace", "0s")
	if err != nil {
		t.Fatalf("gc on A: %v\n%s", err, out)
	}
	deadline = time.Now().Add(bound)
	for {
		code, _ := get(t, b.URL+"/"+hashOf(c.Top)+".narinfo")
		if code == 404 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("B still serves %s %s after it was deleted through A", c.Top, time.Duration(0))
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// waitServes waits until srv serves the narinfo of every path, failing the test after d.
func waitServes(t *testing.T, srv *serverProc, d time.Duration, paths ...string) {
	t.Helper()
	start := time.Now()
	for _, p := range paths {
		for {
			code, _ := get(t, srv.URL+"/"+hashOf(p)+".narinfo")
			if code == 200 {
				break
			}
			if time.Since(start) > d {
				t.Fatalf("%s still answers %d for %s after %s", srv.URL, code, p, d)
			}
			time.Sleep(50 * time.Millisecond)
		}
	}
	t.Logf("%s serves %d paths uploaded through another replica after %s", srv.URL, len(paths), time.Since(start).Round(time.Millisecond))
}

// TestS3LargeNar uploads and substitutes a closure with a 1 GiB file through cached on S3 and
// reports cached's peak RSS, which must stay far below the NAR size.
func TestS3LargeNar(t *testing.T) {
	requireNix(t)
	gw := backendtest.StartVersityGW(t)
	shared, pk, token := sharedSecrets(t)
	srv := startServer(t, t.TempDir(), s3Args(gw, shared)...)
	n := newNixClient(t, hostOf(srv.URL), token)
	c := buildClosure(t, n, 1<<30)
	start := time.Now()
	n.run("nix", "copy", "--to", srv.URL+"?compression=none", c.Top)
	up := time.Since(start)
	start = time.Now()
	substituteFresh(t, n, srv.URL, pk, c)
	down := time.Since(start)
	peak := peakRSS(t, srv.cmd.Process.Pid)
	t.Logf("1 GiB NAR through S3: upload %s, substitution %s, cached peak RSS %d MiB", up.Round(time.Millisecond), down.Round(time.Millisecond), peak>>20)
	if peak > 300<<20 {
		t.Errorf("cached peak RSS %d MiB while streaming a 1 GiB NAR: memory is not flat", peak>>20)
	}
}

// peakRSS reads VmHWM of a process, in bytes.
func peakRSS(t *testing.T, pid int) int64 {
	t.Helper()
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		t.Fatal(err)
	}
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, "VmHWM:"); ok {
			kb, _ := strconv.ParseInt(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(v), "kB")), 10, 64)
			return kb << 10
		}
	}
	t.Fatal("no VmHWM")
	return 0
}

// narURLOf returns the URL field of p's narinfo on the server.
func narURLOf(t *testing.T, base, p string) string {
	t.Helper()
	code, body := get(t, base+"/"+hashOf(p)+".narinfo")
	if code != 200 {
		t.Fatalf("narinfo of %s: %d", p, code)
	}
	for _, line := range strings.Split(body, "\n") {
		if u, ok := strings.CutPrefix(line, "URL: "); ok {
			return u
		}
	}
	t.Fatalf("narinfo of %s has no URL", p)
	return ""
}

func runCached(args ...string) (string, error) {
	out, err := execCommand(cachedBin, args...).CombinedOutput()
	return string(out), err
}

// TestS3ReplicasBehindLoadBalancer: nix copy through a load balancer that sends each request to
// the next of two replicas on one bucket, so a NAR's PUT and its narinfo's PUT (and a path and
// its reference) land on different replicas. With the default xz upload and zstd storage the
// narinfo names an upload the other replica stored under another name: the replicas share that
// alias through the bucket, and a reference uploaded through the other replica counts as present.
func TestS3ReplicasBehindLoadBalancer(t *testing.T) {
	requireNix(t)
	gw := backendtest.StartVersityGW(t)
	shared, pk, token := sharedSecrets(t)
	// Each replica learns what the other committed from the journal, within three intervals.
	const journalEvery = 500 * time.Millisecond
	a := startServer(t, t.TempDir(), s3Args(gw, shared, "--journal-interval", journalEvery.String())...)
	b := startServer(t, t.TempDir(), s3Args(gw, shared, "--journal-interval", journalEvery.String())...)
	targets := []*url.URL{mustParseURL(t, a.URL), mustParseURL(t, b.URL)}
	var next atomic.Uint64
	var puts [2]atomic.Int64
	lb := httptest.NewServer(&httputil.ReverseProxy{Rewrite: func(r *httputil.ProxyRequest) {
		i := next.Add(1) % 2
		if r.In.Method == http.MethodPut {
			puts[i].Add(1)
		}
		r.SetURL(targets[i])
	}})
	t.Cleanup(lb.Close)

	n := newNixClient(t, hostOf(lb.URL), token)
	c := buildClosure(t, n, 512<<10)
	n.run("nix", "copy", "--to", lb.URL, c.Top) // xz, nix's default; stored as zstd
	if puts[0].Load() == 0 || puts[1].Load() == 0 {
		t.Fatalf("the load balancer did not spread the uploads: %d and %d PUTs", puts[0].Load(), puts[1].Load())
	}
	for _, srv := range []*serverProc{a, b} {
		waitServes(t, srv, 3*journalEvery+time.Second, c.Top, c.Dep)
	}
	for _, srv := range []*serverProc{a, b} {
		n.run("nix", "store", "verify", "--store", srv.URL, "--trusted-public-keys", pk, "-r", c.Top)
		substituteFresh(t, n, srv.URL, pk, c)
	}
	// A repeated copy through the balancer finds everything present on either replica.
	n.run("nix", "copy", "--to", lb.URL, c.Top)
}

func mustParseURL(t *testing.T, s string) *url.URL {
	t.Helper()
	u, err := url.Parse(s)
	if err != nil {
		t.Fatal(err)
	}
	return u
}
