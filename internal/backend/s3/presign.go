package s3

import (
	"context"
	"fmt"
	"time"

	"github.com/aws/aws-sdk-go-v2/service/s3"
	"github.com/cached-dev/cached/internal/backend"
)

// MaxPresignExpiry is the longest validity SigV4 allows a presigned URL.
const MaxPresignExpiry = 7 * 24 * time.Hour

// PresignGet returns a URL that fetches the object with a plain GET until expiry has passed,
// signed with the backend's credentials (no request is made). Temporary credentials end the
// URL's validity sooner, when they expire.
func (b *Backend) PresignGet(ctx context.Context, name string, expiry time.Duration) (string, error) {
	key, err := b.key("presign", name)
	if err != nil {
		return "", err
	}
	if expiry <= 0 || expiry > MaxPresignExpiry {
		return "", fmt.Errorf("presign %s: expiry %v out of range (0, %v]", name, expiry, MaxPresignExpiry)
	}
	req, err := s3.NewPresignClient(b.client, s3.WithPresignExpires(expiry)).PresignGetObject(ctx,
		&s3.GetObjectInput{Bucket: &b.bucket, Key: &key})
	if err != nil {
		return "", fmt.Errorf("presign %s: %w", name, err)
	}
	return req.URL, nil
}

// Key is the bucket key of the object name (the prefix and the name), or an error for a name
// that is not valid.
func (b *Backend) Key(name string) (string, error) { return b.key("key", name) }

var _ backend.Redirector = (*Backend)(nil)
