package e2e

import (
	"bufio"
	"context"
	"crypto/sha256"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/nix-community/go-nix/pkg/nixbase32"
)

// runPush runs `cached push` and returns its combined output.
func runPush(t *testing.T, args ...string) (string, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, cachedBin, append([]string{"push", "--progress", "lines"}, args...)...)
	out, err := cmd.CombinedOutput()
	return string(out), err
}

// mustPush runs `cached push` and fails the test if it fails.
func mustPush(t *testing.T, args ...string) string {
	t.Helper()
	out, err := runPush(t, args...)
	if err != nil {
		t.Fatalf("cached push %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return out
}

// tokenFile writes content to a new file and returns its path.
func tokenFile(t *testing.T, content string) string {
	t.Helper()
	f := filepath.Join(t.TempDir(), "token")
	if err := os.WriteFile(f, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
	return f
}

// resultLink makes a ./result-style symlink to path.
func resultLink(t *testing.T, path string) string {
	t.Helper()
	link := filepath.Join(t.TempDir(), "result")
	if err := os.Symlink(path, link); err != nil {
		t.Fatal(err)
	}
	return link
}

// httpStatus answers a request without a token (the server's reads are public).
func httpStatus(t *testing.T, method, url string) int {
	t.Helper()
	req, err := http.NewRequest(method, url, nil)
	if err != nil {
		t.Fatal(err)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	return resp.StatusCode
}

func narInfoURL(base, storePath string) string {
	return base + "/" + strings.SplitN(filepath.Base(storePath), "-", 2)[0] + ".narinfo"
}

func getNarInfo(t *testing.T, base, storePath string) string {
	t.Helper()
	resp, err := http.Get(narInfoURL(base, storePath))
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var b strings.Builder
	sc := bufio.NewScanner(resp.Body)
	for sc.Scan() {
		b.WriteString(sc.Text() + "\n")
	}
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("GET narinfo of %s: %d", storePath, resp.StatusCode)
	}
	return b.String()
}

// putRequests counts the PUTs the server answered with the given status class ("2" for 2xx,
// "" for all) on routes containing route ("" for all), from its metrics.
func putRequests(t *testing.T, base, class, route string) int {
	t.Helper()
	resp, err := http.Get(base + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	total := 0
	sc := bufio.NewScanner(resp.Body)
	for sc.Scan() {
		line := sc.Text()
		if !strings.HasPrefix(line, "cached_http_requests_total{") || !strings.Contains(line, `method="PUT"`) ||
			!strings.Contains(line, `code="`+class) || !strings.Contains(line, `route="`+route) {
			continue
		}
		n, err := strconv.Atoi(line[strings.LastIndexByte(line, ' ')+1:])
		if err != nil {
			t.Fatalf("metrics line %q: %v", line, err)
		}
		total += n
	}
	return total
}

// requireAbsent checks that the server serves no narinfo for any of paths.
func requireAbsent(t *testing.T, base string, paths ...string) {
	t.Helper()
	for _, p := range paths {
		if got := httpStatus(t, http.MethodHead, narInfoURL(base, p)); got != http.StatusNotFound {
			t.Errorf("HEAD narinfo of %s: %d, want 404 (nothing committed)", p, got)
		}
	}
}

// TestPushClosure: `cached push ./result` uploads a closure (references, an executable, a
// symlink, empty files, a 3 MiB file) that then substitutes into a fresh store with signatures
// required and verifies against the cache; a second push finds everything present and sends
// no PUT at all.
func TestPushClosure(t *testing.T) {
	requireNix(t)
	srv := startServer(t, t.TempDir())
	n := newNixClient(t, hostOf(srv.URL), srv.Token)
	c := buildClosure(t, n, 3<<20)
	tok := tokenFile(t, srv.Token+"\n")

	out := mustPush(t, "--url", srv.URL, "--token-file", tok, resultLink(t, c.Top))
	if !strings.Contains(out, "pushed 2 paths") || !strings.Contains(out, "0 already present") {
		t.Fatalf("first push: want 2 paths pushed, none present:\n%s", out)
	}
	substituteFresh(t, n, srv.URL, srv.PublicKey, c)
	n.run("nix", "store", "verify", "--store", srv.URL, "--trusted-public-keys", srv.PublicKey, "-r", c.Top)

	puts := putRequests(t, srv.URL, "", "")
	out = mustPush(t, "--url", srv.URL, "--token-file", tok, c.Top)
	if !strings.Contains(out, "pushed 0 paths") || !strings.Contains(out, "2 already present") {
		t.Fatalf("second push: want nothing pushed, 2 present:\n%s", out)
	}
	if after := putRequests(t, srv.URL, "", ""); after != puts {
		t.Fatalf("second push sent %d PUTs, want none", after-puts)
	}
}

// TestPushCompressions: each --compression uploads NARs that nix substitutes, both stored as
// uploaded (the file nix downloads is the one push made) and recompressed by the server (the
// narinfo push sends names the uploaded file, which the server resolves).
func TestPushCompressions(t *testing.T) {
	requireNix(t)
	asUploaded := startServer(t, t.TempDir(), "--store-compression", "as-uploaded")
	recompressing := startServer(t, t.TempDir())
	for _, tc := range []struct {
		compression string
		srv         *serverProc
		ext         string // of the stored NAR
	}{
		{"zstd", asUploaded, ".nar.zst"},
		{"xz", asUploaded, ".nar.xz"},
		{"none", asUploaded, ".nar\n"},
		{"none", recompressing, ".nar.zst"},
		{"xz", recompressing, ".nar.zst"},
	} {
		name := tc.compression + "/as-uploaded"
		if tc.srv == recompressing {
			name = tc.compression + "/stored-zstd"
		}
		t.Run(name, func(t *testing.T) {
			n := newNixClient(t, hostOf(tc.srv.URL), tc.srv.Token)
			c := buildClosure(t, n, 256<<10)
			mustPush(t, "--url", tc.srv.URL, "--token-file", tokenFile(t, tc.srv.Token), "--compression", tc.compression, c.Top)
			ni := getNarInfo(t, tc.srv.URL, c.Top)
			if !strings.Contains(ni, tc.ext) {
				t.Fatalf("narinfo of %s: want a NAR ending in %q:\n%s", c.Top, tc.ext, ni)
			}
			substituteFresh(t, n, tc.srv.URL, tc.srv.PublicKey, c)
		})
	}
}

// TestPushKeepsUploaderSignatures: the narinfo push sends carries the signatures the paths have
// in the local store. A server that accepts only paths signed by the builder's key refuses the
// unsigned closure (400, naming the path, no narinfo committed) and accepts it once signed.
func TestPushKeepsUploaderSignatures(t *testing.T) {
	requireNix(t)
	dir := t.TempDir()
	sk, pk := filepath.Join(dir, "builder.sk"), filepath.Join(dir, "builder.pk")
	if out, err := exec.Command("nix-store", "--generate-binary-cache-key", "builder.test-1", sk, pk).CombinedOutput(); err != nil {
		t.Fatalf("generate key: %v\n%s", err, out)
	}
	srv := startServer(t, t.TempDir(), "--require-upload-sigs", strings.TrimSpace(readFile(t, pk)))
	n := newNixClient(t, hostOf(srv.URL), srv.Token)
	c := buildClosure(t, n, 2048)
	tok := tokenFile(t, srv.Token)

	out, err := runPush(t, "--url", srv.URL, "--token-file", tok, c.Top)
	if err == nil || !strings.Contains(out, "failed: "+c.Dep) || !strings.Contains(out, "400") ||
		!strings.Contains(out, "failed: "+c.Top) || !strings.Contains(out, "2 of 2 paths not pushed") {
		t.Fatalf("push of unsigned paths: %v, want both refused and named:\n%s", err, out)
	}
	requireAbsent(t, srv.URL, c.Top, c.Dep)

	n.run("nix", "store", "sign", "--key-file", sk, "-r", c.Top)
	mustPush(t, "--url", srv.URL, "--token-file", tok, c.Top)
	if ni := getNarInfo(t, srv.URL, c.Top); !strings.Contains(ni, "Sig: builder.test-1:") {
		t.Fatalf("narinfo lost the builder's signature:\n%s", ni)
	}
	substituteFresh(t, n, srv.URL, srv.PublicKey, c)
}

// TestPushBadInput: bad arguments and tokens fail with an error naming what is wrong, and leave
// nothing on the server.
func TestPushBadInput(t *testing.T) {
	requireNix(t)
	srv := startServer(t, t.TempDir())
	n := newNixClient(t, hostOf(srv.URL), srv.Token)
	c := buildClosure(t, n, 1024)
	good := tokenFile(t, srv.Token)
	notStore := filepath.Join(t.TempDir(), "file")
	os.WriteFile(notStore, []byte("x"), 0o644)
	missingPath := "/nix/store/00000000000000000000000000000000-cached-push-missing"
	closed := "http://127.0.0.1:1" // nothing listens on port 1

	for _, tc := range []struct {
		name string
		args []string
		want []string
	}{
		{"path not in the store", []string{"--url", srv.URL, "--token-file", good, missingPath},
			[]string{"not in the local store", missingPath}},
		{"path outside the store", []string{"--url", srv.URL, "--token-file", good, notStore},
			[]string{notStore, "is not in /nix/store"}},
		{"missing token file", []string{"--url", srv.URL, "--token-file", "/nonexistent/token", c.Top},
			[]string{"--token-file", "/nonexistent/token"}},
		{"empty token file", []string{"--url", srv.URL, "--token-file", tokenFile(t, " \n"), c.Top},
			[]string{"--token-file", "is empty"}},
		{"netrc without the host", []string{"--url", srv.URL, "--token-file", tokenFile(t, "machine example.org password x\n"), c.Top},
			[]string{"--token-file", `"machine 127.0.0.1"`}},
		{"wrong token", []string{"--url", srv.URL, "--token-file", tokenFile(t, "not-a-token"), c.Top},
			[]string{"401", "token not accepted", "needs write scope"}},
		{"wrong token in netrc", []string{"--url", srv.URL, "--token-file", tokenFile(t, "machine 127.0.0.1 login x password nope\n"), c.Top},
			[]string{"401", "token not accepted"}},
		{"server down", []string{"--url", closed, "--token-file", good, c.Top},
			[]string{closed, "not reachable", "connection refused"}},
		{"bad URL", []string{"--url", "ftp://127.0.0.1/", "--token-file", good, c.Top},
			[]string{"--url", "ftp://127.0.0.1/"}},
		{"bad compression", []string{"--url", srv.URL, "--token-file", good, "--compression", "bzip2", c.Top},
			[]string{"--compression", "bzip2"}},
		{"no URL", []string{"--token-file", good, c.Top}, []string{"--url", "CACHED_URL", "--enqueue"}},
		{"no path", []string{"--url", srv.URL, "--token-file", good}, []string{"no path given"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			out, err := runPush(t, tc.args...)
			if err == nil {
				t.Fatalf("push succeeded, want an error:\n%s", out)
			}
			for _, w := range tc.want {
				if !strings.Contains(out, w) {
					t.Errorf("output lacks %q:\n%s", w, out)
				}
			}
			if strings.Contains(out, "panic") {
				t.Errorf("push panicked:\n%s", out)
			}
		})
	}
	requireAbsent(t, srv.URL, c.Top, c.Dep)
	if got := putRequests(t, srv.URL, "2", ""); got != 0 {
		t.Fatalf("%d PUTs succeeded, want none", got)
	}
}

// TestPushServerRefuses: a NAR the server refuses (over --max-upload-size) fails its path, with
// the server's reason, and the paths depending on it; its narinfo is never sent, while its
// reference is pushed completely.
func TestPushServerRefuses(t *testing.T) {
	requireNix(t)
	srv := startServer(t, t.TempDir(), "--max-upload-size", "64KiB")
	n := newNixClient(t, hostOf(srv.URL), srv.Token)
	c := buildClosure(t, n, 1<<20) // random bytes: about 1 MiB compressed too
	out, err := runPush(t, "--url", srv.URL, "--token-file", tokenFile(t, srv.Token), c.Top)
	if err == nil {
		t.Fatalf("push succeeded, want the top path refused:\n%s", out)
	}
	for _, w := range []string{"failed: " + c.Top, "413", "--max-upload-size", "pushed 1 paths", "1 of 2 paths not pushed"} {
		if !strings.Contains(out, w) {
			t.Errorf("output lacks %q:\n%s", w, out)
		}
	}
	requireAbsent(t, srv.URL, c.Top)
	if got := httpStatus(t, http.MethodHead, narInfoURL(srv.URL, c.Dep)); got != http.StatusOK {
		t.Errorf("HEAD narinfo of the reference %s: %d, want 200", c.Dep, got)
	}
}

// TestPushCorruptStorePath: a store path whose contents no longer match the NarHash the store
// recorded (same size, other bytes) is not uploaded, in any compression; the path and its
// dependents are named as failed, and the server has neither their narinfos nor, when the NAR
// is streamed (none), a NAR under the recorded hash.
func TestPushCorruptStorePath(t *testing.T) {
	requireNix(t)
	srv := startServer(t, t.TempDir())
	n := newNixClient(t, hostOf(srv.URL), srv.Token)
	c := buildClosure(t, n, 1024)
	orig, err := os.ReadFile(c.Dep)
	if err != nil {
		t.Fatal(err)
	}
	corrupt := []byte(strings.Repeat("X", len(orig)))
	if err := os.WriteFile(c.Dep, corrupt, 0o444); err != nil {
		t.Skipf("cannot write to the store path %s to corrupt it (needs root): %v", c.Dep, err)
	}
	t.Cleanup(func() { os.WriteFile(c.Dep, orig, 0o444) })
	// The NAR of a regular file: its recorded hash names the uncompressed upload.
	narHash := nixbase32.EncodeToString(sha256Of(narOfFile(orig)))

	for _, comp := range []string{"zstd", "none"} {
		t.Run(comp, func(t *testing.T) {
			out, err := runPush(t, "--url", srv.URL, "--token-file", tokenFile(t, srv.Token), "--compression", comp, c.Top)
			if err == nil {
				t.Fatalf("push of a corrupt path succeeded:\n%s", out)
			}
			for _, w := range []string{"failed: " + c.Dep, "recorded NarHash", "failed: " + c.Top, "depends on " + c.Dep} {
				if !strings.Contains(out, w) {
					t.Errorf("output lacks %q:\n%s", w, out)
				}
			}
			requireAbsent(t, srv.URL, c.Top, c.Dep)
			if got := httpStatus(t, http.MethodHead, srv.URL+"/nar/"+narHash+".nar"); got != http.StatusNotFound {
				t.Errorf("HEAD of the NAR under its recorded hash: %d, want 404", got)
			}
			// The dependent's NAR may have gone up in parallel; no narinfo may have.
			if got := putRequests(t, srv.URL, "", "/{file}"); got != 0 {
				t.Errorf("%d narinfo PUTs, want none", got)
			}
		})
	}
}

func sha256Of(b []byte) []byte {
	s := sha256.Sum256(b)
	return s[:]
}

// narOfFile is the NAR of a regular, non-executable file.
func narOfFile(contents []byte) []byte {
	var b []byte
	str := func(s []byte) {
		var l [8]byte
		for i := range 8 {
			l[i] = byte(uint64(len(s)) >> (8 * i))
		}
		b = append(b, l[:]...)
		b = append(b, s...)
		b = append(b, make([]byte, (8-len(s)%8)%8)...)
	}
	for _, s := range []string{"nix-archive-1", "(", "type", "regular", "contents"} {
		str([]byte(s))
	}
	str(contents)
	str([]byte(")"))
	return b
}
