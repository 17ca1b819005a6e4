package e2e

import (
	"bytes"
	"context"
	"errors"
	"io/fs"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/s3"

	"github.com/cached-dev/cached/internal/backend/backendtest"
)

// Design invariant 1: the backend layout is exactly what `nix copy --to file://` writes, so
// cached serves a cache plain nix wrote, and plain nix reads what cached stored.
//
// Migrating an existing cache: its narinfos were signed when nix wrote them (nix copy --to
// 'file://DIR?secret-key=KEY'), and its clients already trust that key. The operator moves the
// files into cached's storage (DATA/store, or the bucket), runs `cached reindex` to build the
// index, and starts `cached serve --secret-key-file KEY` with the same key: the existing narinfos
// are served as nix wrote them (reindex does not re-sign), and new uploads are signed with the key
// the clients trust, so they need no configuration change. The tests below do exactly that and
// trust only that one key.

// operatorKeys is an existing cache's signing key (made by nix, not by cached) and upload token,
// in a directory laid out as s3Args expects (secret-key, public-key, tokens).
func operatorKeys(t *testing.T) (dir, pk, token string) {
	t.Helper()
	dir = t.TempDir()
	sk := filepath.Join(dir, "secret-key")
	if out, err := exec.Command("nix-store", "--generate-binary-cache-key", "legacy-cache.test-1", sk, filepath.Join(dir, "public-key")).CombinedOutput(); err != nil {
		t.Fatalf("nix-store --generate-binary-cache-key: %v\n%s", err, out)
	}
	token = "operator-upload-token"
	if err := os.WriteFile(filepath.Join(dir, "tokens"), []byte(token+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	return dir, strings.TrimSpace(readFile(t, filepath.Join(dir, "public-key"))), token
}

// nixCopyToFile writes c with plain nix to a file:// binary cache at dir, signed with the key in
// keys, and checks nix wrote the layout cached expects: nix-cache-info, both narinfos signed by
// that key, and their NARs under nar/ in the compression asked for.
func nixCopyToFile(t *testing.T, n *nixClient, dir, keys, comp string, c closure) {
	t.Helper()
	n.run("nix", "copy", "--to", "file://"+dir+"?compression="+comp+"&secret-key="+filepath.Join(keys, "secret-key"), c.Top)
	if _, err := os.Stat(filepath.Join(dir, "nix-cache-info")); err != nil {
		t.Fatalf("nix copy --to file:// wrote no nix-cache-info: %v", err)
	}
	ext := map[string]string{"xz": ".nar.xz", "zstd": ".nar.zst", "none": ".nar"}[comp]
	keyName := "Sig: legacy-cache.test-1:"
	for _, p := range []string{c.Top, c.Dep} {
		ni := readFile(t, filepath.Join(dir, hashOf(p)+".narinfo"))
		if !strings.Contains(ni, keyName) {
			t.Fatalf("nix wrote %s unsigned:\n%s", p, ni)
		}
		url := fieldOf(ni, "URL")
		if !strings.HasPrefix(url, "nar/") || !strings.HasSuffix(url, ext) {
			t.Fatalf("nix wrote %s with URL %q, want nar/...%s", p, url, ext)
		}
		if _, err := os.Stat(filepath.Join(dir, url)); err != nil {
			t.Fatalf("nix wrote no NAR for %s: %v", p, err)
		}
	}
}

// fieldOf returns the value of a "Key: value" line of a narinfo.
func fieldOf(narinfo, key string) string {
	for _, line := range strings.Split(narinfo, "\n") {
		if v, ok := strings.CutPrefix(line, key+": "); ok {
			return v
		}
	}
	return ""
}

// TestServesWhatNixCopyWrote: plain nix writes a signed file:// cache (xz, nix's default, and
// zstd) straight into cached's disk storage (DATA/store); cached reindex indexes it, cached
// serve with the same signing key serves it, and nix substitutes it into a fresh store with
// signatures required and only that key trusted. A closure uploaded afterwards through cached
// substitutes under the same key, so clients of the old cache need no change. Without cached
// reindex (zstd case), the first cached serve on a new index indexes what storage holds itself.
func TestServesWhatNixCopyWrote(t *testing.T) {
	requireNix(t)
	for _, tc := range []struct {
		comp, ext string
		reindex   bool
	}{{"xz", ".nar.xz", true}, {"zstd", ".nar.zst", false}} {
		t.Run(tc.comp, func(t *testing.T) {
			keys, pk, token := operatorKeys(t)
			n := newNixClient(t, "127.0.0.1", token)
			c := buildClosure(t, n, 64<<10)
			data := t.TempDir()
			nixCopyToFile(t, n, filepath.Join(data, "store"), keys, tc.comp, c)

			keyArgs := []string{"--secret-key-file", filepath.Join(keys, "secret-key")}
			if tc.reindex {
				out, err := runCached(append([]string{"reindex", "--data", data}, keyArgs...)...)
				if err != nil || !strings.Contains(out, " 2 narinfos indexed, 0 unreadable skipped") {
					t.Fatalf("cached reindex of the tree nix wrote: %v\n%s", err, out)
				}
			}
			srv := startServer(t, data, append(keyArgs, "--upload-token-file", filepath.Join(keys, "tokens"))...)

			// Served as nix wrote it: nix's URL (not recompressed) and nix's signature.
			for _, p := range []string{c.Top, c.Dep} {
				code, body := get(t, srv.URL+"/"+hashOf(p)+".narinfo")
				want := readFile(t, filepath.Join(data, "store", hashOf(p)+".narinfo"))
				if code != 200 || body != want {
					t.Fatalf("narinfo of %s: %d\n%s\nwant what nix wrote:\n%s", p, code, body, want)
				}
				if u := fieldOf(body, "URL"); !strings.HasSuffix(u, tc.ext) {
					t.Errorf("narinfo of %s names %q, want a %s NAR", p, u, tc.ext)
				}
			}
			n.run("nix", "store", "verify", "--store", srv.URL, "--trusted-public-keys", pk, "-r", c.Top)
			substituteFresh(t, n, srv.URL, pk, c)

			// After the migration, uploads through cached are signed with the key clients trust.
			c2 := buildClosure(t, n, 4096)
			n.run("nix", "copy", "--to", srv.URL, c2.Top)
			substituteFresh(t, n, srv.URL, pk, c2)
		})
	}
}

// TestNixReadsCachedData: closures uploaded through cached (xz, stored as zstd; and none, kept
// as uploaded) are, once the server is stopped, read by plain nix straight from its disk storage
// as a file:// binary cache: nix store verify passes and nix substitutes into a fresh store with
// signatures required and only cached's key trusted.
func TestNixReadsCachedData(t *testing.T) {
	requireNix(t)
	data := t.TempDir()
	srv := startServer(t, data)
	n := newNixClient(t, hostOf(srv.URL), srv.Token)
	c := buildClosure(t, n, 64<<10)
	n.run("nix", "copy", "--to", srv.URL, c.Top) // xz, nix's default; stored as zstd
	srv.Stop()
	srv2 := startServer(t, data, "--store-compression", "as-uploaded")
	c2 := buildClosure(t, n, 64<<10)
	n.run("nix", "copy", "--to", srv2.URL+"?compression=none", c2.Top)
	srv2.Stop()

	store := filepath.Join(data, "store")
	for _, tc := range []struct {
		c   closure
		ext string
	}{{c, ".nar.zst"}, {c2, ".nar"}} {
		ni := readFile(t, filepath.Join(store, hashOf(tc.c.Top)+".narinfo"))
		if u := fieldOf(ni, "URL"); !strings.HasPrefix(u, "nar/") || !strings.HasSuffix(u, tc.ext) {
			t.Errorf("%s stored with URL %q, want nar/...%s", tc.c.Top, u, tc.ext)
		}
	}
	if _, err := os.Stat(filepath.Join(store, "nix-cache-info")); err != nil {
		t.Fatalf("cached wrote no nix-cache-info for plain nix: %v", err)
	}
	url := "file://" + store
	for _, cl := range []closure{c, c2} {
		n.run("nix", "store", "verify", "--store", url, "--trusted-public-keys", srv.PublicKey, "-r", cl.Top)
		substituteFresh(t, n, url, srv.PublicKey, cl)
	}
}

// uploadTree puts every file under dir into the bucket, keyed by its path relative to dir: what
// `nix copy --to s3://BUCKET` would have written (Debian's nix is built without S3 support).
func uploadTree(t *testing.T, gw *backendtest.VersityGW, dir string) int {
	t.Helper()
	client := gw.Client()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	count := 0
	err := filepath.WalkDir(dir, func(path string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		rel, err := filepath.Rel(dir, path)
		if err != nil {
			return err
		}
		body, err := os.ReadFile(path)
		if err != nil {
			return err
		}
		_, err = client.PutObject(ctx, &s3.PutObjectInput{Bucket: aws.String(gw.Bucket), Key: aws.String(filepath.ToSlash(rel)), Body: bytes.NewReader(body)})
		count++
		return err
	})
	if err != nil {
		t.Fatalf("uploading %s to the bucket: %v\n%s", dir, err, gw.Log())
	}
	return count
}

// TestS3ServesNixBucket: a signed cache plain nix wrote (file://, xz) is put into the bucket
// object by object; cached reindex --backend s3 indexes it, cached serve --backend s3 with the
// same signing key serves it, and nix substitutes into a fresh store with only that key trusted.
func TestS3ServesNixBucket(t *testing.T) {
	requireNix(t)
	gw := backendtest.StartVersityGW(t)
	keys, pk, token := operatorKeys(t)
	n := newNixClient(t, "127.0.0.1", token)
	c := buildClosure(t, n, 64<<10)
	tree := filepath.Join(t.TempDir(), "cache")
	nixCopyToFile(t, n, tree, keys, "xz", c)
	if got := uploadTree(t, gw, tree); got < 5 { // nix-cache-info, 2 narinfos, 2 NARs
		t.Fatalf("nix wrote %d files, want at least 5", got)
	}

	data := t.TempDir()
	out, err := runCached(append([]string{"reindex", "--data", data}, s3BackendArgs(gw, keys)...)...)
	if err != nil || !strings.Contains(out, " 2 narinfos indexed, 0 unreadable skipped") {
		t.Fatalf("cached reindex of the bucket nix wrote: %v\n%s", err, out)
	}
	srv := startServer(t, data, s3Args(gw, keys)...)
	for _, p := range []string{c.Top, c.Dep} {
		code, body := get(t, srv.URL+"/"+hashOf(p)+".narinfo")
		want := readFile(t, filepath.Join(tree, hashOf(p)+".narinfo"))
		if code != 200 || body != want {
			t.Fatalf("narinfo of %s: %d\n%s\nwant what nix wrote:\n%s", p, code, body, want)
		}
	}
	n.run("nix", "store", "verify", "--store", srv.URL, "--trusted-public-keys", pk, "-r", c.Top)
	substituteFresh(t, n, srv.URL, pk, c)

	c2 := buildClosure(t, n, 4096)
	n.run("nix", "copy", "--to", srv.URL, c2.Top)
	substituteFresh(t, n, srv.URL, pk, c2)
}

// blackHole accepts connections and never answers them.
func blackHole(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var conns []net.Conn
	done := make(chan struct{})
	go func() {
		defer close(done)
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			conns = append(conns, c)
		}
	}()
	t.Cleanup(func() {
		l.Close()
		<-done
		for _, c := range conns {
			c.Close()
		}
	})
	return l.Addr().String()
}

// TestS3StartupErrors: cached serve on a bucket it cannot use exits non-zero promptly, saying
// what is wrong and naming the bucket or endpoint, and never prints a secret key. A server given
// its S3 credentials only through CACHED_S3_ACCESS_KEY and CACHED_S3_SECRET_KEY works, and the
// secret appears neither in its command line nor anywhere in its log.
func TestS3StartupErrors(t *testing.T) {
	requireNix(t)
	gw := backendtest.StartVersityGW(t)
	shared, pk, token := sharedSecrets(t)
	const wrongSecret = "wrong-secret-value-must-not-leak"
	args := func(bucket, endpoint, access, secret string) []string {
		return []string{"serve", "--data", t.TempDir(), "--listen", "127.0.0.1:0",
			"--backend", "s3", "--s3-bucket", bucket, "--s3-endpoint", endpoint,
			"--s3-region", gw.Region, "--s3-path-style", "--s3-access-key", access, "--s3-secret-key", secret,
			"--secret-key-file", filepath.Join(shared, "secret-key"), "--upload-token-file", filepath.Join(shared, "tokens")}
	}
	unreachable := "http://" + backendtest.ClosedAddr(t)
	silent := "http://" + blackHole(t)
	for _, tc := range []struct {
		name  string
		args  []string
		want  []string
		limit time.Duration
	}{
		{"missing bucket", args("no-such-bucket", gw.Endpoint, gw.Access, gw.Secret),
			[]string{`bucket "no-such-bucket"`, gw.Endpoint, "bucket does not exist"}, 10 * time.Second},
		{"wrong secret key", args(gw.Bucket, gw.Endpoint, gw.Access, wrongSecret),
			[]string{`bucket "` + gw.Bucket + `"`, gw.Endpoint, "secret key does not match the access key"}, 10 * time.Second},
		{"unknown access key", args(gw.Bucket, gw.Endpoint, "no-such-access-key", gw.Secret),
			[]string{`bucket "` + gw.Bucket + `"`, gw.Endpoint, "access key not recognized"}, 10 * time.Second},
		{"nothing listening", args(gw.Bucket, unreachable, gw.Access, gw.Secret),
			[]string{unreachable, "cannot reach the endpoint"}, 10 * time.Second},
		// Accepts the connection and never answers: start-up must still give up (after 30 s).
		{"endpoint not answering", args(gw.Bucket, silent, gw.Access, gw.Secret),
			[]string{silent, "did not answer in time"}, 45 * time.Second},
	} {
		t.Run(strings.ReplaceAll(tc.name, " ", "-"), func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
			defer cancel()
			start := time.Now()
			out, err := exec.CommandContext(ctx, cachedBin, tc.args...).CombinedOutput()
			took := time.Since(start)
			t.Logf("exited after %s: %v\n%s", took.Round(time.Millisecond), err, out)
			var ee *exec.ExitError
			switch {
			case ctx.Err() != nil:
				t.Fatalf("cached serve still running after 60 s:\n%s", out)
			case err == nil:
				t.Fatalf("cached serve exited 0:\n%s", out)
			case !errors.As(err, &ee) || ee.ExitCode() <= 0:
				t.Fatalf("cached serve: %v, want a non-zero exit", err)
			}
			if took > tc.limit {
				t.Errorf("cached serve took %s to fail, want at most %s", took, tc.limit)
			}
			for _, w := range tc.want {
				if !strings.Contains(string(out), w) {
					t.Errorf("output does not say %q", w)
				}
			}
			for _, secret := range []string{gw.Secret, wrongSecret} {
				if strings.Contains(string(out), secret) {
					t.Errorf("output prints the secret key %q", secret)
				}
			}
			if strings.Contains(string(out), "cached is serving") {
				t.Error("cached announced it was serving")
			}
		})
	}

	// A signal during start-up ends it at once, and the error says which signal: a bare
	// "context canceled" would leave the operator guessing who stopped the server.
	t.Run("stopped-during-start-up", func(t *testing.T) {
		var out syncBuffer
		cmd := exec.Command(cachedBin, args(gw.Bucket, silent, gw.Access, gw.Secret)...)
		cmd.Stdout, cmd.Stderr = &out, &out
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		done := make(chan error, 1)
		go func() { done <- cmd.Wait() }()
		time.Sleep(time.Second) // well inside the bucket check, which waits up to 30 s
		start := time.Now()
		cmd.Process.Signal(syscall.SIGTERM)
		var err error
		select {
		case err = <-done:
		case <-time.After(20 * time.Second):
			cmd.Process.Kill()
			<-done
			t.Fatalf("cached serve did not stop within 20 s of SIGTERM during start-up:\n%s", out.String())
		}
		t.Logf("exited %s after SIGTERM: %v\n%s", time.Since(start).Round(time.Millisecond), err, out.String())
		var ee *exec.ExitError
		if !errors.As(err, &ee) || ee.ExitCode() <= 0 {
			t.Fatalf("cached serve: %v, want a non-zero exit", err)
		}
		if strings.Contains(out.String(), "cannot reach the endpoint") {
			t.Errorf("an interrupted start-up is reported as an unreachable endpoint:\n%s", out.String())
		}
		if !strings.Contains(out.String(), "stopped: terminated signal received") {
			t.Errorf("the error does not name the signal that stopped start-up:\n%s", out.String())
		}
	})

	t.Run("credentials-from-environment", func(t *testing.T) {
		t.Setenv("CACHED_S3_ACCESS_KEY", gw.Access)
		t.Setenv("CACHED_S3_SECRET_KEY", gw.Secret)
		srv := startServer(t, t.TempDir(), "--log-level", "debug",
			"--backend", "s3", "--s3-bucket", gw.Bucket, "--s3-endpoint", gw.Endpoint,
			"--s3-region", gw.Region, "--s3-path-style",
			"--secret-key-file", filepath.Join(shared, "secret-key"), "--upload-token-file", filepath.Join(shared, "tokens"))
		cmdline, err := os.ReadFile("/proc/" + strconv.Itoa(srv.cmd.Process.Pid) + "/cmdline")
		if err != nil {
			t.Fatal(err)
		}
		if bytes.Contains(cmdline, []byte(gw.Secret)) || bytes.Contains(cmdline, []byte(gw.Access)) {
			t.Fatalf("the S3 credentials are on the command line: %q", cmdline)
		}
		n := newNixClient(t, hostOf(srv.URL), token)
		c := buildClosure(t, n, 64<<10)
		n.run("nix", "copy", "--to", srv.URL, c.Top)
		n.run("nix", "store", "verify", "--store", srv.URL, "--trusted-public-keys", pk, "-r", c.Top)
		substituteFresh(t, n, srv.URL, pk, c)
		srv.Stop()
		log := srv.stderr.String()
		if !strings.Contains(log, "s3 backend") || !strings.Contains(log, "PUT") {
			t.Fatalf("the server log does not show the S3 backend and the uploads; the secret check below would be vacuous:\n%s", tail(log, 20))
		}
		if strings.Contains(log, gw.Secret) {
			t.Errorf("the server log prints the S3 secret key:\n%s", tail(log, 40))
		}
	})
}
