package s3

import (
	"bytes"
	"context"
	"crypto/sha256"
	"errors"
	"io"
	"log/slog"
	"math/rand/v2"
	"os"
	"strconv"
	"strings"
	"testing"
	"testing/iotest"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/s3"
	"github.com/aws/aws-sdk-go-v2/service/s3/types"

	"github.com/cached-dev/cached/internal/backend"
	"github.com/cached-dev/cached/internal/backend/backendtest"
)

func testConfig(g *backendtest.VersityGW) Config {
	return Config{
		Bucket:    g.Bucket,
		Endpoint:  g.Endpoint,
		Region:    g.Region,
		PathStyle: true,
		AccessKey: g.Access,
		SecretKey: g.Secret,
	}
}

func open(t *testing.T, cfg Config) *Backend {
	t.Helper()
	b, err := Open(t.Context(), cfg, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { b.Close() })
	return b
}

func TestConformance(t *testing.T) {
	g := backendtest.StartVersityGW(t)
	backendtest.Run(t, open(t, testConfig(g)))
}

// TestConformancePrefixSmallParts: the same suite with keys under a prefix and the smallest
// part size S3 allows, so its larger objects go through multipart uploads of many parts.
func TestConformancePrefixSmallParts(t *testing.T) {
	g := backendtest.StartVersityGW(t)
	cfg := testConfig(g)
	cfg.Prefix = "cache/one/"
	cfg.PartSize = minPartSize
	cfg.Concurrency = 3
	b := open(t, cfg)
	backendtest.Run(t, b)

	// Nothing outside the prefix is touched, and nothing outside it is listed.
	ctx := t.Context()
	if _, err := g.Client().PutObject(ctx, &s3.PutObjectInput{Bucket: &g.Bucket, Key: aws.String("other.narinfo"), Body: strings.NewReader("x")}); err != nil {
		t.Fatal(err)
	}
	if err := b.Save(ctx, "mine.narinfo", strings.NewReader("y")); err != nil {
		t.Fatal(err)
	}
	if _, err := g.Client().HeadObject(ctx, &s3.HeadObjectInput{Bucket: &g.Bucket, Key: aws.String("cache/one/mine.narinfo")}); err != nil {
		t.Fatalf("object not stored under the prefix: %v", err)
	}
	var names []string
	b.List(ctx, "", func(fi backend.FileInfo) error { names = append(names, fi.Name); return nil })
	if len(names) != 1 || names[0] != "mine.narinfo" {
		t.Fatalf("List = %v, want [mine.narinfo]", names)
	}
	if _, err := b.Stat(ctx, "other.narinfo"); !errors.Is(err, backend.ErrNotExist) {
		t.Fatalf("Stat of a key outside the prefix: %v", err)
	}
}

// failAtEnd yields n bytes and then err instead of io.EOF, as a verifying reader does when the
// content does not hash to its name.
type failAtEnd struct {
	r   io.Reader
	err error
}

func (f *failAtEnd) Read(p []byte) (int, error) {
	n, err := f.r.Read(p)
	if err == io.EOF {
		return n, f.err
	}
	return n, err
}

func multipartUploads(t *testing.T, g *backendtest.VersityGW) []types.MultipartUpload {
	t.Helper()
	out, err := g.Client().ListMultipartUploads(context.Background(), &s3.ListMultipartUploadsInput{Bucket: &g.Bucket})
	if err != nil {
		t.Fatal(err)
	}
	return out.Uploads
}

// TestRefusedMultipartNeverCompleted: a reader that fails at its very end, after more than two
// parts went up, leaves no object and no incomplete upload behind.
func TestRefusedMultipartNeverCompleted(t *testing.T) {
	g := backendtest.StartVersityGW(t)
	cfg := testConfig(g)
	cfg.PartSize = minPartSize
	b := open(t, cfg)
	ctx := t.Context()

	boom := errors.New("file hash mismatch")
	data := make([]byte, 3*minPartSize+12345)
	err := b.Save(ctx, "nar/refused.nar", &failAtEnd{bytes.NewReader(data), boom})
	if !errors.Is(err, boom) {
		t.Fatalf("Save = %v, want the reader's error", err)
	}
	if IsTransient(err) {
		t.Errorf("a failing reader is classified transient: %v", err)
	}
	if _, err := b.Stat(ctx, "nar/refused.nar"); !errors.Is(err, backend.ErrNotExist) {
		t.Fatalf("refused upload is visible: %v", err)
	}
	if ups := multipartUploads(t, g); len(ups) != 0 {
		t.Fatalf("incomplete uploads left: %d", len(ups))
	}

	// The same with a ctx cancelled after two parts.
	cctx, cancel := context.WithCancel(ctx)
	r := &cancelAt{r: bytes.NewReader(data), at: 2*minPartSize + 1, cancel: cancel}
	if err := b.Save(cctx, "nar/cancelled.nar", r); !errors.Is(err, context.Canceled) {
		t.Fatalf("cancelled Save = %v", err)
	}
	if _, err := b.Stat(ctx, "nar/cancelled.nar"); !errors.Is(err, backend.ErrNotExist) {
		t.Fatalf("cancelled upload is visible: %v", err)
	}
	if ups := multipartUploads(t, g); len(ups) != 0 {
		t.Fatalf("incomplete uploads left after cancel: %d", len(ups))
	}
}

type cancelAt struct {
	r      io.Reader
	at     int
	read   int
	cancel context.CancelFunc
}

func (c *cancelAt) Read(p []byte) (int, error) {
	if c.read >= c.at {
		c.cancel()
	}
	n, err := c.r.Read(p)
	c.read += n
	return n, err
}

// TestClientHangUpIsNotEOF: a reader's own io.ErrUnexpectedEOF (an HTTP upload cut short) is a
// failure, never the end of the input, even when it falls on a part boundary.
func TestClientHangUpIsNotEOF(t *testing.T) {
	g := backendtest.StartVersityGW(t)
	cfg := testConfig(g)
	cfg.PartSize = minPartSize
	b := open(t, cfg)
	for _, size := range []int{100, minPartSize, 2 * minPartSize, 2*minPartSize + 7} {
		r := &failAtEnd{bytes.NewReader(make([]byte, size)), io.ErrUnexpectedEOF}
		if err := b.Save(t.Context(), "nar/cut.nar", r); !errors.Is(err, io.ErrUnexpectedEOF) {
			t.Errorf("size %d: Save = %v, want io.ErrUnexpectedEOF", size, err)
		}
		if _, err := b.Stat(t.Context(), "nar/cut.nar"); !errors.Is(err, backend.ErrNotExist) {
			t.Fatalf("size %d: cut upload is visible: %v", size, err)
		}
	}
}

func TestAbortStaleUploads(t *testing.T) {
	g := backendtest.StartVersityGW(t)
	b := open(t, testConfig(g))
	ctx := t.Context()
	c := g.Client()
	// An upload a crashed process left: created, one part, never completed nor aborted.
	up, err := c.CreateMultipartUpload(ctx, &s3.CreateMultipartUploadInput{Bucket: &g.Bucket, Key: aws.String("nar/crashed.nar")})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.UploadPart(ctx, &s3.UploadPartInput{Bucket: &g.Bucket, Key: aws.String("nar/crashed.nar"), UploadId: up.UploadId,
		PartNumber: aws.Int32(1), Body: bytes.NewReader(make([]byte, 1000))}); err != nil {
		t.Fatal(err)
	}
	if n, err := b.AbortStaleUploads(ctx, time.Hour); err != nil || n != 0 {
		t.Fatalf("sweep with a bound of an hour aborted %d, %v; the upload is younger", n, err)
	}
	if ups := multipartUploads(t, g); len(ups) != 1 {
		t.Fatalf("%d uploads before the sweep, want 1", len(ups))
	}
	n, err := b.AbortStaleUploads(ctx, 0)
	if err != nil || n != 1 {
		t.Fatalf("AbortStaleUploads = %d, %v, want 1", n, err)
	}
	if ups := multipartUploads(t, g); len(ups) != 0 {
		t.Fatalf("%d uploads left after the sweep", len(ups))
	}
	if _, err := b.Stat(ctx, "nar/crashed.nar"); !errors.Is(err, backend.ErrNotExist) {
		t.Fatalf("aborted upload is visible: %v", err)
	}

	// The sweeper does the same on its own.
	if _, err := c.CreateMultipartUpload(ctx, &s3.CreateMultipartUploadInput{Bucket: &g.Bucket, Key: aws.String("nar/crashed2.nar")}); err != nil {
		t.Fatal(err)
	}
	sctx, stop := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() { b.RunSweeper(sctx, 10*time.Millisecond, 0); close(done) }()
	deadline := time.Now().Add(10 * time.Second)
	for len(multipartUploads(t, g)) != 0 {
		if time.Now().After(deadline) {
			t.Fatal("sweeper left the upload")
		}
		time.Sleep(20 * time.Millisecond)
	}
	stop()
	<-done
}

// TestObjectReplacedWhileReading: a reader that crosses an overwrite fails instead of mixing
// the old object's bytes with the new one's.
func TestObjectReplacedWhileReading(t *testing.T) {
	g := backendtest.StartVersityGW(t)
	b := open(t, testConfig(g))
	ctx := t.Context()
	if err := b.Save(ctx, "nar/x.nar", bytes.NewReader(bytes.Repeat([]byte("a"), 1000))); err != nil {
		t.Fatal(err)
	}
	obj, err := b.Open(ctx, "nar/x.nar")
	if err != nil {
		t.Fatal(err)
	}
	defer obj.Close()
	if err := b.Save(ctx, "nar/x.nar", bytes.NewReader(bytes.Repeat([]byte("b"), 1000))); err != nil {
		t.Fatal(err)
	}
	buf, err := io.ReadAll(obj)
	if err == nil {
		t.Fatalf("read %q across an overwrite without an error", buf[:10])
	}
	if !errors.Is(err, errChanged) || IsTransient(err) {
		t.Fatalf("read across an overwrite: %v, want errChanged, not transient", err)
	}
}

// TestSeekIsLazy: seeks alone issue no request, and a read continues the open body.
func TestSeekIsLazy(t *testing.T) {
	g := backendtest.StartVersityGW(t)
	b := open(t, testConfig(g))
	ctx := t.Context()
	data := make([]byte, 100000)
	for i := range data {
		data[i] = byte(i)
	}
	if err := b.Save(ctx, "nar/seek.nar", bytes.NewReader(data)); err != nil {
		t.Fatal(err)
	}
	obj, err := b.Open(ctx, "nar/seek.nar")
	if err != nil {
		t.Fatal(err)
	}
	defer obj.Close()
	o := obj.(*object)
	// http.ServeContent's size probe.
	obj.Seek(0, io.SeekEnd)
	obj.Seek(0, io.SeekStart)
	if o.body != nil {
		t.Fatal("Seek opened a body")
	}
	buf := make([]byte, 10)
	io.ReadFull(obj, buf)
	body := o.body
	obj.Seek(10, io.SeekStart) // where it already is
	io.ReadFull(obj, buf)
	if o.body != body {
		t.Error("a Seek to the current offset dropped the open body")
	}
	if !bytes.Equal(buf, data[10:20]) {
		t.Errorf("read %v", buf)
	}
	obj.Seek(-5, io.SeekEnd)
	rest, err := io.ReadAll(obj)
	if err != nil || !bytes.Equal(rest, data[len(data)-5:]) {
		t.Fatalf("tail = %v, %v", rest, err)
	}
	if _, err := obj.Seek(-1, io.SeekStart); err == nil {
		t.Error("Seek to a negative offset succeeded")
	}
	if n, err := obj.Read(buf); n != 0 || err != io.EOF {
		// after the failed seek the offset is unchanged: at the end
		t.Errorf("Read at end = %d, %v", n, err)
	}
}

func TestOpenErrors(t *testing.T) {
	g := backendtest.StartVersityGW(t)
	closed := "http://" + backendtest.ClosedAddr(t)
	tests := []struct {
		name string
		cfg  func(c *Config)
		want []string
	}{
		{"closed port", func(c *Config) { c.Endpoint = closed }, []string{"cannot reach the endpoint", closed, "connection refused"}},
		{"missing bucket", func(c *Config) { c.Bucket = "no-such-bucket" }, []string{"bucket does not exist", `"no-such-bucket"`}},
		{"wrong secret", func(c *Config) { c.SecretKey = "wrong-secret-must-not-leak" }, []string{"secret key does not match"}},
		{"wrong access key", func(c *Config) { c.AccessKey = "nobody" }, []string{"access key not recognized"}},
		{"no secret", func(c *Config) { c.SecretKey = "" }, []string{"without its secret key"}},
		{"no bucket", func(c *Config) { c.Bucket = "" }, []string{"no bucket"}},
		{"endpoint without scheme", func(c *Config) { c.Endpoint = "127.0.0.1:9000" }, []string{`"127.0.0.1:9000"`, "http://"}},
		{"tiny parts", func(c *Config) { c.PartSize = 1 << 20 }, []string{"part size 1048576"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg := testConfig(g)
			tt.cfg(&cfg)
			b, err := Open(t.Context(), cfg, slog.New(slog.DiscardHandler))
			if err == nil {
				b.Close()
				t.Fatal("Open succeeded")
			}
			msg := err.Error()
			t.Log(msg)
			for _, w := range tt.want {
				if !strings.Contains(msg, w) {
					t.Errorf("error %q lacks %q", msg, w)
				}
			}
			for _, secret := range []string{g.Secret, "wrong-secret-must-not-leak"} {
				if strings.Contains(msg, secret) {
					t.Errorf("error %q contains the secret", msg)
				}
			}
			if tt.name == "closed port" && !IsTransient(err) {
				t.Errorf("connection refused is not transient: %v", err)
			}
		})
	}
	// The messages name where: endpoint, bucket and region.
	cfg := testConfig(g)
	cfg.Bucket = "no-such-bucket"
	_, err := Open(t.Context(), cfg, nil)
	for _, w := range []string{g.Endpoint, "no-such-bucket", "us-east-1"} {
		if err == nil || !strings.Contains(err.Error(), w) {
			t.Errorf("error %v does not name %s", err, w)
		}
	}
}

// TestCredentialChain: without an access key the SDK's default chain is used; here the
// environment, and with nothing anywhere the error says so.
func TestCredentialChain(t *testing.T) {
	g := backendtest.StartVersityGW(t)
	t.Setenv("AWS_CONFIG_FILE", "/nonexistent")
	t.Setenv("AWS_SHARED_CREDENTIALS_FILE", "/nonexistent")
	t.Setenv("AWS_EC2_METADATA_DISABLED", "true")
	t.Setenv("AWS_ACCESS_KEY_ID", g.Access)
	t.Setenv("AWS_SECRET_ACCESS_KEY", g.Secret)
	cfg := testConfig(g)
	cfg.AccessKey, cfg.SecretKey = "", ""
	open(t, cfg)

	t.Setenv("AWS_ACCESS_KEY_ID", "")
	t.Setenv("AWS_SECRET_ACCESS_KEY", "")
	_, err := Open(t.Context(), cfg, nil)
	if err == nil || !strings.Contains(err.Error(), "no usable credentials") {
		t.Fatalf("Open without credentials: %v", err)
	}
	t.Log(err)
}

// TestBigObjectFlatMemory streams 1 GiB through Save and back through Open, comparing hashes;
// the test process's peak RSS must stay far below the object's size.
func TestBigObjectFlatMemory(t *testing.T) {
	size := int64(1 << 30)
	if s := os.Getenv("CACHED_BIG_SIZE"); s != "" {
		size, _ = strconv.ParseInt(s, 10, 64)
	}
	g := backendtest.StartVersityGW(t)
	b := open(t, testConfig(g))
	ctx := t.Context()

	base := resetPeakRSS(t)
	start := time.Now()
	src := io.LimitReader(rand.NewChaCha8([32]byte{1}), size)
	wh := sha256.New()
	if err := b.Save(ctx, "nar/big.nar", io.TeeReader(src, wh)); err != nil {
		t.Fatal(err)
	}
	saved := time.Since(start)
	obj, err := b.Open(ctx, "nar/big.nar")
	if err != nil {
		t.Fatal(err)
	}
	rh := sha256.New()
	n, err := io.Copy(rh, obj)
	obj.Close()
	if err != nil || n != size {
		t.Fatalf("read back %d bytes, %v", n, err)
	}
	if !bytes.Equal(wh.Sum(nil), rh.Sum(nil)) {
		t.Fatal("read back other bytes than were saved")
	}
	peak := peakRSS(t)
	delta := peak - base
	t.Logf("%d MiB: save %v, read %v; RSS before %d MiB, peak %d MiB, delta %d MiB",
		size>>20, saved.Round(time.Millisecond), (time.Since(start) - saved).Round(time.Millisecond), base>>20, peak>>20, delta>>20)
	if delta > 200<<20 {
		t.Errorf("peak RSS grew by %d MiB streaming %d MiB", delta>>20, size>>20)
	}
	if err := b.Remove(ctx, "nar/big.nar"); err != nil {
		t.Fatal(err)
	}
}

func TestMove(t *testing.T) {
	g := backendtest.StartVersityGW(t)
	b := open(t, testConfig(g))
	backendtest.RunMove(t, b)

	ctx := t.Context()
	// Keys with characters a URL escapes survive the copy source.
	odd := "realisations/sha256:1a+b c!out.doi"
	if err := b.Save(ctx, "staging/odd", strings.NewReader("odd")); err != nil {
		t.Fatal(err)
	}
	if err := b.Move(ctx, "staging/odd", odd); err != nil {
		t.Fatal(err)
	}
	if err := b.Move(ctx, odd, "staging/odd2"); err != nil {
		t.Fatal(err)
	}
	mustStat(t, b, "staging/odd2", 3)

	// An object larger than one copy is copied in parts.
	b.testCopyPart = minPartSize
	data := make([]byte, 2*minPartSize+99)
	for i := range data {
		data[i] = byte(i * 7)
	}
	if err := b.Save(ctx, "staging/big", bytes.NewReader(data)); err != nil {
		t.Fatal(err)
	}
	if err := b.Move(ctx, "staging/big", "nar/big.nar.zst"); err != nil {
		t.Fatal(err)
	}
	obj, err := b.Open(ctx, "nar/big.nar.zst")
	if err != nil {
		t.Fatal(err)
	}
	defer obj.Close()
	got, err := io.ReadAll(obj)
	if err != nil || !bytes.Equal(got, data) {
		t.Fatalf("moved object: %d bytes, %v", len(got), err)
	}
	if _, err := b.Stat(ctx, "staging/big"); !errors.Is(err, backend.ErrNotExist) {
		t.Fatalf("source left after a multipart move: %v", err)
	}
	if ups := multipartUploads(t, g); len(ups) != 0 {
		t.Fatalf("%d uploads left", len(ups))
	}
}

func mustStat(t *testing.T, b *Backend, name string, size int64) {
	t.Helper()
	fi, err := b.Stat(t.Context(), name)
	if err != nil || fi.Size != size {
		t.Fatalf("Stat %s = %+v, %v", name, fi, err)
	}
}

// TestPartBoundaries: sizes at and around part boundaries, where the single-request and
// multipart paths meet, round-trip exactly.
func TestPartBoundaries(t *testing.T) {
	g := backendtest.StartVersityGW(t)
	cfg := testConfig(g)
	cfg.PartSize = minPartSize
	b := open(t, cfg)
	ctx := t.Context()
	for _, size := range []int{0, 1, 64 << 10, 64<<10 + 1, minPartSize - 1, minPartSize, minPartSize + 1, 2 * minPartSize, 2*minPartSize + 1} {
		data := make([]byte, size)
		for i := range data {
			data[i] = byte(i*31 + i>>13)
		}
		// One byte per Read: the reading loops must not assume full reads.
		var rd io.Reader = bytes.NewReader(data)
		if size < 1<<20 {
			rd = iotest.OneByteReader(rd)
		}
		if err := b.Save(ctx, "nar/edge.nar", rd); err != nil {
			t.Fatalf("size %d: %v", size, err)
		}
		obj, err := b.Open(ctx, "nar/edge.nar")
		if err != nil {
			t.Fatal(err)
		}
		got, err := io.ReadAll(obj)
		obj.Close()
		if err != nil || !bytes.Equal(got, data) {
			t.Fatalf("size %d: read back %d bytes, %v", size, len(got), err)
		}
	}
	if ups := multipartUploads(t, g); len(ups) != 0 {
		t.Fatalf("%d uploads left", len(ups))
	}
}
