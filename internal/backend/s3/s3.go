// Package s3 is the S3 backend: objects are keys in one bucket (optionally under a prefix), in
// the layout `nix copy --to s3://BUCKET` writes, so plain nix can read what cached stored.
//
// Save streams through a multipart upload with bounded memory (PartSize*Concurrency) and
// completes it only after the caller's reader returned io.EOF, so a refused or cancelled upload
// never becomes visible; failed uploads are aborted, and AbortStaleUploads/RunSweeper clean up
// what a crash left behind. Open answers reads with lazy ranged GETs, never buffering an object.
//
// The package knows nothing of retries: the SDK's retryer is disabled and IsTransient tells a
// wrapper (backend/retry) which failures are worth another attempt. It must never log or
// return credentials.
package s3

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"strings"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	awshttp "github.com/aws/aws-sdk-go-v2/aws/transport/http"
	"github.com/aws/aws-sdk-go-v2/config"
	"github.com/aws/aws-sdk-go-v2/credentials"
	"github.com/aws/aws-sdk-go-v2/service/s3"
	"github.com/aws/smithy-go"

	"github.com/cached-dev/cached/internal/backend"
)

const (
	// DefaultPartSize is the multipart part size when Config.PartSize is zero.
	DefaultPartSize = 16 << 20
	// DefaultConcurrency is the number of parts in flight when Config.Concurrency is zero.
	DefaultConcurrency = 2

	minPartSize = 5 << 20 // S3's minimum for every part but the last
	maxPartSize = 5 << 30
	maxParts    = 10000

	// openTimeout bounds the HeadBucket check at start-up so a black-holed endpoint fails
	// start-up instead of hanging it.
	openTimeout = 30 * time.Second
)

// Config says where the bucket is and how to reach it.
type Config struct {
	Bucket   string
	Endpoint string // empty: the AWS endpoint for Region; otherwise http(s)://host[:port]
	Region   string // empty: from the SDK's default chain, or us-east-1 with a custom Endpoint

	PathStyle bool // https://endpoint/bucket/key instead of https://bucket.endpoint/key

	// Static credentials. Empty AccessKey: the SDK's default chain (environment, shared
	// profile, instance or task role).
	AccessKey, SecretKey, SessionToken string

	Prefix string // optional key prefix inside the bucket; a trailing "/" is implied

	PartSize    int64 // multipart part size; default 16 MiB, at least 5 MiB
	Concurrency int   // parts uploaded in parallel per Save; default 2
}

// Backend stores objects in an S3 bucket. Memory per Save is at most PartSize*Concurrency.
type Backend struct {
	client      *s3.Client
	transport   *http.Transport
	bucket      string
	prefix      string // "" or ends with "/"
	partSize    int64
	concurrency int
	log         *slog.Logger
	where       string // endpoint/bucket for messages, never credentials

	testCopyPart int64 // tests: copy objects larger than this in parts of this size
}

var _ backend.Backend = (*Backend)(nil)

// Open checks cfg, connects and checks the bucket is reachable with the credentials given. Its
// errors name the endpoint, bucket and region, never the credentials.
func Open(ctx context.Context, cfg Config, log *slog.Logger) (*Backend, error) {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	if err := cfg.check(); err != nil {
		return nil, err
	}
	prefix := strings.Trim(cfg.Prefix, "/")
	if prefix != "" {
		prefix += "/"
	}
	b := &Backend{
		bucket:      cfg.Bucket,
		prefix:      prefix,
		partSize:    cfg.PartSize,
		concurrency: cfg.Concurrency,
		log:         log,
	}
	if b.partSize == 0 {
		b.partSize = DefaultPartSize
	}
	if b.concurrency == 0 {
		b.concurrency = DefaultConcurrency
	}

	// No overall client timeout: a large GET streams for as long as the client reads. A dead
	// peer is caught by the dial and response-header timeouts, and by the caller's ctx.
	httpClient := awshttp.NewBuildableClient().
		WithDialerOptions(func(d *net.Dialer) { d.Timeout = 10 * time.Second }).
		WithTransportOptions(func(tr *http.Transport) {
			tr.ResponseHeaderTimeout = 2 * time.Minute
			tr.MaxIdleConnsPerHost = 64
		})
	opts := []func(*config.LoadOptions) error{
		config.WithHTTPClient(httpClient),
		// The retry wrapper owns the retry policy; two layers of retries multiply.
		config.WithRetryer(func() aws.Retryer { return aws.NopRetryer{} }),
		// Checksums only where S3 requires them: S3-compatible servers differ in what trailing
		// checksums they accept, and SigV4 payload signing or TLS already guard the bytes.
		config.WithRequestChecksumCalculation(aws.RequestChecksumCalculationWhenRequired),
		config.WithResponseChecksumValidation(aws.ResponseChecksumValidationWhenRequired),
	}
	region := cfg.Region
	if region == "" && cfg.Endpoint != "" {
		region = "us-east-1"
	}
	if region != "" {
		opts = append(opts, config.WithRegion(region))
	}
	if cfg.AccessKey != "" {
		opts = append(opts, config.WithCredentialsProvider(
			credentials.NewStaticCredentialsProvider(cfg.AccessKey, cfg.SecretKey, cfg.SessionToken)))
	}
	awsCfg, err := config.LoadDefaultConfig(ctx, opts...)
	if err != nil {
		return nil, fmt.Errorf("s3 backend: loading AWS configuration: %w", err)
	}
	if awsCfg.Region == "" {
		return nil, fmt.Errorf("s3 backend: bucket %q: no region configured (set the region, or AWS_REGION)", cfg.Bucket)
	}
	// Own the final transport (with whatever the configuration added, such as AWS_CA_BUNDLE)
	// so that Close can drop its connections.
	if bc, ok := awsCfg.HTTPClient.(*awshttp.BuildableClient); ok {
		b.transport = bc.GetTransport()
		awsCfg.HTTPClient = &http.Client{Transport: b.transport}
	}
	b.client = s3.NewFromConfig(awsCfg, func(o *s3.Options) {
		o.UsePathStyle = cfg.PathStyle
		if cfg.Endpoint != "" {
			o.BaseEndpoint = aws.String(cfg.Endpoint)
		}
	})
	endpoint := cfg.Endpoint
	if endpoint == "" {
		endpoint = "AWS"
	}
	b.where = fmt.Sprintf("endpoint %s, bucket %q, region %s", endpoint, cfg.Bucket, awsCfg.Region)

	hctx, cancel := context.WithTimeout(ctx, openTimeout)
	defer cancel()
	if awsCfg.Credentials != nil {
		// The credentials are cached, so this costs nothing later; failing here says clearly
		// what is wrong instead of a failed request.
		if _, err := awsCfg.Credentials.Retrieve(hctx); err != nil {
			b.Close()
			return nil, fmt.Errorf("s3 backend (%s): no usable credentials (give an access key, or set up the AWS environment, profile or role): %w", b.where, err)
		}
	}
	if _, err := b.client.HeadBucket(hctx, &s3.HeadBucketInput{Bucket: &b.bucket}); err != nil {
		// A HEAD response has no body, so its error is a bare status (and some servers answer
		// 404 for an unknown access key). A one-key listing tells which problem it is.
		if httpStatus(err) != 0 {
			_, lerr := b.client.ListObjectsV2(hctx, &s3.ListObjectsV2Input{Bucket: &b.bucket, MaxKeys: aws.Int32(1)})
			var ae smithy.APIError
			if errors.As(lerr, &ae) {
				err = lerr
			}
		}
		b.Close()
		return nil, fmt.Errorf("s3 backend (%s): %s: %w", b.where, describeOpenErr(err), err)
	}
	log.Info("s3 backend", "endpoint", endpoint, "bucket", cfg.Bucket, "region", awsCfg.Region,
		"prefix", prefix, "partSize", b.partSize, "concurrency", b.concurrency)
	return b, nil
}

func (c Config) check() error {
	switch {
	case c.Bucket == "":
		return errors.New("s3 backend: no bucket given")
	case c.AccessKey != "" && c.SecretKey == "":
		return errors.New("s3 backend: an access key is given without its secret key")
	case c.AccessKey == "" && c.SecretKey != "":
		return errors.New("s3 backend: a secret key is given without its access key")
	case c.PartSize != 0 && (c.PartSize < minPartSize || c.PartSize > maxPartSize):
		return fmt.Errorf("s3 backend: part size %d out of range [%d, %d]", c.PartSize, minPartSize, maxPartSize)
	case c.Concurrency < 0 || c.Concurrency > 64:
		return fmt.Errorf("s3 backend: concurrency %d out of range [1, 64]", c.Concurrency)
	}
	if c.Endpoint != "" {
		u, err := url.Parse(c.Endpoint)
		if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
			return fmt.Errorf("s3 backend: endpoint %q is not an http:// or https:// URL", c.Endpoint)
		}
		if u.User != nil {
			return errors.New("s3 backend: the endpoint URL must not carry credentials")
		}
	}
	if p := strings.Trim(c.Prefix, "/"); p != "" && !backend.ValidName(p) {
		return fmt.Errorf("s3 backend: invalid prefix %q", c.Prefix)
	}
	return nil
}

// describeOpenErr says in words what a failed bucket check most likely means.
func describeOpenErr(err error) string {
	var ae smithy.APIError
	if errors.As(err, &ae) {
		switch ae.ErrorCode() {
		case "NoSuchBucket":
			return "bucket does not exist"
		case "InvalidAccessKeyId", "XAdminUserNotFound":
			return "access key not recognized"
		case "SignatureDoesNotMatch":
			return "secret key does not match the access key"
		case "InvalidToken", "ExpiredToken", "TokenRefreshRequired":
			return "session token invalid or expired"
		case "AccessDenied", "AllAccessDisabled":
			return "access denied (check the bucket policy and the key's permissions)"
		case "PermanentRedirect", "AuthorizationHeaderMalformed", "IllegalLocationConstraintException":
			return "bucket not reachable at this endpoint (wrong region or addressing style?)"
		}
	}
	switch status := httpStatus(err); {
	case status == http.StatusNotFound:
		return "bucket does not exist"
	case status == http.StatusForbidden || status == http.StatusUnauthorized:
		return "access denied (check the access key, secret key and bucket policy)"
	case status == http.StatusMovedPermanently || status == http.StatusBadRequest:
		return "bucket not reachable at this endpoint (wrong region or addressing style?)"
	case status != 0:
		return fmt.Sprintf("bucket check failed with HTTP %d", status)
	case errors.Is(err, context.DeadlineExceeded):
		return "endpoint did not answer in time"
	case errors.Is(err, context.Canceled):
		return "bucket check interrupted"
	default:
		return "cannot reach the endpoint"
	}
}

// key maps an object name to its key in the bucket, refusing names that could escape.
func (b *Backend) key(op, name string) (string, error) {
	if !backend.ValidName(name) {
		return "", fmt.Errorf("%s %q: invalid object name", op, name)
	}
	return b.prefix + name, nil
}

// Stat describes the object with a HeadObject.
func (b *Backend) Stat(ctx context.Context, name string) (backend.FileInfo, error) {
	key, err := b.key("stat", name)
	if err != nil {
		return backend.FileInfo{}, err
	}
	out, err := b.client.HeadObject(ctx, &s3.HeadObjectInput{Bucket: &b.bucket, Key: &key})
	if err != nil {
		return backend.FileInfo{}, mapErr("stat", name, err)
	}
	return backend.FileInfo{Name: name, Size: aws.ToInt64(out.ContentLength), ModTime: aws.ToTime(out.LastModified)}, nil
}

// List pages through ListObjectsV2. Keys under the prefix that are not valid object names
// (directory markers a console made, "a//b") are skipped: no other method could reach them.
func (b *Backend) List(ctx context.Context, prefix string, fn func(backend.FileInfo) error) error {
	p := s3.NewListObjectsV2Paginator(b.client, &s3.ListObjectsV2Input{
		Bucket: &b.bucket,
		Prefix: aws.String(b.prefix + prefix),
	})
	for p.HasMorePages() {
		page, err := p.NextPage(ctx)
		if err != nil {
			return fmt.Errorf("list %q: %w", prefix, err)
		}
		for _, o := range page.Contents {
			name := strings.TrimPrefix(aws.ToString(o.Key), b.prefix)
			if !backend.ValidName(name) {
				continue
			}
			if err := fn(backend.FileInfo{Name: name, Size: aws.ToInt64(o.Size), ModTime: aws.ToTime(o.LastModified)}); err != nil {
				return err
			}
		}
	}
	return nil
}

// ListFrom lists the objects whose names start with prefix and sort after after, in name order
// (S3 lists keys in UTF-8 binary order), starting the listing there with StartAfter: following
// a journal of time-named objects costs one request per page of new names.
func (b *Backend) ListFrom(ctx context.Context, prefix, after string, fn func(backend.FileInfo) error) error {
	in := &s3.ListObjectsV2Input{Bucket: &b.bucket, Prefix: aws.String(b.prefix + prefix)}
	if after != "" {
		in.StartAfter = aws.String(b.prefix + after)
	}
	p := s3.NewListObjectsV2Paginator(b.client, in)
	for p.HasMorePages() {
		page, err := p.NextPage(ctx)
		if err != nil {
			return fmt.Errorf("list %q after %q: %w", prefix, after, err)
		}
		for _, o := range page.Contents {
			name := strings.TrimPrefix(aws.ToString(o.Key), b.prefix)
			if !backend.ValidName(name) || name <= after {
				continue
			}
			if err := fn(backend.FileInfo{Name: name, Size: aws.ToInt64(o.Size), ModTime: aws.ToTime(o.LastModified)}); err != nil {
				return err
			}
		}
	}
	return nil
}

// Remove deletes the object. S3 deletes missing keys without complaint, so a HeadObject first
// tells a missing object apart.
func (b *Backend) Remove(ctx context.Context, name string) error {
	key, err := b.key("remove", name)
	if err != nil {
		return err
	}
	if _, err := b.client.HeadObject(ctx, &s3.HeadObjectInput{Bucket: &b.bucket, Key: &key}); err != nil {
		return mapErr("remove", name, err)
	}
	if _, err := b.client.DeleteObject(ctx, &s3.DeleteObjectInput{Bucket: &b.bucket, Key: &key}); err != nil {
		return mapErr("remove", name, err)
	}
	return nil
}

// Close drops idle connections; the backend must not be used afterwards.
func (b *Backend) Close() error {
	if b.transport != nil {
		b.transport.CloseIdleConnections()
	}
	return nil
}

// Client is the underlying SDK client, for tests and tools that need what the contract lacks.
func (b *Backend) Client() *s3.Client { return b.client }

// Bucket is the bucket objects live in.
func (b *Backend) Bucket() string { return b.bucket }

// contextReader stops a copy when ctx is cancelled, so an abandoned upload stops reading.
type contextReader struct {
	ctx context.Context
	r   io.Reader
}

func (c contextReader) Read(p []byte) (int, error) {
	if err := c.ctx.Err(); err != nil {
		return 0, err
	}
	return c.r.Read(p)
}
