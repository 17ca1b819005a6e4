package s3

import (
	"context"
	"fmt"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/s3"
)

// AbortStaleUploads aborts the incomplete multipart uploads under the backend's prefix that
// were started more than olderThan ago, and returns how many it aborted. Save aborts its own
// failures; these are what a crash or a failed abort left behind, which S3 keeps (and bills)
// until someone aborts them. olderThan must exceed the longest upload, or a running Save loses
// its parts and fails.
func (b *Backend) AbortStaleUploads(ctx context.Context, olderThan time.Duration) (int, error) {
	cutoff := time.Now().Add(-olderThan)
	p := s3.NewListMultipartUploadsPaginator(b.client, &s3.ListMultipartUploadsInput{
		Bucket: &b.bucket,
		Prefix: aws.String(b.prefix),
	})
	aborted := 0
	for p.HasMorePages() {
		page, err := p.NextPage(ctx)
		if err != nil {
			return aborted, fmt.Errorf("list multipart uploads: %w", err)
		}
		for _, u := range page.Uploads {
			if u.Initiated != nil && u.Initiated.After(cutoff) {
				continue
			}
			_, err := b.client.AbortMultipartUpload(ctx, &s3.AbortMultipartUploadInput{
				Bucket:   &b.bucket,
				Key:      u.Key,
				UploadId: u.UploadId,
			})
			if err != nil && !isNoSuchUpload(err) {
				return aborted, fmt.Errorf("abort multipart upload %s of %s: %w", aws.ToString(u.UploadId), aws.ToString(u.Key), err)
			}
			if err == nil {
				aborted++
				b.log.Info("s3 stale upload aborted", "key", aws.ToString(u.Key), "uploadId", aws.ToString(u.UploadId),
					"initiated", aws.ToTime(u.Initiated))
			}
		}
	}
	return aborted, nil
}

// RunSweeper calls AbortStaleUploads every interval until ctx is done. Failures are logged and
// tried again at the next tick.
func (b *Backend) RunSweeper(ctx context.Context, every, olderThan time.Duration) {
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		n, err := b.AbortStaleUploads(ctx, olderThan)
		switch {
		case err != nil && ctx.Err() == nil:
			b.log.Warn("s3 sweep of stale uploads failed", "err", err)
		case n > 0:
			b.log.Info("s3 sweep of stale uploads", "aborted", n)
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}
