// Package docker holds the container image (Dockerfile), the compose file and their test.
//
// TestImage builds docker/Dockerfile with real podman (runc) and checks the image as an
// operator uses it: a real nix uploads to the container and substitutes from it with
// signatures required, the server runs as the unprivileged user, keeps its key and data in
// the /data volume across containers, stops cleanly on SIGTERM, reports healthy through the
// image's HEALTHCHECK, and prints the version it was built with.
//
// No image registry is reachable from the machines this runs on, so the build stage's Go image
// is a stand-in made here from the host's Go toolchain, a static busybox and the host's CA
// certificates; the module proxy is reached through the host network. Podman's state (images,
// containers, volumes, build cache) lives in a temporary directory and is removed at the end.
package docker

import (
	"archive/tar"
	"bytes"
	"context"
	"crypto/rand"
	"debug/elf"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"io/fs"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

const (
	imageUID     = "65532" // the USER of the image
	buildVersion = "v0.0.0-imagetest"
	maxImageSize = 64 << 20 // the image is a static binary and CA certificates: about 27 MB
)

// requireTools fails the test under CI=true when a tool is missing and skips it otherwise.
func requireTools(t *testing.T, tools ...string) {
	t.Helper()
	for _, tool := range tools {
		if _, err := exec.LookPath(tool); err != nil {
			msg := fmt.Sprintf("%s is not installed (apt-get install -y podman runc busybox-static nix-bin)", tool)
			if os.Getenv("CI") == "true" {
				t.Fatal(msg + "; CI=true makes this a failure")
			}
			t.Skip(msg + "; under CI=true this fails")
		}
	}
}

// podman runs podman with runc and with all of its state under one directory.
type podman struct {
	dir  string
	env  []string
	logf func(format string, args ...any) // for what cleanup could not remove
}

func newPodman(t *testing.T) *podman {
	t.Helper()
	dir := t.TempDir()
	conf := filepath.Join(dir, "containers.conf")
	// default_ulimits: the distribution's default (nofile) cannot be set on every host.
	if err := os.WriteFile(conf, []byte("[containers]\ndefault_ulimits = []\n\n[engine]\nevents_logger = \"file\"\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	tmp := filepath.Join(dir, "tmp") // buildah keeps RUN --mount=type=cache directories here
	if err := os.Mkdir(tmp, 0o755); err != nil {
		t.Fatal(err)
	}
	p := &podman{dir: dir, env: append(os.Environ(), "CONTAINERS_CONF="+conf, "TMPDIR="+tmp), logf: t.Logf}
	t.Cleanup(p.cleanup)
	return p
}

func (p *podman) command(ctx context.Context, args ...string) *exec.Cmd {
	global := []string{"--runtime", "runc",
		"--root", filepath.Join(p.dir, "root"),
		"--runroot", filepath.Join(p.dir, "runroot"),
		"--tmpdir", filepath.Join(p.dir, "libpod")}
	cmd := exec.CommandContext(ctx, "podman", append(global, args...)...)
	cmd.Env = p.env
	return cmd
}

// run runs podman and returns its stdout, or an error carrying the end of its stderr.
func (p *podman) run(args ...string) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	cmd := p.command(ctx, args...)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		return stdout.String(), fmt.Errorf("podman %s: %w\n%s", strings.Join(args, " "), err, tail(stderr.String(), 20))
	}
	return stdout.String(), nil
}

// must runs podman and fails the test on error.
func (p *podman) must(t *testing.T, args ...string) string {
	t.Helper()
	out, err := p.run(args...)
	if err != nil {
		t.Fatal(err)
	}
	return strings.TrimSpace(out)
}

// cleanup removes every container, volume and image, and unmounts what podman left mounted
// under its directory, so that the test's temporary directory can be removed.
func (p *podman) cleanup() {
	for _, args := range [][]string{
		{"rm", "--all", "--force", "--time", "0"},
		{"volume", "rm", "--all", "--force"},
		{"rmi", "--all", "--force"},
	} {
		if _, err := p.run(args...); err != nil {
			p.logf("%v", err)
		}
	}
	mounts, err := os.ReadFile("/proc/self/mounts")
	if err != nil {
		return
	}
	lines := strings.Split(string(mounts), "\n")
	for i := len(lines) - 1; i >= 0; i-- { // innermost first
		f := strings.Fields(lines[i])
		if len(f) > 1 && strings.HasPrefix(f[1], p.dir+"/") {
			if err := syscall.Unmount(f[1], syscall.MNT_DETACH); err != nil {
				p.logf("unmount %s: %v", f[1], err)
			}
		}
	}
}

func TestImage(t *testing.T) {
	requireTools(t, "podman", "runc", "busybox", "nix")
	if os.Getuid() != 0 {
		t.Skip("podman with a private storage root needs root")
	}
	start := time.Now()
	p := newPodman(t)
	suffix := randomHex(t, 6)
	commit := randomHex(t, 20)
	goImage := "localhost/cached-test-go:" + suffix
	image := "localhost/cached-test:" + suffix

	buildGoStandIn(t, p, goImage)
	t.Logf("stand-in Go image built in %s", time.Since(start).Round(time.Second))

	buildStart := time.Now()
	buildImage(t, p, goImage, image, commit)
	t.Logf("image built in %s", time.Since(buildStart).Round(time.Second))

	t.Run("config", func(t *testing.T) {
		type healthcheck struct{ Test []string }
		var inspect []struct {
			Size   int64
			Config struct {
				User        string
				Env         []string
				Entrypoint  []string
				Cmd         []string
				Volumes     map[string]struct{}
				Healthcheck *healthcheck // where Docker keeps it
			}
			Healthcheck *healthcheck // where podman 4 keeps it
		}
		out := p.must(t, "image", "inspect", image)
		if err := json.Unmarshal([]byte(out), &inspect); err != nil || len(inspect) != 1 {
			t.Fatalf("podman image inspect: %v\n%s", err, out)
		}
		cfg := inspect[0]
		if cfg.Healthcheck == nil {
			cfg.Healthcheck = cfg.Config.Healthcheck
		}
		t.Logf("image size: %d bytes (%.1f MB)", cfg.Size, float64(cfg.Size)/1e6)
		if cfg.Size > maxImageSize {
			t.Errorf("image is %d bytes, more than %d: has the build stage leaked into it?", cfg.Size, maxImageSize)
		}
		if hc := cfg.Healthcheck; hc == nil || strings.Join(hc.Test, " ") != "CMD /cached healthcheck" {
			t.Errorf("HEALTHCHECK = %+v, want CMD /cached healthcheck (was the image built with --format docker?)", hc)
		}
		c := cfg.Config
		if c.User != imageUID+":"+imageUID {
			t.Errorf("USER = %q, want %s:%s", c.User, imageUID, imageUID)
		}
		if _, ok := c.Volumes["/data"]; !ok {
			t.Errorf("VOLUME = %v, want /data", c.Volumes)
		}
		if got := strings.Join(append(c.Entrypoint, c.Cmd...), " "); got != "/cached serve" {
			t.Errorf("ENTRYPOINT+CMD = %q, want /cached serve", got)
		}
		for _, want := range []string{"CACHED_DATA=/data", "CACHED_LISTEN=0.0.0.0:5000"} {
			if !slices.Contains(c.Env, want) {
				t.Errorf("ENV %v lacks %s", c.Env, want)
			}
		}
	})

	t.Run("version", func(t *testing.T) {
		out := p.must(t, "run", "--rm", "--network=none", image, "version")
		if !strings.Contains(out, buildVersion) || !strings.Contains(out, commit) {
			t.Errorf("cached version printed %q, want the build args %s and %s", out, buildVersion, commit)
		}
	})

	t.Run("serve", func(t *testing.T) { testServe(t, p, image) })

	t.Run("healthcheck with the image's defaults", func(t *testing.T) {
		// No environment at all: 0.0.0.0:5000 in a network namespace of its own, where the
		// healthcheck (run inside the container) must find the server.
		name := "cached-defaults-" + suffix
		p.must(t, "run", "-d", "--name", name, "--network=none", image)
		waitHealthy(t, p, name)
	})

	t.Run("unwritable data directory", func(t *testing.T) {
		// A bind mount the server's user cannot write: the server must stop with an error that
		// names the file, not run without its key or token.
		dir := t.TempDir()
		out, err := p.run("run", "--rm", "--network=none", "-v", dir+":/data", image)
		if err == nil {
			t.Fatalf("cached served on a root-owned data directory:\n%s", out)
		}
		if !strings.Contains(err.Error(), "/data/") || !strings.Contains(err.Error(), "permission denied") {
			t.Errorf("error does not name the unwritable file: %v", err)
		}
	})

	t.Run("bad listen address", func(t *testing.T) {
		_, err := p.run("run", "--rm", "--network=none", "-e", "CACHED_LISTEN=127.0.0.1:notaport", image)
		if err == nil || !strings.Contains(err.Error(), "127.0.0.1:notaport") {
			t.Errorf("CACHED_LISTEN=127.0.0.1:notaport: want an error naming it, got %v", err)
		}
	})
	t.Logf("total %s", time.Since(start).Round(time.Second))
}

// testServe runs the image on the host network with a named volume, uploads a closure with
// nix, substitutes it into a fresh store with only the container's key trusted, and checks
// that the key and the data outlive the container.
func testServe(t *testing.T, p *podman, image string) {
	port := freePort(t)
	url := "http://127.0.0.1:" + port
	volume := "cached-data-" + randomHex(t, 4)
	runServer := func(name string) {
		p.must(t, "run", "-d", "--name", name, "--network=host",
			"-e", "CACHED_LISTEN=127.0.0.1:"+port, "-v", volume+":/data", image)
		waitReady(t, p, name, url)
	}
	runServer("cached-1")

	var state struct{ Pid int }
	if err := json.Unmarshal([]byte(p.must(t, "inspect", "--format", "{{json .State}}", "cached-1")), &state); err != nil {
		t.Fatal(err)
	}
	status := readFile(t, fmt.Sprintf("/proc/%d/status", state.Pid))
	for _, line := range strings.Split(status, "\n") {
		if f := strings.Fields(line); len(f) == 5 && (f[0] == "Uid:" || f[0] == "Gid:") {
			for _, id := range f[1:] {
				if id != imageUID {
					t.Errorf("server process %s %v, want %s (not root)", f[0], f[1:], imageUID)
					break
				}
			}
		}
	}

	data := p.must(t, "volume", "inspect", "--format", "{{.Mountpoint}}", volume)
	publicKey := strings.TrimSpace(readFile(t, filepath.Join(data, "public-key")))
	token := strings.TrimSpace(strings.SplitN(readFile(t, filepath.Join(data, "upload-tokens")), "\n", 2)[0])
	for _, f := range []string{"secret-key", "upload-tokens", "index", "store"} {
		fi, err := os.Stat(filepath.Join(data, f))
		if err != nil {
			t.Fatal(err)
		}
		if uid := strconv.Itoa(int(fi.Sys().(*syscall.Stat_t).Uid)); uid != imageUID {
			t.Errorf("/data/%s is owned by uid %s, want %s", f, uid, imageUID)
		}
	}

	n := newNixClient(t, token)
	top, dep := n.buildClosure()
	n.run("nix", "copy", "--to", url, top)
	n.substituteFresh(url, publicKey, top, dep)

	if out, err := p.run("healthcheck", "run", "cached-1"); err != nil {
		t.Errorf("healthcheck of a serving container: %v\n%s", err, out)
	}

	// SIGTERM (podman stop) must end the server cleanly, not after the stop timeout's SIGKILL.
	p.must(t, "stop", "--time", "60", "cached-1")
	if code := p.must(t, "inspect", "--format", "{{.State.ExitCode}}", "cached-1"); code != "0" {
		t.Errorf("after podman stop the server exited with %s, want 0\n%s", code, tail(p.must(t, "logs", "cached-1"), 20))
	}
	p.must(t, "rm", "cached-1")

	// A new container on the same volume serves the same key and the uploaded closure.
	runServer("cached-2")
	if pk := strings.TrimSpace(readFile(t, filepath.Join(data, "public-key"))); pk != publicKey {
		t.Errorf("public key changed across containers: %s, then %s", publicKey, pk)
	}
	n.substituteFresh(url, publicKey, top, dep)
}

// waitReady waits until the container's server answers /readyz with 200.
func waitReady(t *testing.T, p *podman, name, url string) {
	t.Helper()
	deadline := time.Now().Add(60 * time.Second)
	for {
		resp, err := http.Get(url + "/readyz")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return
			}
		}
		running, _ := p.run("inspect", "--format", "{{.State.Running}}", name)
		if strings.TrimSpace(running) != "true" || time.Now().After(deadline) {
			logs, _ := p.run("logs", name)
			t.Fatalf("container %s did not become ready at %s (running: %s, last: %v):\n%s",
				name, url, strings.TrimSpace(running), err, tail(logs, 30))
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// waitHealthy runs the image's healthcheck until it passes, for up to 60 s.
func waitHealthy(t *testing.T, p *podman, name string) {
	t.Helper()
	deadline := time.Now().Add(60 * time.Second)
	for {
		_, err := p.run("healthcheck", "run", name)
		if err == nil {
			if status := p.must(t, "inspect", "--format", "{{.State.Health.Status}}", name); status != "healthy" {
				t.Errorf("healthcheck passed but the health status is %q", status)
			}
			return
		}
		if time.Now().After(deadline) {
			logs, _ := p.run("logs", name)
			t.Fatalf("container %s not healthy after 60s: %v\n%s", name, err, tail(logs, 30))
		}
		time.Sleep(time.Second)
	}
}

// buildGoStandIn imports, as the image goImage, the host's Go toolchain at /usr/local/go with
// GOPATH /go (as the golang images have it), a static busybox as /bin/sh and the other
// commands a Dockerfile's RUN uses, and the host's CA certificates.
func buildGoStandIn(t *testing.T, p *podman, goImage string) {
	t.Helper()
	goroot := strings.TrimSpace(goEnv(t, "GOROOT")[0])
	busybox, err := exec.LookPath("busybox")
	if err != nil {
		t.Fatal(err)
	}
	if f, err := elf.Open(busybox); err == nil {
		for _, prog := range f.Progs {
			if prog.Type == elf.PT_INTERP {
				t.Fatalf("%s is dynamically linked and cannot run in an image without libc: install busybox-static", busybox)
			}
		}
		f.Close()
	}
	applets, err := exec.Command(busybox, "--list").Output()
	if err != nil {
		t.Fatalf("busybox --list: %v", err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	cmd := p.command(ctx, "import",
		"--change", "ENV PATH=/go/bin:/usr/local/go/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
		"--change", "ENV GOPATH=/go",
		"--change", "ENV HOME=/root",
		"--change", "WORKDIR /go",
		"-", goImage)
	pr, pw := io.Pipe()
	cmd.Stdin = pr
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	werr := writeStandIn(pw, goroot, busybox, strings.Fields(string(applets)))
	pw.CloseWithError(werr)
	if err := cmd.Wait(); err != nil || werr != nil {
		t.Fatalf("podman import of the stand-in Go image: %v, %v\n%s", werr, err, tail(out.String(), 20))
	}
}

func writeStandIn(w io.Writer, goroot, busybox string, applets []string) error {
	tw := tar.NewWriter(w)
	dir := func(name string, mode int64) error {
		return tw.WriteHeader(&tar.Header{Typeflag: tar.TypeDir, Name: name + "/", Mode: mode})
	}
	for _, d := range []string{"bin", "etc", "etc/ssl", "etc/ssl/certs", "root", "go", "usr", "usr/local"} {
		if err := dir(d, 0o755); err != nil {
			return err
		}
	}
	if err := dir("tmp", 0o1777); err != nil {
		return err
	}
	if err := addFile(tw, busybox, "bin/busybox"); err != nil {
		return err
	}
	for _, a := range applets {
		if a == "busybox" || strings.Contains(a, "/") {
			continue
		}
		if err := tw.WriteHeader(&tar.Header{Typeflag: tar.TypeSymlink, Name: "bin/" + a, Linkname: "busybox", Mode: 0o777}); err != nil {
			return err
		}
	}
	if err := addFile(tw, "/etc/ssl/certs/ca-certificates.crt", "etc/ssl/certs/ca-certificates.crt"); err != nil {
		return err
	}
	err := filepath.WalkDir(goroot, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, err := filepath.Rel(goroot, path)
		if err != nil {
			return err
		}
		name := filepath.ToSlash(filepath.Join("usr/local/go", rel))
		switch {
		case d.IsDir():
			return dir(name, 0o755)
		case d.Type()&fs.ModeSymlink != 0:
			target, err := os.Readlink(path)
			if err != nil {
				return err
			}
			return tw.WriteHeader(&tar.Header{Typeflag: tar.TypeSymlink, Name: name, Linkname: target, Mode: 0o777})
		case d.Type().IsRegular():
			return addFile(tw, path, name)
		}
		return nil
	})
	if err != nil {
		return err
	}
	return tw.Close()
}

func addFile(tw *tar.Writer, path, name string) error {
	f, err := os.Open(path)
	if err != nil {
		return err
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return err
	}
	if err := tw.WriteHeader(&tar.Header{Typeflag: tar.TypeReg, Name: name, Mode: int64(fi.Mode().Perm()), Size: fi.Size(), ModTime: fi.ModTime()}); err != nil {
		return err
	}
	_, err = io.Copy(tw, f)
	return err
}

// buildImage builds docker/Dockerfile from the repository root as image, with the host's Go
// proxy settings, and VERSION/COMMIT build args that `cached version` must print.
func buildImage(t *testing.T, p *podman, goImage, image, commit string) {
	t.Helper()
	root, err := filepath.Abs("..")
	if err != nil {
		t.Fatal(err)
	}
	args := []string{"build", "--format", "docker", "--network=host",
		"-f", filepath.Join(root, "docker", "Dockerfile"),
		"--build-arg", "GO_IMAGE=" + goImage,
		"--build-arg", "VERSION=" + buildVersion,
		"--build-arg", "COMMIT=" + commit,
		"-t", image}
	names := []string{"GOPROXY", "GOSUMDB", "GONOSUMDB", "GOFLAGS"}
	for i, v := range goEnv(t, names...) {
		args = append(args, "--build-arg", names[i]+"="+v)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Minute)
	defer cancel()
	cmd := p.command(ctx, append(args, root)...)
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Run(); err != nil {
		t.Fatalf("podman %s: %v\n%s", strings.Join(args, " "), err, tail(out.String(), 40))
	}
}

func goEnv(t *testing.T, names ...string) []string {
	t.Helper()
	out, err := exec.Command("go", append([]string{"env"}, names...)...).Output()
	if err != nil {
		t.Fatalf("go env: %v", err)
	}
	vals := strings.Split(strings.TrimSuffix(string(out), "\n"), "\n")
	if len(vals) != len(names) {
		t.Fatalf("go env %v printed %d lines", names, len(vals))
	}
	return vals
}

// nixClient runs nix with a private configuration: no daemon, no sandbox, no substituter by
// default, no narinfo caching between commands, and a netrc holding the upload token.
type nixClient struct {
	t    *testing.T
	env  []string
	work string
}

func newNixClient(t *testing.T, token string) *nixClient {
	t.Helper()
	work := t.TempDir()
	netrc := filepath.Join(work, "netrc")
	if err := os.WriteFile(netrc, []byte("machine 127.0.0.1 login cached password "+token+"\n"), 0o600); err != nil {
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
	}, "\n")
	// Nix 2.8 keeps its narinfo cache under $XDG_CACHE_HOME: a private one per test.
	env := append(os.Environ(), "NIX_CONFIG="+conf, "XDG_CACHE_HOME="+filepath.Join(work, "xdg-cache"))
	return &nixClient{t: t, env: env, work: work}
}

func (n *nixClient) run(args ...string) string {
	n.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, args[0], args[1:]...)
	cmd.Env = n.env
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		n.t.Fatalf("%s: %v\n%s", strings.Join(args, " "), err, tail(stderr.String(), 15))
	}
	return strings.TrimSpace(stdout.String())
}

// buildClosure builds, offline with /bin/sh as builder, a store path that references another;
// both are new to this run.
func (n *nixClient) buildClosure() (top, dep string) {
	seed := randomHex(n.t, 8)
	expr := fmt.Sprintf(`let
  dep = builtins.derivation { name = "image-dep"; system = builtins.currentSystem; builder = "/bin/sh";
    args = [ "-c" "echo dep-%[1]s > $out" ]; };
in builtins.derivation { name = "image-top"; system = builtins.currentSystem; builder = "/bin/sh";
  args = [ "-c" "echo ${dep} %[1]s > $out" ]; }
`, seed)
	file := filepath.Join(n.work, "closure.nix")
	if err := os.WriteFile(file, []byte(expr), 0o644); err != nil {
		n.t.Fatal(err)
	}
	top = n.run("nix-build", "--no-out-link", file)
	refs := strings.Fields(n.run("nix-store", "-q", "--references", top))
	if len(refs) != 1 {
		n.t.Fatalf("closure %s: want 1 reference, got %v", top, refs)
	}
	return top, refs[0]
}

// substituteFresh realises top from url into a new store that requires signatures and trusts
// only publicKey, and checks both paths arrived byte for byte.
func (n *nixClient) substituteFresh(url, publicKey, top, dep string) {
	n.t.Helper()
	fresh := filepath.Join(n.t.TempDir(), "store")
	n.t.Cleanup(func() { exec.Command("chmod", "-R", "u+w", filepath.Dir(fresh)).Run() })
	n.run("nix-store", "--store", fresh, "--realise", top,
		"--option", "substituters", url,
		"--option", "trusted-public-keys", publicKey,
		"--option", "require-sigs", "true")
	for _, path := range []string{top, dep} {
		if got, want := readFile(n.t, fresh+path), readFile(n.t, path); got != want {
			n.t.Errorf("substituted %s holds %q, want %q", path, got, want)
		}
	}
}

func freePort(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return strconv.Itoa(l.Addr().(*net.TCPAddr).Port)
}

func randomHex(t *testing.T, n int) string {
	t.Helper()
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		t.Fatal(err)
	}
	return hex.EncodeToString(b)
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
	parts := strings.Split(strings.TrimRight(s, "\n"), "\n")
	if len(parts) > lines {
		parts = parts[len(parts)-lines:]
	}
	return strings.Join(parts, "\n")
}
