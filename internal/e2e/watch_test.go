package e2e

import (
	"context"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"
)

// watchStore is a nix store of its own (a chroot store: nix --store ROOT) that a test builds
// into, so that what a watcher sees is what the test built and nothing that other tests build
// in /nix/store.
type watchStore struct {
	t    *testing.T
	n    *nixClient
	root string // the store is ROOT/nix/store
	env  []string
}

func newWatchStore(t *testing.T, n *nixClient, extraConf ...string) *watchStore {
	t.Helper()
	root := filepath.Join(n.tempDir(), "root")
	t.Cleanup(func() { exec.Command("chmod", "-R", "u+w", root).Run() })
	env := slices.Clone(n.env)
	for i, e := range env {
		if conf, ok := strings.CutPrefix(e, "NIX_CONFIG="); ok {
			// A chroot store builds in a sandbox that sees only what it is given: the
			// builders are /bin/sh and coreutils of this machine.
			env[i] = "NIX_CONFIG=" + conf + "\nextra-sandbox-paths = /bin /usr /lib /lib64\n" + strings.Join(extraConf, "\n")
		}
	}
	return &watchStore{t: t, n: n, root: root, env: env}
}

// build builds a new path that refers to a new dependency, and returns both: top, dep.
func (s *watchStore) build(tag string) (string, string) {
	s.t.Helper()
	seed := fmt.Sprintf("%s-%d", tag, time.Now().UnixNano())
	expr := fmt.Sprintf(`let
  dep = builtins.derivation { name = "watch-dep"; system = builtins.currentSystem; builder = "/bin/sh";
    args = [ "-c" "echo dep-%[1]s > $out" ]; };
in builtins.derivation { name = "watch-top"; system = builtins.currentSystem; builder = "/bin/sh";
  args = [ "-c" "/bin/mkdir $out; echo ${dep} > $out/ref; /usr/bin/head -c 100000 /dev/urandom > $out/data" ]; }
`, seed)
	file := filepath.Join(s.n.work, "watch-"+seed+".nix")
	if err := os.WriteFile(file, []byte(expr), 0o644); err != nil {
		s.t.Fatal(err)
	}
	top := strings.TrimSpace(s.nix("nix-build", "--no-out-link", "--store", s.root, file))
	refs := strings.Fields(s.nix("nix-store", "--store", s.root, "-q", "--references", top))
	if len(refs) != 1 {
		s.t.Fatalf("%s: want 1 reference, got %v", top, refs)
	}
	return top, refs[0]
}

func (s *watchStore) nix(args ...string) string {
	s.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, args[0], args[1:]...)
	cmd.Env = s.env
	var stderr strings.Builder
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		s.t.Fatalf("%s: %v\n%s", strings.Join(args, " "), err, tail(stderr.String(), 15))
	}
	return string(out)
}

// watcherProc is a running `cached watch-store`.
type watcherProc struct {
	t      *testing.T
	cmd    *exec.Cmd
	stderr *syncBuffer
	done   chan struct{}
}

// startWatcher runs cached watch-store on s with the queue in queueDir.
func startWatcher(t *testing.T, s *watchStore, url, tokenFile, queueDir string, args ...string) *watcherProc {
	t.Helper()
	cmd := exec.Command(cachedBin, append([]string{"watch-store", "--url", url, "--token-file", tokenFile,
		"--queue-dir", queueDir, "--store-root", s.root, "--max-backoff", "2s"}, args...)...)
	cmd.Env = s.env
	w := &watcherProc{t: t, cmd: cmd, stderr: &syncBuffer{}, done: make(chan struct{})}
	cmd.Stderr = w.stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { cmd.Wait(); close(w.done) }()
	t.Cleanup(func() {
		w.Kill()
		if t.Failed() {
			t.Logf("watch-store log:\n%s", tail(w.stderr.String(), 40))
		}
	})
	w.waitLog("watching the store", 60*time.Second)
	return w
}

// waitLog waits until the watcher's log contains s.
func (w *watcherProc) waitLog(s string, timeout time.Duration) {
	w.t.Helper()
	deadline := time.Now().Add(timeout)
	for !strings.Contains(w.stderr.String(), s) {
		select {
		case <-w.done:
			w.t.Fatalf("watch-store exited; want %q in its log:\n%s", s, w.stderr.String())
		default:
		}
		if time.Now().After(deadline) {
			w.t.Fatalf("watch-store: no %q in its log within %s:\n%s", s, timeout, tail(w.stderr.String(), 30))
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// Kill stops the watcher with SIGKILL.
func (w *watcherProc) Kill() {
	w.cmd.Process.Kill()
	<-w.done
}

// waitServed waits until the server serves a narinfo for each path, and returns how long the
// last one took.
func waitServed(t *testing.T, base string, timeout time.Duration, paths ...string) time.Duration {
	t.Helper()
	start := time.Now()
	for _, p := range paths {
		for httpStatus(t, http.MethodHead, narInfoURL(base, p)) != http.StatusOK {
			if time.Since(start) > timeout {
				t.Fatalf("%s not served within %s", p, timeout)
			}
			time.Sleep(50 * time.Millisecond)
		}
	}
	return time.Since(start)
}

// queued lists the store paths in a watch-store queue directory.
func queued(t *testing.T, dir string) []string {
	t.Helper()
	entries, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, e := range entries {
		if e.Type().IsRegular() && !strings.HasPrefix(e.Name(), ".") {
			out = append(out, "/nix/store/"+e.Name())
		}
	}
	return out
}

// waitQueueEmpty waits until the queue holds no path: a narinfo is served a little before the
// watcher takes its path out of the queue.
func waitQueueEmpty(t *testing.T, dir string, timeout time.Duration) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for q := queued(t, dir); len(q) > 0; q = queued(t, dir) {
		if time.Now().After(deadline) {
			t.Fatalf("queue still holds %v after %s", q, timeout)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// TestWatchStoreBuildIsServed: a path built while watch-store runs is served by the cache,
// with its dependency, within seconds, and substitutes into a fresh store with signatures
// required; the queue is empty afterwards, and paths that were in the store before the
// watcher's first start are not pushed. A second watch-store on the same queue is refused.
func TestWatchStoreBuildIsServed(t *testing.T) {
	requireNix(t)
	srv := startServer(t, t.TempDir())
	n := newNixClient(t, hostOf(srv.URL), srv.Token)
	s := newWatchStore(t, n)
	before, _ := s.build("before")
	qdir := filepath.Join(t.TempDir(), "queue")
	w := startWatcher(t, s, srv.URL, tokenFile(t, srv.Token), qdir)
	second := exec.Command(cachedBin, "watch-store", "--url", srv.URL, "--token-file", tokenFile(t, srv.Token),
		"--queue-dir", qdir, "--store-root", s.root)
	second.Env = s.env
	if out, err := second.CombinedOutput(); err == nil || !strings.Contains(string(out), "another cached watch-store pushes from this queue") {
		t.Fatalf("a second watch-store on the same queue: %v, want it refused:\n%s", err, out)
	}

	for i := range 2 {
		top, dep := s.build(fmt.Sprint("during-", i))
		took := waitServed(t, srv.URL, 20*time.Second, top, dep)
		t.Logf("built → served: %s", took.Round(time.Millisecond))
	}
	if got := httpStatus(t, http.MethodHead, narInfoURL(srv.URL, before)); got != http.StatusNotFound {
		t.Errorf("a path built before the watcher's first start was pushed (HEAD %d)", got)
	}
	waitQueueEmpty(t, qdir, 10*time.Second)
	top, _ := s.build("last")
	waitServed(t, srv.URL, 20*time.Second, top)
	w.waitLog("pushed", 10*time.Second)
	fresh := n.freshStore(t)
	n.run("nix-store", "--store", fresh, "--realise", top,
		"--option", "substituters", srv.URL,
		"--option", "trusted-public-keys", srv.PublicKey,
		"--option", "require-sigs", "true")
	if out, err := exec.Command("diff", "-r", fresh+top, s.root+top).CombinedOutput(); err != nil {
		t.Fatalf("substituted %s differs: %v\n%s", top, err, out)
	}
}

// TestWatchStoreKillWithBacklog: with the server down, built paths wait in the queue; the
// watcher is killed with SIGKILL; once the server and the watcher are back (the server on
// another port), every one of them is pushed. Paths built while the watcher was dead are found
// by its start-up scan.
func TestWatchStoreKillWithBacklog(t *testing.T) {
	requireNix(t)
	data := t.TempDir()
	srv := startServer(t, data)
	n := newNixClient(t, hostOf(srv.URL), srv.Token)
	s := newWatchStore(t, n)
	qdir := filepath.Join(t.TempDir(), "queue")
	tok := tokenFile(t, srv.Token)
	w := startWatcher(t, s, srv.URL, tok, qdir)
	srv.Stop()

	var want []string
	for i := range 3 {
		top, dep := s.build(fmt.Sprint("backlog-", i))
		want = append(want, top, dep)
	}
	deadline := time.Now().Add(30 * time.Second)
	for len(queued(t, qdir)) < len(want) {
		if time.Now().After(deadline) {
			t.Fatalf("queue holds %v, want the %d built paths", queued(t, qdir), len(want))
		}
		time.Sleep(50 * time.Millisecond)
	}
	w.waitLog("push failed; the paths stay queued", 30*time.Second)
	w.Kill()
	// Built while no watcher runs: no event will tell of it.
	top, dep := s.build("while-dead")
	want = append(want, top, dep)

	srv2 := startServer(t, data)
	startWatcher(t, s, srv2.URL, tok, qdir)
	took := waitServed(t, srv2.URL, 60*time.Second, want...)
	t.Logf("backlog of %d paths served %s after the restart", len(want), took.Round(time.Millisecond))
	waitQueueEmpty(t, qdir, 10*time.Second)
}

// TestWatchStoreBadToken: a token the server refuses is logged as such, nothing is pushed and
// the path stays queued; once the token file holds a good token (no restart), it is pushed.
// A token file that is missing or empty stops watch-store at start with an error naming it.
func TestWatchStoreBadToken(t *testing.T) {
	requireNix(t)
	srv := startServer(t, t.TempDir())
	n := newNixClient(t, hostOf(srv.URL), srv.Token)
	s := newWatchStore(t, n)
	qdir := filepath.Join(t.TempDir(), "queue")
	tok := tokenFile(t, "not-a-token-the-server-knows")
	w := startWatcher(t, s, srv.URL, tok, qdir)
	top, dep := s.build("bad-token")
	w.waitLog("the server refused the token", 30*time.Second)
	if !strings.Contains(w.stderr.String(), tok) {
		t.Errorf("the refusal does not name the token file %s:\n%s", tok, w.stderr.String())
	}
	// Both paths wait in the queue (the second may be queued after the first refusal).
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(50 * time.Millisecond) {
		q := queued(t, qdir)
		if slices.Contains(q, top) && slices.Contains(q, dep) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("queue %v lacks %s or %s after the refusal", q, top, dep)
		}
	}
	requireAbsent(t, srv.URL, top, dep)
	if err := os.WriteFile(tok, []byte(srv.Token+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	waitServed(t, srv.URL, 30*time.Second, top, dep)

	for _, tc := range []struct{ name, file, want string }{
		{"missing", filepath.Join(t.TempDir(), "nope"), "no such file"},
		{"empty", tokenFile(t, "\n"), "is empty"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cmd := exec.Command(cachedBin, "watch-store", "--url", srv.URL, "--token-file", tc.file,
				"--queue-dir", filepath.Join(t.TempDir(), "q"), "--store-root", s.root)
			cmd.Env = s.env
			out, err := cmd.CombinedOutput()
			if err == nil || !strings.Contains(string(out), tc.want) || !strings.Contains(string(out), "--token-file") {
				t.Fatalf("want a failure naming --token-file and %q; got %v:\n%s", tc.want, err, out)
			}
		})
	}
}

// TestPushEnqueueAsPostBuildHook: nix runs `cached push --enqueue` as its post-build-hook; the
// hook only queues the outputs (it returns before anything is pushed), and the running watcher
// pushes them. Bad arguments to --enqueue fail naming the argument, and queue nothing.
func TestPushEnqueueAsPostBuildHook(t *testing.T) {
	requireNix(t)
	srv := startServer(t, t.TempDir())
	n := newNixClient(t, hostOf(srv.URL), srv.Token)
	qdir := filepath.Join(t.TempDir(), "queue")
	hook := filepath.Join(t.TempDir(), "hook.sh")
	s := newWatchStore(t, n, "post-build-hook = "+hook)
	// Nix 2.8 leaves OUT_PATHS empty (NixOS/nix#6446): the derivation stands for its outputs.
	script := fmt.Sprintf("#!/bin/sh\nset -e\nexec %s push --enqueue --queue-dir %s --store-root %s $OUT_PATHS $DRV_PATH\n", cachedBin, qdir, s.root)
	if err := os.WriteFile(hook, []byte(script), 0o755); err != nil {
		t.Fatal(err)
	}
	// No watcher runs yet, and its first start takes the paths in the store as old: what it
	// pushes, the hook queued.
	top, dep := s.build("hooked")
	q := queued(t, qdir)
	if !slices.Contains(q, top) {
		t.Fatalf("after the build, the queue holds %v; want %s, queued by the hook", q, top)
	}
	requireAbsent(t, srv.URL, top, dep)
	startWatcher(t, s, srv.URL, tokenFile(t, srv.Token), qdir)
	waitServed(t, srv.URL, 30*time.Second, top, dep)
	waitQueueEmpty(t, qdir, 10*time.Second)

	for _, tc := range []struct {
		name string
		args []string
		want string
	}{
		{"not a store path", []string{"/etc/passwd"}, "/etc/passwd"},
		{"no queue dir", []string{"--queue-dir", "/proc/nope", "/nix/store/00000000000000000000000000000000-x"}, "/proc/nope"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			out, err := exec.Command(cachedBin, append([]string{"push", "--enqueue", "--queue-dir", qdir}, tc.args...)...).CombinedOutput()
			if err == nil || !strings.Contains(string(out), tc.want) {
				t.Fatalf("want a failure naming %q; got %v:\n%s", tc.want, err, out)
			}
		})
	}
	if q := queued(t, qdir); len(q) != 0 {
		t.Errorf("queue holds %v after bad --enqueue calls", q)
	}
}

// TestWatchStoreSkipUpstream: a queued path that a --skip-upstream cache serves (as if it had
// been substituted from there) is dropped from the queue, not pushed; the others are pushed. A
// second cached stands for the upstream cache.
func TestWatchStoreSkipUpstream(t *testing.T) {
	requireNix(t)
	srv := startServer(t, t.TempDir())
	upstream := startServer(t, t.TempDir())
	n := newNixClient(t, hostOf(srv.URL), srv.Token)
	s := newWatchStore(t, n)
	fromUpstream, _ := s.build("upstream")
	ours, ourDep := s.build("ours")
	out, err := exec.Command(cachedBin, "push", "--progress", "lines", "--url", upstream.URL, "--token-file", tokenFile(t, upstream.Token),
		"--store-root", s.root, fromUpstream).CombinedOutput()
	if err != nil {
		t.Fatalf("push to the upstream: %v\n%s", err, out)
	}
	qdir := filepath.Join(t.TempDir(), "queue")
	if out, err := exec.Command(cachedBin, "push", "--enqueue", "--queue-dir", qdir, fromUpstream, ours).CombinedOutput(); err != nil {
		t.Fatalf("push --enqueue: %v\n%s", err, out)
	}
	w := startWatcher(t, s, srv.URL, tokenFile(t, srv.Token), qdir, "--skip-upstream", upstream.URL)
	waitServed(t, srv.URL, 30*time.Second, ours, ourDep)
	w.waitLog("the upstream cache has it", 10*time.Second)
	requireAbsent(t, srv.URL, fromUpstream)
	waitQueueEmpty(t, qdir, 10*time.Second)
	bad := exec.Command(cachedBin, "watch-store", "--url", srv.URL, "--token-file", tokenFile(t, srv.Token),
		"--queue-dir", filepath.Join(t.TempDir(), "q"), "--store-root", s.root, "--skip-upstream", "cache.nixos.org")
	bad.Env = s.env
	if out, err := bad.CombinedOutput(); err == nil || !strings.Contains(string(out), `--skip-upstream "cache.nixos.org"`) {
		t.Errorf("--skip-upstream without a scheme: %v, want an error naming it:\n%s", err, out)
	}
	bad = exec.Command(cachedBin, "watch-store", "--url", "ftp://127.0.0.1/", "--token-file", tokenFile(t, srv.Token),
		"--queue-dir", filepath.Join(t.TempDir(), "q"), "--store-root", s.root)
	bad.Env = s.env
	if out, err := bad.CombinedOutput(); err == nil || !strings.Contains(string(out), `--url "ftp://127.0.0.1/"`) {
		t.Errorf("--url ftp://: %v, want an error naming it at start:\n%s", err, out)
	}
}

// TestWatchStoreRefusedForGood: a path the server refuses with a 400 (unsigned, where the
// server requires builders' signatures) leaves the queue for failed/, with the server's reason
// in its file, and is not retried; a path pushed later still goes through once signed.
func TestWatchStoreRefusedForGood(t *testing.T) {
	requireNix(t)
	dir := t.TempDir()
	sk, pk := filepath.Join(dir, "builder.sk"), filepath.Join(dir, "builder.pk")
	if out, err := exec.Command("nix-store", "--generate-binary-cache-key", "builder.test-1", sk, pk).CombinedOutput(); err != nil {
		t.Fatalf("generate key: %v\n%s", err, out)
	}
	srv := startServer(t, t.TempDir(), "--require-upload-sigs", strings.TrimSpace(readFile(t, pk)))
	n := newNixClient(t, hostOf(srv.URL), srv.Token)
	s := newWatchStore(t, n)
	qdir := filepath.Join(t.TempDir(), "queue")
	w := startWatcher(t, s, srv.URL, tokenFile(t, srv.Token), qdir)
	top, dep := s.build("unsigned")
	w.waitLog("moved to failed/", 30*time.Second)
	topFailed := filepath.Join(qdir, "failed", filepath.Base(top))
	for deadline := time.Now().Add(30 * time.Second); ; time.Sleep(50 * time.Millisecond) {
		if _, err := os.Stat(topFailed); err == nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s not in failed/ within 30 s; queue: %v", top, queued(t, qdir))
		}
	}
	requireAbsent(t, srv.URL, top, dep)
	waitQueueEmpty(t, qdir, 10*time.Second)
	why, err := os.ReadFile(topFailed)
	if err != nil || !strings.Contains(string(why), "400") {
		t.Fatalf("failed/ entry of %s: %v %q, want the server's 400", top, err, why)
	}

	// Signed, and moved back into the queue: pushed.
	s.nix("nix", "store", "sign", "--store", s.root, "--key-file", sk, "-r", top)
	if err := os.Rename(topFailed, filepath.Join(qdir, filepath.Base(top))); err != nil {
		t.Fatal(err)
	}
	waitServed(t, srv.URL, 30*time.Second, top, dep)
}
