package backendtest

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"go/build"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/credentials"
	"github.com/aws/aws-sdk-go-v2/service/s3"
)

// VersityGWVersion is the versitygw release the S3 tests are run against.
const VersityGWVersion = "v1.8.0"

// VersityGW is a real S3 server (versitygw with its posix backend, data in a t.TempDir) on a
// free port of 127.0.0.1. It can be stopped and started again on the same port and directory
// to test outages.
type VersityGW struct {
	Endpoint string // http://127.0.0.1:PORT
	Access   string
	Secret   string
	Region   string
	Bucket   string // created empty by StartVersityGW

	t    testing.TB
	bin  string
	addr string
	dir  string
	log  *os.File

	mu   sync.Mutex
	cmd  *exec.Cmd
	done chan struct{} // closed when cmd exited
}

// FindVersityGW returns the path of the versitygw binary: $CACHED_VERSITYGW, versitygw on PATH,
// or $(go env GOPATH)/bin/versitygw. If there is none the test is skipped, or failed under
// CI=true, where a skipped S3 suite would pass unnoticed.
func FindVersityGW(t testing.TB) string {
	t.Helper()
	name := "versitygw"
	if p := os.Getenv("CACHED_VERSITYGW"); p != "" {
		name = p
	}
	if p, err := exec.LookPath(name); err == nil {
		return p
	}
	for _, dir := range filepath.SplitList(build.Default.GOPATH) {
		p := filepath.Join(dir, "bin", "versitygw")
		if st, err := os.Stat(p); err == nil && st.Mode().IsRegular() {
			return p
		}
	}
	msg := "versitygw not found (install: go install github.com/versity/versitygw/cmd/versitygw@" + VersityGWVersion +
		", or set CACHED_VERSITYGW); S3 tests are skipped here but fail under CI=true"
	if os.Getenv("CI") == "true" {
		t.Fatal(msg)
	}
	t.Skip(msg) // under CI=true the Fatal above fails instead
	return ""
}

// StartVersityGW starts versitygw with an empty bucket and stops it when the test ends.
func StartVersityGW(t testing.TB) *VersityGW {
	t.Helper()
	g := &VersityGW{
		Access: "cachedtestaccess",
		Secret: "cachedtestsecret-do-not-log",
		Region: "us-east-1",
		Bucket: "cached-test",
		t:      t,
		bin:    FindVersityGW(t),
		dir:    t.TempDir(),
	}
	logf, err := os.Create(filepath.Join(t.TempDir(), "versitygw.log"))
	if err != nil {
		t.Fatal(err)
	}
	g.log = logf
	t.Cleanup(func() {
		g.Stop()
		logf.Close()
	})
	// A port picked free can be taken before versitygw binds it; pick again then.
	for attempt := 0; ; attempt++ {
		g.addr = freeAddr(t)
		g.Endpoint = "http://" + g.addr
		err = g.start()
		if err == nil {
			break
		}
		if attempt == 2 {
			t.Fatalf("versitygw: %v\n%s", err, g.Log())
		}
	}
	g.CreateBucket(t, g.Bucket)
	return g
}

func freeAddr(t testing.TB) string {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().String()
}

// Start starts a stopped server again on the same port and directory, and waits until it
// answers. It may be called from any goroutine, so it returns its error instead of failing the
// test.
func (g *VersityGW) Start() error {
	if err := g.start(); err != nil {
		return fmt.Errorf("versitygw restart: %w\n%s", err, g.Log())
	}
	return nil
}

func (g *VersityGW) start() error {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.cmd != nil {
		return errors.New("already running")
	}
	cmd := exec.Command(g.bin, "--access", g.Access, "--secret", g.Secret, "--region", g.Region,
		"--port", g.addr, "--quiet", "posix", g.dir)
	cmd.Stdout, cmd.Stderr = g.log, g.log
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL} // never outlive a killed test
	if err := cmd.Start(); err != nil {
		return err
	}
	done := make(chan struct{})
	go func() { cmd.Wait(); close(done) }()
	client := &http.Client{Timeout: time.Second}
	deadline := time.Now().Add(15 * time.Second)
	for {
		select {
		case <-done:
			return fmt.Errorf("exited at start-up: %v", cmd.ProcessState)
		default:
		}
		// Any HTTP answer (403 to an anonymous request) means it serves.
		if resp, err := client.Get(g.Endpoint + "/"); err == nil {
			resp.Body.Close()
			g.cmd, g.done = cmd, done
			return nil
		}
		if time.Now().After(deadline) {
			cmd.Process.Kill()
			<-done
			return errors.New("did not answer within 15s")
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// Stop kills the server (as a crash would) and waits for it to exit; its port refuses
// connections until Start.
func (g *VersityGW) Stop() {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.cmd == nil {
		return
	}
	g.cmd.Process.Kill()
	<-g.done
	g.cmd, g.done = nil, nil
}

// Log is what versitygw printed so far, for failure messages.
func (g *VersityGW) Log() string {
	data, _ := os.ReadFile(g.log.Name())
	if len(data) > 4096 {
		data = data[len(data)-4096:]
	}
	return string(bytes.TrimSpace(data))
}

// Client is an SDK client for the server, for what a test checks behind a backend's back.
func (g *VersityGW) Client() *s3.Client {
	return s3.New(s3.Options{
		Region:       g.Region,
		BaseEndpoint: aws.String(g.Endpoint),
		UsePathStyle: true,
		Credentials:  credentials.NewStaticCredentialsProvider(g.Access, g.Secret, ""),
		Retryer:      aws.NopRetryer{},
	})
}

// CreateBucket creates an empty bucket, so tests sharing one server need not share a bucket.
func (g *VersityGW) CreateBucket(t testing.TB, name string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if _, err := g.Client().CreateBucket(ctx, &s3.CreateBucketInput{Bucket: &name}); err != nil {
		t.Fatalf("create bucket %s: %v\n%s", name, err, g.Log())
	}
}

// ClosedAddr is a 127.0.0.1 address nothing listens on (for unreachable endpoints).
func ClosedAddr(t testing.TB) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close()
	return addr
}
