package s3

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/s3"
	"github.com/aws/aws-sdk-go-v2/service/s3/types"
)

// partDrainTimeout bounds how long a cancelled upload waits for its parts in flight.
const partDrainTimeout = 30 * time.Second

// abortTimeout bounds the clean-up of a failed upload, which runs even when the caller's ctx
// is already cancelled.
const abortTimeout = time.Minute

// Save streams rd to name. An object smaller than a part is one PutObject; a larger one is a
// multipart upload that is completed only after rd returned io.EOF, so S3 shows either the old
// object or the whole new one. On any failure the upload is aborted.
func (b *Backend) Save(ctx context.Context, name string, rd io.Reader) error {
	key, err := b.key("save", name)
	if err != nil {
		return err
	}
	rd = contextReader{ctx, rd}
	// The first part's buffer grows as it fills, so that the many small objects (narinfos,
	// listings, small NARs) cost little memory.
	first, eof, err := readFirst(rd, b.partSize)
	if err != nil {
		return b.readErr(ctx, name, err)
	}
	if !eof {
		return b.saveMultipart(ctx, name, key, rd, first)
	}
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("save %s: %w", name, err)
	}
	_, err = b.client.PutObject(ctx, &s3.PutObjectInput{
		Bucket:        &b.bucket,
		Key:           &key,
		Body:          bytes.NewReader(first),
		ContentLength: aws.Int64(int64(len(first))),
		ContentType:   contentType(name),
	})
	if err != nil {
		return fmt.Errorf("save %s: %w", name, err)
	}
	return nil
}

// readErr wraps a failure reading the caller's input: a cancelled ctx as itself, anything else
// as an inputError so it is never taken for a transient S3 failure.
func (b *Backend) readErr(ctx context.Context, name string, err error) error {
	if cerr := ctx.Err(); cerr != nil && errors.Is(err, cerr) {
		return fmt.Errorf("save %s: %w", name, err)
	}
	return fmt.Errorf("save %s: reading input: %w", name, &inputError{err})
}

// saveMultipart uploads first (a full part) and then the rest of rd, in parts.
func (b *Backend) saveMultipart(ctx context.Context, name, key string, rd io.Reader, first []byte) (err error) {
	created, err := b.client.CreateMultipartUpload(ctx, &s3.CreateMultipartUploadInput{
		Bucket:      &b.bucket,
		Key:         &key,
		ContentType: contentType(name),
	})
	if err != nil {
		return fmt.Errorf("save %s: start multipart upload: %w", name, err)
	}
	uploadID := created.UploadId
	defer func() {
		if err != nil {
			b.abort(ctx, name, key, uploadID)
		}
	}()

	// A part failure cancels uctx, which stops the reading loop and the other parts. The
	// caller's ctx only stops the reading: parts already in flight are let finish (for at most
	// partDrainTimeout), so that none can land after the abort and bring the upload back.
	uctx, cancel := context.WithCancelCause(context.WithoutCancel(ctx))
	defer cancel(nil)
	stopDrain := context.AfterFunc(ctx, func() {
		time.AfterFunc(partDrainTimeout, func() { cancel(context.Cause(ctx)) })
	})
	defer stopDrain()
	var (
		wg    sync.WaitGroup
		mu    sync.Mutex
		parts []types.CompletedPart
		// bufs holds the upload's part buffers, and so bounds its memory: a part is read only
		// into a buffer taken from it, and the buffer goes back once the part is uploaded. A
		// nil entry is a buffer not allocated yet.
		bufs = make(chan []byte, b.concurrency)
	)
	for range b.concurrency - 1 {
		bufs <- nil
	}
	upload := func(num int32, data []byte) {
		defer wg.Done()
		out, err := b.client.UploadPart(uctx, &s3.UploadPartInput{
			Bucket:        &b.bucket,
			Key:           &key,
			UploadId:      uploadID,
			PartNumber:    aws.Int32(num),
			Body:          bytes.NewReader(data),
			ContentLength: aws.Int64(int64(len(data))),
		})
		if err != nil {
			// The buffer is dropped, not reused: after a failed request the HTTP transport
			// may still be reading the body.
			bufs <- nil
			cancel(fmt.Errorf("upload part %d: %w", num, err))
			return
		}
		bufs <- data[:cap(data)]
		mu.Lock()
		parts = append(parts, types.CompletedPart{ETag: out.ETag, PartNumber: aws.Int32(num)})
		mu.Unlock()
	}

	wg.Add(1)
	go upload(1, first)
	var readErr error
	for num := int32(2); ; num++ {
		var buf []byte
		select {
		case buf = <-bufs:
		case <-uctx.Done():
		case <-ctx.Done():
		}
		if uctx.Err() != nil || ctx.Err() != nil {
			break
		}
		if buf == nil {
			buf = make([]byte, b.partSize)
		}
		n, rerr := fill(rd, buf)
		if rerr != nil && rerr != io.EOF {
			readErr = rerr
			break
		}
		if n == 0 {
			break
		}
		if num > maxParts {
			cancel(fmt.Errorf("object is larger than %d parts of %d bytes", maxParts, b.partSize))
			break
		}
		wg.Add(1)
		go upload(num, buf[:n])
		if rerr == io.EOF {
			break
		}
	}
	wg.Wait()

	switch {
	case readErr != nil:
		return b.readErr(ctx, name, readErr)
	case ctx.Err() != nil:
		return fmt.Errorf("save %s: %w", name, ctx.Err())
	case context.Cause(uctx) != nil:
		return fmt.Errorf("save %s: %w", name, context.Cause(uctx))
	}
	slices.SortFunc(parts, func(a, b types.CompletedPart) int { return int(*a.PartNumber - *b.PartNumber) })
	_, err = b.client.CompleteMultipartUpload(ctx, &s3.CompleteMultipartUploadInput{
		Bucket:          &b.bucket,
		Key:             &key,
		UploadId:        uploadID,
		MultipartUpload: &types.CompletedMultipartUpload{Parts: parts},
	})
	if err != nil {
		return fmt.Errorf("save %s: complete multipart upload: %w", name, err)
	}
	return nil
}

// abort drops a failed upload's parts. It runs even when ctx is cancelled (that is often why
// the upload failed); if it fails too, the sweeper removes the parts later. A part whose request
// was cut off may still land after the abort (S3 documents this: "it might be necessary to abort
// a given multipart upload multiple times"), so the abort is repeated until the upload is gone.
func (b *Backend) abort(ctx context.Context, name, key string, uploadID *string) {
	actx, cancel := context.WithTimeout(context.WithoutCancel(ctx), abortTimeout)
	defer cancel()
	for attempt := 1; ; attempt++ {
		_, err := b.client.AbortMultipartUpload(actx, &s3.AbortMultipartUploadInput{
			Bucket:   &b.bucket,
			Key:      &key,
			UploadId: uploadID,
		})
		if err != nil && !isNoSuchUpload(err) {
			b.log.Warn("s3 abort multipart upload failed; the sweeper will retry", "name", name, "uploadId", aws.ToString(uploadID), "err", err)
			return
		}
		if attempt == 5 {
			return
		}
		// Gone for good once listing its parts says there is no such upload.
		time.Sleep(time.Duration(attempt) * 100 * time.Millisecond)
		_, err = b.client.ListParts(actx, &s3.ListPartsInput{Bucket: &b.bucket, Key: &key, UploadId: uploadID, MaxParts: aws.Int32(1)})
		if isNoSuchUpload(err) || (err != nil && !isNoSuchUpload(err) && actx.Err() != nil) {
			return
		}
	}
}

// readFirst reads up to max bytes, growing its buffer as it goes so that a small object (most
// narinfos are under a kilobyte) costs little memory. eof says rd ended within max.
func readFirst(rd io.Reader, max int64) (buf []byte, eof bool, err error) {
	buf = make([]byte, 0, min(64<<10, max))
	for {
		if len(buf) == cap(buf) {
			if int64(len(buf)) == max {
				return buf, false, nil
			}
			bigger := make([]byte, len(buf), min(2*int64(cap(buf)), max))
			copy(bigger, buf)
			buf = bigger
		}
		n, err := rd.Read(buf[len(buf):cap(buf)])
		buf = buf[:len(buf)+n]
		if err == io.EOF {
			return buf, true, nil
		}
		if err != nil {
			return nil, false, err
		}
	}
}

// fill reads until buf is full or rd fails; io.EOF is returned as is. Unlike io.ReadFull it
// never turns an error into another: a reader's own io.ErrUnexpectedEOF (a client that hung up)
// must not look like the clean end of the input.
func fill(rd io.Reader, buf []byte) (int, error) {
	n := 0
	for n < len(buf) {
		m, err := rd.Read(buf[n:])
		n += m
		if err != nil {
			return n, err
		}
	}
	return n, nil
}

// contentType is what `nix copy --to s3://` sets, so a bucket served directly over HTTP looks
// the same.
func contentType(name string) *string {
	switch {
	case name == "nix-cache-info":
		return aws.String("text/x-nix-cache-info")
	case strings.HasSuffix(name, ".narinfo"):
		return aws.String("text/x-nix-narinfo")
	case strings.HasPrefix(name, "nar/"):
		return aws.String("application/x-nix-nar")
	default:
		return nil
	}
}
