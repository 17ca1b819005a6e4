package retry

import (
	"bytes"
	"context"
	"crypto/sha256"
	"errors"
	"io"
	"log/slog"
	"math/rand/v2"
	"strings"
	"testing"
	"time"

	"github.com/cached-dev/cached/internal/backend"
	"github.com/cached-dev/cached/internal/backend/backendtest"
	"github.com/cached-dev/cached/internal/backend/s3"
)

func openS3(t *testing.T, g *backendtest.VersityGW) *s3.Backend {
	t.Helper()
	b, err := s3.Open(t.Context(), s3.Config{
		Bucket: g.Bucket, Endpoint: g.Endpoint, Region: g.Region, PathStyle: true,
		AccessKey: g.Access, SecretKey: g.Secret,
	}, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { b.Close() })
	return b
}

// TestS3ConformanceThroughRetry: the wrapper changes nothing a caller can see when S3 is well.
func TestS3ConformanceThroughRetry(t *testing.T) {
	g := backendtest.StartVersityGW(t)
	backendtest.Run(t, New(openS3(t, g), Config{}))
}

// TestS3Outage: with the S3 server down, operations fail with transient errors; a retry that
// outlasts the outage succeeds, and so does everything after it, on the same backend.
func TestS3Outage(t *testing.T) {
	g := backendtest.StartVersityGW(t)
	b := openS3(t, g)
	ctx := t.Context()
	if err := b.Save(ctx, "a.narinfo", bytes.NewReader([]byte("StorePath: x\n"))); err != nil {
		t.Fatal(err)
	}

	g.Stop()
	short := New(b, Config{MaxAttempts: 2, BaseDelay: 10 * time.Millisecond})
	if _, err := short.Stat(ctx, "a.narinfo"); err == nil || !s3.IsTransient(err) {
		t.Fatalf("Stat while down: %v, want a transient error", err)
	}
	if err := short.Save(ctx, "b.narinfo", bytes.NewReader([]byte("x"))); err == nil || !s3.IsTransient(err) {
		t.Fatalf("Save while down: %v, want a transient error", err)
	}
	if _, err := short.Open(ctx, "a.narinfo"); err == nil || !s3.IsTransient(err) {
		t.Fatalf("Open while down: %v, want a transient error", err)
	}
	if err := short.List(ctx, "", func(backend.FileInfo) error { return nil }); err == nil || !s3.IsTransient(err) {
		t.Fatalf("List while down: %v, want a transient error", err)
	}

	// A retrying Stat started while down succeeds once the server is back. MaxElapsed bounds it,
	// not the default 8 attempts (about 1.2 s of delays at these settings), which a loaded
	// machine's restart of the S3 server can outlast.
	long := New(b, Config{MaxAttempts: 1000, BaseDelay: 50 * time.Millisecond, MaxDelay: 200 * time.Millisecond, MaxElapsed: 30 * time.Second})
	restarted := restartAfter(g, 500*time.Millisecond)
	start := time.Now()
	fi, err := long.Stat(ctx, "a.narinfo")
	if err != nil || fi.Size != 13 {
		t.Fatalf("Stat across the outage = %+v, %v", fi, err)
	}
	if err := <-restarted; err != nil {
		t.Fatal(err)
	}
	t.Logf("Stat bridged an outage of 500ms in %v", time.Since(start).Round(time.Millisecond))

	// And the backend keeps working.
	if err := long.Save(ctx, "b.narinfo", bytes.NewReader([]byte("y"))); err != nil {
		t.Fatal(err)
	}
	if err := long.Remove(ctx, "b.narinfo"); err != nil {
		t.Fatal(err)
	}
}

// TestS3OutageMidRead: a download survives the server going away and coming back: the read
// resumes with a ranged GET where it stopped.
func TestS3OutageMidRead(t *testing.T) {
	g := backendtest.StartVersityGW(t)
	var logged bytes.Buffer // only this goroutine reads, so only it logs
	r := New(openS3(t, g), Config{MaxAttempts: 1000, BaseDelay: 50 * time.Millisecond, MaxDelay: 200 * time.Millisecond, MaxElapsed: 30 * time.Second,
		Log: slog.New(slog.NewTextHandler(&logged, nil))})
	ctx := t.Context()
	const size = 40 << 20
	want := sha256.New()
	if err := r.Save(ctx, "nar/big.nar", io.TeeReader(io.LimitReader(rand.NewChaCha8([32]byte{7}), size), want)); err != nil {
		t.Fatal(err)
	}
	obj, err := r.Open(ctx, "nar/big.nar")
	if err != nil {
		t.Fatal(err)
	}
	defer obj.Close()
	got := sha256.New()
	if _, err := io.CopyN(got, obj, 1<<20); err != nil {
		t.Fatal(err)
	}
	g.Stop()
	restarted := restartAfter(g, 300*time.Millisecond)
	n, err := io.Copy(got, obj)
	if err != nil || n != size-1<<20 {
		t.Fatalf("read across the outage: %d bytes, %v", n, err)
	}
	if err := <-restarted; err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got.Sum(nil), want.Sum(nil)) {
		t.Fatal("bytes read across the outage differ")
	}
	if !strings.Contains(logged.String(), "op=read") {
		t.Fatalf("no read was retried; the outage was not seen:\n%s", logged.String())
	}
	t.Logf("retries:\n%s", logged.String())
}

func restartAfter(g *backendtest.VersityGW, d time.Duration) <-chan error {
	errc := make(chan error, 1)
	go func() {
		time.Sleep(d)
		errc <- g.Start()
	}()
	return errc
}

// TestS3NotExistNotRetried: a missing key answers at once, however generous the policy.
func TestS3NotExistNotRetried(t *testing.T) {
	g := backendtest.StartVersityGW(t)
	r := New(openS3(t, g), Config{BaseDelay: time.Hour})
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	defer cancel()
	if _, err := r.Stat(ctx, "nope"); !errors.Is(err, backend.ErrNotExist) {
		t.Fatalf("Stat: %v", err)
	}
}
