package e2e

import (
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// nginxProc is nginx serving a directory as a static binary cache on 127.0.0.1.
type nginxProc struct {
	URL     string
	dir     string
	access  string // its access log
	cmd     *exec.Cmd
	done    chan struct{}
	stopped bool
}

// startNginx serves root with nginx on a free port until the end of the test (or Stop).
func startNginx(t *testing.T, root string) *nginxProc {
	t.Helper()
	return startNginxWith(t, root, "")
}

// startNginxWith is startNginx with more directives in its server block.
func startNginxWith(t *testing.T, root, server string) *nginxProc {
	t.Helper()
	bin, err := exec.LookPath("nginx")
	if err != nil {
		if _, serr := os.Stat("/usr/sbin/nginx"); serr != nil {
			if os.Getenv("CI") == "true" {
				t.Fatal("nginx is not installed (apt-get install -y nginx); CI=true makes this a failure")
			}
			t.Skip("nginx is not installed (apt-get install -y nginx); under CI=true this fails")
		}
		bin = "/usr/sbin/nginx"
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	dir := t.TempDir()
	os.MkdirAll(filepath.Join(dir, "tmp"), 0o755)
	user := ""
	if os.Getuid() == 0 {
		user = "user root root;" // workers must read the test's files
	}
	access := filepath.Join(dir, "access.log")
	conf := fmt.Sprintf(`worker_processes 1;
daemon off;
pid %[1]s/nginx.pid;
error_log %[1]s/error.log warn;
%[2]s
events { worker_connections 256; }
http {
    access_log %[3]s;
    default_type application/octet-stream;
    client_body_temp_path %[1]s/tmp/body;
    proxy_temp_path %[1]s/tmp/proxy;
    fastcgi_temp_path %[1]s/tmp/fastcgi;
    uwsgi_temp_path %[1]s/tmp/uwsgi;
    scgi_temp_path %[1]s/tmp/scgi;
    server {
        listen %[4]s;
        root %[5]s;
        %[6]s
    }
}
`, dir, user, access, addr, root, server)
	if err := os.WriteFile(filepath.Join(dir, "nginx.conf"), []byte(conf), 0o644); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(bin, "-p", dir, "-c", filepath.Join(dir, "nginx.conf"))
	out := &syncBuffer{}
	cmd.Stdout, cmd.Stderr = out, out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	p := &nginxProc{URL: "http://" + addr, dir: dir, access: access, cmd: cmd, done: make(chan struct{})}
	go func() { cmd.Wait(); close(p.done) }()
	t.Cleanup(p.Stop)
	for deadline := time.Now().Add(20 * time.Second); ; {
		resp, err := http.Get(p.URL + "/nix-cache-info")
		if err == nil {
			resp.Body.Close()
			break
		}
		select {
		case <-p.done:
			t.Fatalf("nginx exited at start:\n%s\n%s", out.String(), readFileOr(filepath.Join(dir, "error.log")))
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("nginx does not answer: %v\n%s", err, readFileOr(filepath.Join(dir, "error.log")))
		}
		time.Sleep(50 * time.Millisecond)
	}
	return p
}

func (p *nginxProc) Stop() {
	if p.stopped {
		return
	}
	p.stopped = true
	p.cmd.Process.Signal(os.Interrupt) // fast shutdown
	select {
	case <-p.done:
	case <-time.After(10 * time.Second):
		p.cmd.Process.Kill()
		<-p.done
	}
}

// requests is nginx's access log so far.
func (p *nginxProc) requests() string { return readFileOr(p.access) }

func readFileOr(path string) string {
	b, _ := os.ReadFile(path)
	return string(b)
}

// TestPullThroughNginxUpstream: plain nix writes a signed file:// cache, nginx serves it, and
// cached serve --upstream pulls from it. A fresh store substitutes a closure through cached with
// signatures required and only cached's key trusted (the closure's paths pulled on demand, each
// NAR verified and stored); with nginx stopped, another fresh store still substitutes it, from
// what cached stored. A closure the upstream also has, pushed with nix copy --to (whose netrc
// token makes every request a writer's), is uploaded as usual: nginx is never asked for it.
func TestPullThroughNginxUpstream(t *testing.T) {
	requireNix(t)
	keys, upstreamKey, _ := operatorKeys(t)
	reader := newNixClient(t, "127.0.0.1", "")
	c := buildClosure(t, reader, 256<<10)
	upDir := t.TempDir()
	nixCopyToFile(t, reader, upDir, keys, "xz", c)
	ngx := startNginx(t, upDir)

	data := t.TempDir()
	srv := startServer(t, data, "--upstream", ngx.URL, "--upstream-key", upstreamKey)
	substituteFresh(t, reader, srv.URL, srv.PublicKey, c)
	for _, p := range []string{c.Top, c.Dep} {
		if !strings.Contains(ngx.requests(), "GET /"+hashOf(p)+".narinfo") {
			t.Fatalf("nginx was never asked for %s:\n%s", p, ngx.requests())
		}
		// Committed a moment after the client had the NAR (once it verified).
		for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(10 * time.Millisecond) {
			_, err := os.Stat(filepath.Join(data, "store", hashOf(p)+".narinfo"))
			if err == nil {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("cached did not store the pulled narinfo of %s: %v", p, err)
			}
		}
	}
	// Served as pulled, the upstream's signature kept: clients trusting either key substitute.
	code, body := get(t, srv.URL+"/"+hashOf(c.Top)+".narinfo")
	if code != 200 || !strings.Contains(body, "Sig: legacy-cache.test-1:") || !strings.Contains(body, "Sig: "+strings.Split(srv.PublicKey, ":")[0]+":") {
		t.Fatalf("narinfo of a pulled path: %d, want both signatures:\n%s", code, body)
	}

	ngx.Stop()
	substituteFresh(t, reader, srv.URL, srv.PublicKey, c)
	substituteFresh(t, reader, srv.URL, upstreamKey, c)

	// Push is not pull.
	ngx2 := startNginx(t, upDir)
	srv.Stop()
	srv = startServer(t, data, "--upstream", ngx2.URL, "--upstream-key", upstreamKey)
	c2 := buildClosure(t, reader, 4096)
	nixCopyToFile(t, reader, upDir, keys, "xz", c2)
	pusher := newNixClient(t, "127.0.0.1", srv.Token)
	pusher.run("nix", "copy", "--to", srv.URL, c2.Top)
	for _, p := range []string{c2.Top, c2.Dep} {
		if strings.Contains(ngx2.requests(), hashOf(p)) {
			t.Fatalf("pushing %s asked the upstream:\n%s", p, ngx2.requests())
		}
	}
	code, body = get(t, srv.URL+"/"+hashOf(c2.Top)+".narinfo")
	if code != 200 || strings.Contains(body, "Sig: legacy-cache.test-1:") {
		t.Fatalf("pushed narinfo: %d, want it as uploaded (not pulled):\n%s", code, body)
	}
	substituteFresh(t, reader, srv.URL, srv.PublicKey, c2)
}

// TestPullThroughPrivateNginxUpstream: the upstream is nginx demanding credentials, HTTP Basic
// (auth_basic) for one, a bearer token for the other. cached serve given them in files
// (--upstream-netrc-file, --upstream-token-file) pulls, and a fresh store substitutes the
// closure through it; without them, the upstream's 401s leave the path missing, and nothing of
// the credentials reaches cached's log.
func TestPullThroughPrivateNginxUpstream(t *testing.T) {
	requireNix(t)
	keys, upstreamKey, _ := operatorKeys(t)
	reader := newNixClient(t, "127.0.0.1", "")
	c := buildClosure(t, reader, 64<<10)
	upDir := t.TempDir()
	nixCopyToFile(t, reader, upDir, keys, "xz", c)
	secrets := t.TempDir()
	write := func(name, content string) string {
		p := filepath.Join(secrets, name)
		if err := os.WriteFile(p, []byte(content), 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	htpasswd := write("htpasswd", "ci:{PLAIN}basic-s3cret\n")
	if os.Getuid() != 0 {
		os.Chmod(htpasswd, 0o644) // nginx's workers read it
	}

	basicNgx := startNginxWith(t, upDir, `auth_basic "private cache"; auth_basic_user_file `+htpasswd+`;`)
	bearerNgx := startNginxWith(t, upDir, `if ($http_authorization != "Bearer bearer-s3cret") { return 401; }`)

	// Without credentials: 401, so the path is missing here (and not remembered as missing).
	srv := startServer(t, t.TempDir(), "--upstream", basicNgx.URL, "--upstream-key", upstreamKey)
	for range 2 {
		if code, _ := get(t, srv.URL+"/"+hashOf(c.Top)+".narinfo"); code != 404 {
			t.Fatalf("narinfo through an upstream that wants credentials, without them: %d, want 404", code)
		}
	}
	// nginx writes its access log line after the answer: wait for it.
	n := 0
	for deadline := time.Now().Add(5 * time.Second); n < 2 && time.Now().Before(deadline); time.Sleep(10 * time.Millisecond) {
		n = strings.Count(basicNgx.requests(), "GET /"+hashOf(c.Top)+".narinfo HTTP/1.1\" 401")
	}
	if n != 2 {
		t.Fatalf("nginx answered %d narinfo requests with 401, want 2 (a 401 is not remembered as a miss):\n%s", n, basicNgx.requests())
	}
	srv.Stop()

	for _, tc := range []struct {
		name string
		ngx  *nginxProc
		args []string
	}{
		{"netrc", basicNgx, []string{"--upstream-netrc-file", write("netrc", "machine elsewhere.example login x password y\nmachine 127.0.0.1 login ci password basic-s3cret\n")}},
		{"token", bearerNgx, []string{"--upstream-token-file", write("token", "bearer-s3cret\n")}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			srv := startServer(t, t.TempDir(), append([]string{"--upstream", tc.ngx.URL, "--upstream-key", upstreamKey}, tc.args...)...)
			substituteFresh(t, reader, srv.URL, srv.PublicKey, c)
			if !strings.Contains(tc.ngx.requests(), "GET /"+hashOf(c.Top)+".narinfo HTTP/1.1\" 200") {
				t.Fatalf("nginx never served the narinfo:\n%s", tc.ngx.requests())
			}
			srv.Stop()
			if log := srv.stderr.String(); strings.Contains(log, "s3cret") {
				t.Fatalf("cached's log shows a credential:\n%s", log)
			}
		})
	}
}

// TestPullThroughGCPulledOnly: cached gc --pulled-only drops the closure cached pulled from
// nginx and keeps the one nix copy uploaded; the pulled closure is pulled again on demand.
func TestPullThroughGCPulledOnly(t *testing.T) {
	requireNix(t)
	keys, upstreamKey, _ := operatorKeys(t)
	reader := newNixClient(t, "127.0.0.1", "")
	pulled := buildClosure(t, reader, 4096)
	upDir := t.TempDir()
	nixCopyToFile(t, reader, upDir, keys, "xz", pulled)
	ngx := startNginx(t, upDir)
	srv := startServer(t, t.TempDir(), "--upstream", ngx.URL, "--upstream-key", upstreamKey)
	substituteFresh(t, reader, srv.URL, srv.PublicKey, pulled)
	for _, p := range []string{pulled.Top, pulled.Dep} {
		for deadline := time.Now().Add(10 * time.Second); stored(srv, p) != http.StatusOK; time.Sleep(10 * time.Millisecond) {
			if time.Now().After(deadline) {
				t.Fatalf("cached did not store the pulled %s", p)
			}
		}
	}
	uploaded := buildClosure(t, reader, 2048)
	pusher := newNixClient(t, "127.0.0.1", srv.Token)
	pusher.run("nix", "copy", "--to", srv.URL, uploaded.Top)

	out, err := cachedAdmin(t, srv, "gc", "--pulled-only")
	if err != nil {
		t.Fatalf("gc --pulled-only: %v\n%s", err, out)
	}
	for p, want := range map[string]int{pulled.Top: 404, pulled.Dep: 404, uploaded.Top: 200, uploaded.Dep: 200} {
		if got := stored(srv, p); got != want {
			t.Errorf("after gc --pulled-only: %s answers %d, want %d\n%s", p, got, want, out)
		}
	}
	if err := substitutes(t, reader, srv, uploaded.Top); err != nil {
		t.Errorf("the uploaded closure no longer substitutes: %v", err)
	}
	substituteFresh(t, reader, srv.URL, srv.PublicKey, pulled) // pulled again
}
