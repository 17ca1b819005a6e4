package e2e

import (
	"bufio"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// startConfigured starts `cached serve --config file` with no other flag and no CACHED_*
// variable, so that everything, listen address and data directory included, comes from the file.
func startConfigured(t *testing.T, file, data string) *serverProc {
	t.Helper()
	cmd := exec.Command(cachedBin, "serve", "--config", file)
	cmd.Env = envWithoutCached()
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
			t.Logf("cached log:\n%s", tail(p.stderr.String(), 60))
		}
	})
	urlCh := make(chan string, 1)
	go func() {
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			if rest, ok := strings.CutPrefix(sc.Text(), "cached is serving "); ok {
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
	p.PublicKey = strings.TrimSpace(readFile(t, filepath.Join(data, "public-key")))
	p.Token = strings.TrimSpace(strings.SplitN(readFile(t, filepath.Join(data, "upload-tokens")), "\n", 2)[0])
	return p
}

func envWithoutCached() []string {
	var env []string
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "CACHED_") {
			env = append(env, kv)
		}
	}
	return env
}

// cachedCmd runs the cached binary with args and returns its exit status and combined output.
func cachedCmd(t *testing.T, args ...string) (int, string) {
	t.Helper()
	cmd := exec.Command(cachedBin, args...)
	cmd.Env = envWithoutCached()
	out, err := cmd.CombinedOutput()
	if err != nil {
		if ee, ok := err.(*exec.ExitError); ok {
			return ee.ExitCode(), string(out)
		}
		t.Fatal(err)
	}
	return 0, string(out)
}

// TestConfigFileServe runs a server configured only by a file, uploads to it and substitutes
// from it with real nix, and checks that settings from the file took effect: the data
// directory, the listen address, the priority nix sees, and the store compression of what nix
// uploaded. healthcheck reports it ready, and not once it is stopped.
func TestConfigFileServe(t *testing.T) {
	requireNix(t)
	data := filepath.Join(t.TempDir(), "data")
	file := filepath.Join(t.TempDir(), "cached.toml")
	conf := fmt.Sprintf(`# cached serve, configured by this file only
listen = "127.0.0.1:0"
data = %q
priority = 33
store-compression = "as-uploaded"
max-upload-size = "1GiB"
shutdown-timeout = "10s"
fast-path = false
`, data)
	if err := os.WriteFile(file, []byte(conf), 0o644); err != nil {
		t.Fatal(err)
	}
	if code, out := cachedCmd(t, "config", "check", "--config", file); code != 0 || !strings.Contains(out, "priority = 33") {
		t.Fatalf("config check: exit %d\n%s", code, out)
	}
	srv := startConfigured(t, file, data)

	code, out := cachedCmd(t, "healthcheck", "--url", srv.URL)
	if code != 0 || !strings.Contains(out, "ok: "+srv.URL+"/readyz") {
		t.Fatalf("healthcheck of a ready server: exit %d: %s", code, out)
	}

	resp, err := http.Get(srv.URL + "/nix-cache-info")
	if err != nil {
		t.Fatal(err)
	}
	info, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if !strings.Contains(string(info), "Priority: 33") {
		t.Errorf("nix-cache-info does not carry the priority from the file:\n%s", info)
	}

	n := newNixClient(t, hostOf(srv.URL), srv.Token)
	c := buildClosure(t, n, 1<<20)
	n.run("nix", "copy", "--to", srv.URL+"?compression=xz", c.Top)
	hash := strings.SplitN(filepath.Base(c.Top), "-", 2)[0]
	resp, err = http.Get(srv.URL + "/" + hash + ".narinfo")
	if err != nil {
		t.Fatal(err)
	}
	narinfo, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if got := fieldOf(string(narinfo), "Compression"); got != "xz" {
		t.Errorf("store-compression = \"as-uploaded\" from the file: narinfo says Compression %q, want xz:\n%s", got, narinfo)
	}
	substituteFresh(t, n, srv.URL, srv.PublicKey, c)

	srv.Stop()
	code, out = cachedCmd(t, "healthcheck", "--url", srv.URL, "--timeout", "2s")
	if code != 1 || !strings.Contains(out, "connection refused") || strings.Count(strings.TrimSpace(out), "\n") != 0 {
		t.Errorf("healthcheck of a stopped server: exit %d, want 1 with one line saying connection refused: %q", code, out)
	}
}

// TestConfigFileBad: the binary refuses a bad file before doing anything, naming file and line.
func TestConfigFileBad(t *testing.T) {
	data := filepath.Join(t.TempDir(), "data")
	file := filepath.Join(t.TempDir(), "cached.toml")
	if err := os.WriteFile(file, []byte(fmt.Sprintf("data = %q\n\nlistn = \"127.0.0.1:0\"\n", data)), 0o644); err != nil {
		t.Fatal(err)
	}
	code, out := cachedCmd(t, "serve", "--config", file)
	want := fmt.Sprintf("cached: %s:3: unknown key \"listn\" (did you mean \"listen\"?)\n", file)
	if code != 2 || out != want {
		t.Errorf("exit %d, output %q; want 2 and %q", code, out, want)
	}
	if _, err := os.Stat(data); err == nil {
		t.Errorf("the data directory was created despite the bad file")
	}
}

// TestVersionLdflags builds cached the way the flake and the Dockerfile do and checks that
// both `cached version` and `cached --version` report what they pass.
func TestVersionLdflags(t *testing.T) {
	bin := filepath.Join(t.TempDir(), "cached")
	build := exec.Command("go", "build", "-o", bin,
		"-ldflags", "-X main.version=1.2.3-e2e -X main.commit=0badc0ffee",
		"github.com/cached-dev/cached/cmd/cached")
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	for _, arg := range []string{"version", "--version"} {
		out, err := exec.Command(bin, arg).CombinedOutput()
		if err != nil {
			t.Fatalf("cached %s: %v\n%s", arg, err, out)
		}
		if !strings.HasPrefix(string(out), "cached 1.2.3-e2e\ncommit: 0badc0ffee\ngo: go1.") {
			t.Errorf("cached %s: %q", arg, out)
		}
	}
	// Without -X, the VCS stamp of the checkout (or "unknown" outside one) is reported.
	out, err := exec.Command(cachedBin, "version").CombinedOutput()
	if err != nil || !strings.HasPrefix(string(out), "cached ") || !strings.Contains(string(out), "\ncommit: ") {
		t.Errorf("cached version without ldflags: %v %q", err, out)
	}
}
