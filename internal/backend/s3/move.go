package s3

import (
	"context"
	"fmt"
	"strings"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/s3"
	"github.com/aws/aws-sdk-go-v2/service/s3/types"

	"github.com/cached-dev/cached/internal/backend"
)

const (
	// maxCopy is the largest object one CopyObject can copy; larger ones are copied in parts.
	maxCopy = 5 << 30
	// copyPartSize is the size of those parts (copied inside S3, so it costs no memory here).
	copyPartSize = 1 << 30
)

var _ backend.Mover = (*Backend)(nil)

// Move copies from to to inside S3 (nothing passes through this process) and then deletes
// from. S3 shows to only once the copy is complete. The copy is conditional on the ETag seen
// first, so an overwrite of from during the move fails it rather than mixing versions.
func (b *Backend) Move(ctx context.Context, from, to string) error {
	src, err := b.key("move", from)
	if err != nil {
		return err
	}
	dst, err := b.key("move", to)
	if err != nil {
		return err
	}
	head, err := b.client.HeadObject(ctx, &s3.HeadObjectInput{Bucket: &b.bucket, Key: &src})
	if err != nil {
		return mapErr("move", from, err)
	}
	source := b.bucket + "/" + escapeKey(src)
	if size := aws.ToInt64(head.ContentLength); size <= b.maxCopy() {
		_, err = b.client.CopyObject(ctx, &s3.CopyObjectInput{
			Bucket:            &b.bucket,
			Key:               &dst,
			CopySource:        &source,
			CopySourceIfMatch: head.ETag,
		})
	} else {
		err = b.copyMultipart(ctx, to, dst, source, head.ETag, size)
	}
	if err != nil {
		return mapErr("move "+from+" to", to, err)
	}
	if _, err := b.client.DeleteObject(ctx, &s3.DeleteObjectInput{Bucket: &b.bucket, Key: &src}); err != nil {
		return fmt.Errorf("move %s to %s: delete source: %w", from, to, err)
	}
	return nil
}

// maxCopy and copyPart yield to testCopyPart, so that tests run the multipart path on small
// objects.
func (b *Backend) maxCopy() int64 {
	if b.testCopyPart > 0 {
		return b.testCopyPart
	}
	return maxCopy
}

func (b *Backend) copyPart() int64 {
	if b.testCopyPart > 0 {
		return b.testCopyPart
	}
	return copyPartSize
}

func (b *Backend) copyMultipart(ctx context.Context, name, dst, source string, etag *string, size int64) (err error) {
	created, err := b.client.CreateMultipartUpload(ctx, &s3.CreateMultipartUploadInput{
		Bucket:      &b.bucket,
		Key:         &dst,
		ContentType: contentType(name),
	})
	if err != nil {
		return fmt.Errorf("start multipart copy: %w", err)
	}
	defer func() {
		if err != nil {
			b.abort(ctx, name, dst, created.UploadId)
		}
	}()
	var parts []types.CompletedPart
	for off, num := int64(0), int32(1); off < size; off, num = off+b.copyPart(), num+1 {
		end := min(off+b.copyPart(), size) - 1
		out, err := b.client.UploadPartCopy(ctx, &s3.UploadPartCopyInput{
			Bucket:            &b.bucket,
			Key:               &dst,
			UploadId:          created.UploadId,
			PartNumber:        aws.Int32(num),
			CopySource:        &source,
			CopySourceIfMatch: etag,
			CopySourceRange:   aws.String(fmt.Sprintf("bytes=%d-%d", off, end)),
		})
		if err != nil {
			return fmt.Errorf("copy part %d: %w", num, err)
		}
		parts = append(parts, types.CompletedPart{ETag: out.CopyPartResult.ETag, PartNumber: aws.Int32(num)})
	}
	_, err = b.client.CompleteMultipartUpload(ctx, &s3.CompleteMultipartUploadInput{
		Bucket:          &b.bucket,
		Key:             &dst,
		UploadId:        created.UploadId,
		MultipartUpload: &types.CompletedMultipartUpload{Parts: parts},
	})
	if err != nil {
		return fmt.Errorf("complete multipart copy: %w", err)
	}
	return nil
}

// escapeKey percent-encodes a key for x-amz-copy-source: everything but unreserved characters
// and "/". url.PathEscape keeps "+", which S3-compatible servers may decode as a space (a build
// log of gtk+3 would not be found).
func escapeKey(key string) string {
	const hex = "0123456789ABCDEF"
	var sb strings.Builder
	for i := 0; i < len(key); i++ {
		c := key[i]
		switch {
		case 'a' <= c && c <= 'z', 'A' <= c && c <= 'Z', '0' <= c && c <= '9',
			c == '-', c == '_', c == '.', c == '~', c == '/':
			sb.WriteByte(c)
		default:
			sb.WriteByte('%')
			sb.WriteByte(hex[c>>4])
			sb.WriteByte(hex[c&15])
		}
	}
	return sb.String()
}
