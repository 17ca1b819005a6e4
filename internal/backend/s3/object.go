package s3

import (
	"context"
	"fmt"
	"io"
	"io/fs"
	"net/http"
	"strconv"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/s3"

	"github.com/cached-dev/cached/internal/backend"
)

// Open describes the object with a HeadObject and returns a reader that fetches it with
// ranged GETs as it is read. Reads use ctx.
func (b *Backend) Open(ctx context.Context, name string) (backend.Object, error) {
	key, err := b.key("open", name)
	if err != nil {
		return nil, err
	}
	out, err := b.client.HeadObject(ctx, &s3.HeadObjectInput{Bucket: &b.bucket, Key: &key})
	if err != nil {
		return nil, mapErr("open", name, err)
	}
	return &object{
		b:    b,
		ctx:  ctx,
		key:  key,
		etag: aws.ToString(out.ETag),
		info: backend.FileInfo{Name: name, Size: aws.ToInt64(out.ContentLength), ModTime: aws.ToTime(out.LastModified)},
	}, nil
}

// object reads a stored object through one streaming GET at a time. Seek only moves the
// offset; the next Read reuses the open body if it is already there and opens a new ranged GET
// otherwise, so the Seek(0, End), Seek(0, Start) of http.ServeContent costs nothing.
type object struct {
	b    *Backend
	ctx  context.Context
	key  string
	etag string // every GET is conditional on it, so a replaced object is never read mixed
	info backend.FileInfo

	off     int64         // where the next Read reads
	body    io.ReadCloser // open GET, or nil
	bodyOff int64         // where body's next byte is
	closed  bool
}

func (o *object) Info() backend.FileInfo { return o.info }

func (o *object) Read(p []byte) (int, error) {
	if o.closed {
		return 0, fmt.Errorf("read %s: %w", o.info.Name, fs.ErrClosed)
	}
	if o.off >= o.info.Size {
		return 0, io.EOF
	}
	if len(p) == 0 {
		return 0, nil
	}
	if o.body != nil && o.bodyOff != o.off {
		o.closeBody()
	}
	if o.body == nil {
		if err := o.get(); err != nil {
			return 0, err
		}
	}
	n, err := o.body.Read(p)
	o.off += int64(n)
	o.bodyOff += int64(n)
	switch {
	case err == io.EOF && o.off < o.info.Size:
		// The body ended early: the connection was cut or the object changed. The next Read
		// starts a new GET from here.
		o.closeBody()
		if n > 0 {
			return n, nil
		}
		return 0, fmt.Errorf("read %s at %d: %w", o.info.Name, o.off, io.ErrUnexpectedEOF)
	case err == io.EOF:
		o.closeBody()
		return n, io.EOF
	case err != nil:
		o.closeBody()
		if n > 0 {
			return n, nil // the next Read reports the failure or recovers from it
		}
		return 0, fmt.Errorf("read %s at %d: %w", o.info.Name, o.off, err)
	}
	return n, nil
}

func (o *object) get() error {
	in := &s3.GetObjectInput{
		Bucket: &o.b.bucket,
		Key:    &o.key,
		Range:  aws.String("bytes=" + strconv.FormatInt(o.off, 10) + "-"),
	}
	if o.etag != "" {
		in.IfMatch = &o.etag
	}
	out, err := o.b.client.GetObject(o.ctx, in)
	if err != nil {
		if httpStatus(err) == http.StatusPreconditionFailed {
			return fmt.Errorf("read %s: %w", o.info.Name, errChanged)
		}
		return mapErr("read", o.info.Name, err)
	}
	o.body, o.bodyOff = out.Body, o.off
	return nil
}

func (o *object) closeBody() {
	if o.body != nil {
		o.body.Close()
		o.body = nil
	}
}

func (o *object) Seek(offset int64, whence int) (int64, error) {
	if o.closed {
		return 0, fmt.Errorf("seek %s: %w", o.info.Name, fs.ErrClosed)
	}
	switch whence {
	case io.SeekStart:
	case io.SeekCurrent:
		offset += o.off
	case io.SeekEnd:
		offset += o.info.Size
	default:
		return 0, fmt.Errorf("seek %s: invalid whence %d", o.info.Name, whence)
	}
	if offset < 0 {
		return 0, fmt.Errorf("seek %s: negative position %d", o.info.Name, offset)
	}
	o.off = offset
	return offset, nil
}

func (o *object) Close() error {
	o.closeBody()
	o.closed = true
	return nil
}
