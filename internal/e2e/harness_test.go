package e2e

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

var (
	binDir    string // holds the cached binary built for this test run
	cachedBin string
)

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "cached-e2e-bin-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	binDir = dir
	cachedBin = filepath.Join(dir, "cached")
	build := exec.Command("go", "build", "-o", cachedBin, "github.com/cached-dev/cached/cmd/cached")
	build.Stdout, build.Stderr = os.Stderr, os.Stderr
	if err := build.Run(); err != nil {
		fmt.Fprintln(os.Stderr, "building cached:", err)
		os.Exit(1)
	}
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

// requireNix fails the test under CI=true when nix is missing and skips it otherwise.
func requireNix(t *testing.T) {
	t.Helper()
	if _, err := exec.LookPath("nix"); err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatal("nix is not installed (apt-get install -y nix-bin); CI=true makes this a failure")
		}
		t.Skip("nix is not installed (apt-get install -y nix-bin); under CI=true this fails")
	}
}

// serverProc is a running `cached serve`.
type serverProc struct {
	t         *testing.T
	data      string
	URL       string
	PublicKey string
	Token     string
	cmd       *exec.Cmd
	stderr    *syncBuffer
	done      chan struct{}
}

type syncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// startServer starts cached on data (a directory that may hold an earlier run's data) on a free
// port, and waits until it answers. It is stopped at the end of the test.
func startServer(t *testing.T, data string, args ...string) *serverProc {
	t.Helper()
	cmd := exec.Command(cachedBin, append([]string{"serve", "--data", data, "--listen", "127.0.0.1:0"}, args...)...)
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	p := &serverProc{t: t, data: data, cmd: cmd, stderr: &syncBuffer{}, done: make(chan struct{})}
	cmd.Stderr = p.stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { cmd.Wait(); close(p.done) }()
	t.Cleanup(func() {
		p.Stop()
		if t.Failed() {
			t.Logf("cached log (%s):\n%s", data, tail(p.stderr.String(), 60))
		}
	})
	urlCh := make(chan string, 1)
	go func() {
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			line := sc.Text()
			if rest, ok := strings.CutPrefix(line, "cached is serving "); ok {
				if i := strings.LastIndex(rest, " at "); i >= 0 {
					urlCh <- rest[i+4:]
				}
			}
		}
		io.Copy(io.Discard, stdout)
	}()
	select {
	case p.URL = <-urlCh:
	case <-p.done:
		t.Fatalf("cached exited at start:\n%s", p.stderr.String())
	case <-time.After(60 * time.Second):
		t.Fatalf("cached did not start within 60s:\n%s", p.stderr.String())
	}
	if pk, err := os.ReadFile(filepath.Join(data, "public-key")); err == nil {
		p.PublicKey = strings.TrimSpace(string(pk))
	}
	if tok, err := os.ReadFile(filepath.Join(data, "upload-tokens")); err == nil {
		p.Token = strings.TrimSpace(strings.SplitN(string(tok), "\n", 2)[0])
	}
	resp, err := http.Get(p.URL + "/nix-cache-info")
	if err != nil {
		t.Fatalf("cached started but does not answer: %v", err)
	}
	resp.Body.Close()
	return p
}

// Stop sends SIGTERM and waits for a clean exit.
func (p *serverProc) Stop() {
	select {
	case <-p.done:
		return
	default:
	}
	p.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-p.done:
	case <-time.After(90 * time.Second):
		p.cmd.Process.Kill()
		<-p.done
		p.t.Errorf("cached did not stop within 90s of SIGTERM")
	}
}

// Kill stops the server with SIGKILL, as a crash would.
func (p *serverProc) Kill() {
	p.cmd.Process.Kill()
	<-p.done
}

func readFile(t *testing.T, path string) string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

func tail(s string, lines int) string {
	parts := strings.Split(s, "\n")
	if len(parts) > lines {
		parts = parts[len(parts)-lines:]
	}
	return strings.Join(parts, "\n")
}

// nixClient runs nix commands with a private configuration: no daemon, no sandbox, no default
// substituter, no narinfo caching between commands, and a netrc with the given token.
type nixClient struct {
	t    *testing.T
	env  []string
	work string
	// root, when set, is the root of a chroot holding another nix version (clients_test.go): its
	// commands run inside it, with its own /nix/store, and work is bind-mounted at the same path
	// inside, so that files under work mean the same thing to both.
	root string
}

// newNixClient is a client of the host's nix (Nix 2.8); newNixClientOf picks the version.
func newNixClient(t *testing.T, host, token string) *nixClient {
	t.Helper()
	return newNixClientOf(t, hostNix, host, token)
}

func newNixClientOf(t *testing.T, v nixVersion, host, token string) *nixClient {
	t.Helper()
	v.require(t)
	work := t.TempDir()
	if v.root != "" {
		bindIntoChroot(t, v.root, work)
	}
	netrc := filepath.Join(work, "netrc")
	content := ""
	if token != "" {
		content = fmt.Sprintf("machine %s login cached password %s\n", host, token)
	}
	if err := os.WriteFile(netrc, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
	conf := strings.Join([]string{
		"experimental-features = nix-command",
		"build-users-group =",
		"sandbox = false",
		"substituters =",
		"netrc-file = " + netrc,
		"narinfo-cache-negative-ttl = 0",
		"narinfo-cache-positive-ttl = 0",
		"connect-timeout = 10",
	}, "\n")
	// Nix 2.8 keeps its narinfo cache in $XDG_CACHE_HOME/nix (it ignores NIX_USER_CACHE_DIR,
	// which newer versions read); a private one keeps test servers that reuse a port apart, and
	// concurrent nix processes from contending for one SQLite file.
	env := append(os.Environ(), "NIX_CONFIG="+conf,
		"NIX_USER_CACHE_DIR="+filepath.Join(work, "user-cache"),
		"XDG_CACHE_HOME="+filepath.Join(work, "xdg-cache"))
	return &nixClient{t: t, env: env, work: work, root: v.root}
}

// hostPath is where the client's store path p is on this machine.
func (n *nixClient) hostPath(p string) string { return n.root + p }

// tempDir is a new directory that the client's nix sees at the same path.
func (n *nixClient) tempDir() string {
	n.t.Helper()
	dir, err := os.MkdirTemp(n.work, "tmp-")
	if err != nil {
		n.t.Fatal(err)
	}
	return dir
}

// freshStore is a directory for a new, empty nix store the client can write, made writable
// again at the end of t (nix makes store paths read-only).
func (n *nixClient) freshStore(t *testing.T) string {
	t.Helper()
	dir := n.tempDir()
	t.Cleanup(func() { exec.Command("chmod", "-R", "u+w", dir).Run() })
	return filepath.Join(dir, "store")
}

// run runs a nix command and returns its stdout; it fails the test on error.
func (n *nixClient) run(args ...string) string {
	n.t.Helper()
	out, err := n.try(args...)
	if err != nil {
		n.t.Fatalf("%s: %v", strings.Join(args, " "), err)
	}
	return out
}

// try runs a nix command and returns stdout, or an error carrying stderr.
func (n *nixClient) try(args ...string) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	var cmd *exec.Cmd
	if n.root == "" {
		cmd = exec.CommandContext(ctx, args[0], args[1:]...)
		cmd.Env = n.env
	} else {
		cmd = exec.CommandContext(ctx, "chroot", append(append([]string{n.root}, chrootEnv(n.env)...), args...)...)
	}
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		return stdout.String(), fmt.Errorf("%w\n%s", err, tail(stderr.String(), 15))
	}
	return stdout.String(), nil
}

// closure describes a built test closure.
type closure struct {
	Top string // the top store path
	Dep string // its dependency
}

// buildClosure builds, offline with /bin/sh as builder, a closure with a reference, an
// executable, a symlink, an empty file, an empty directory and a file of bigBytes random bytes.
// seed makes its store paths unique to this call.
func buildClosure(t *testing.T, n *nixClient, bigBytes int64) closure {
	t.Helper()
	seed := fmt.Sprintf("%d", time.Now().UnixNano())
	expr := fmt.Sprintf(`let
  sh = "/bin/sh";
  dep = builtins.derivation { name = "e2e-dep"; system = builtins.currentSystem; builder = sh;
    args = [ "-c" "echo dep-%[1]s > $out" ]; };
in builtins.derivation { name = "e2e-top"; system = builtins.currentSystem; builder = sh;
  args = [ "-c" ''
    /bin/mkdir -p $out/bin $out/empty-dir
    echo ${dep} > $out/ref
    printf '#!/bin/sh\necho hi\n' > $out/bin/hi; /bin/chmod +x $out/bin/hi
    /bin/ln -s ref $out/link
    : > $out/empty
    /usr/bin/head -c %[2]d /dev/urandom > $out/big.bin
    echo %[1]s > $out/seed
  '' ]; }
`, seed, bigBytes)
	file := filepath.Join(n.work, "closure-"+seed+".nix")
	if err := os.WriteFile(file, []byte(expr), 0o644); err != nil {
		t.Fatal(err)
	}
	top := strings.TrimSpace(n.run("nix-build", "--no-out-link", file))
	refs := strings.Fields(n.run("nix-store", "-q", "--references", top))
	if len(refs) != 1 {
		t.Fatalf("closure %s: want 1 reference, got %v", top, refs)
	}
	return closure{Top: top, Dep: refs[0]}
}

// substituteFresh realises path from the cache into a new store with signatures required and
// only pk trusted, and checks the result is byte-identical to the local store's copy.
func substituteFresh(t *testing.T, n *nixClient, url, pk string, c closure) {
	t.Helper()
	substituteFreshFrom(t, n, url, pk, c, n)
}

// substituteFreshFrom is substituteFresh for a closure that origin built: n substitutes it and
// the result is compared with origin's store (the two may be different nix versions).
func substituteFreshFrom(t *testing.T, n *nixClient, url, pk string, c closure, origin *nixClient) {
	t.Helper()
	fresh := n.freshStore(t)
	n.run("nix-store", "--store", fresh, "--realise", c.Top,
		"--option", "substituters", url,
		"--option", "trusted-public-keys", pk,
		"--option", "require-sigs", "true")
	for _, p := range []string{c.Top, c.Dep} {
		out, err := exec.Command("diff", "-r", "--no-dereference", fresh+p, origin.hostPath(p)).CombinedOutput()
		if err != nil {
			t.Fatalf("substituted %s differs from the original: %v\n%s", p, err, tail(string(out), 10))
		}
	}
}

func hostOf(url string) string {
	h := strings.TrimPrefix(url, "http://")
	if i := strings.LastIndex(h, ":"); i >= 0 {
		h = h[:i]
	}
	return h
}

var execCommand = exec.Command
