package s3

import (
	"context"
	"fmt"
	"io"
	"io/fs"
	"net/http"
	"strconv"
	"sync"

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

// object reads a stored object through one streaming GET at a time, whose body a goroutine reads
// a little ahead (pump). Seek only moves the
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
	ctx, cancel := context.WithCancel(o.ctx)
	out, err := o.b.client.GetObject(ctx, in)
	if err != nil {
		cancel()
		if httpStatus(err) == http.StatusPreconditionFailed {
			return fmt.Errorf("read %s: %w", o.info.Name, errChanged)
		}
		return mapErr("read", o.info.Name, err)
	}
	o.body, o.bodyOff = newPump(out.Body, cancel), o.off
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

// pumpPiece is what one Read of a GET's body returned.
type pumpPiece struct {
	buf *[]byte
	n   int
	err error
}

// pump reads a GET's body in a goroutine of its own, up to pumpDepth pieces of pumpBuf bytes
// ahead of its reader, so that receiving from S3 and sending to the client overlap instead of
// taking turns. Memory per open body: at most (pumpDepth+2)*pumpBuf.
type pump struct {
	body   io.ReadCloser
	cancel context.CancelFunc // aborts the GET, and so a Read of body in progress
	ch     chan pumpPiece     // closed when the goroutine has stopped
	cur    pumpPiece
	pos    int
}

const (
	pumpBuf   = 256 << 10
	pumpDepth = 4
)

var pumpBufs = sync.Pool{New: func() any { b := make([]byte, pumpBuf); return &b }}

func newPump(body io.ReadCloser, cancel context.CancelFunc) *pump {
	p := &pump{body: body, cancel: cancel, ch: make(chan pumpPiece, pumpDepth)}
	go p.run()
	return p
}

func (p *pump) run() {
	defer close(p.ch)
	for {
		buf := pumpBufs.Get().(*[]byte)
		n, err := p.body.Read(*buf)
		p.ch <- pumpPiece{buf, n, err} // never blocks for long: Close drains ch
		if err != nil {
			return
		}
	}
}

// Read returns the body's bytes and, after the last of them, its error, as the body would.
func (p *pump) Read(b []byte) (int, error) {
	for p.cur.buf == nil || p.pos == p.cur.n {
		if p.cur.err != nil {
			return 0, p.cur.err
		}
		p.release()
		piece, ok := <-p.ch
		if !ok {
			return 0, io.ErrUnexpectedEOF // not reached: the last piece carries an error
		}
		p.cur, p.pos = piece, 0
	}
	n := copy(b, (*p.cur.buf)[p.pos:p.cur.n])
	p.pos += n
	if p.pos == p.cur.n && p.cur.err != nil {
		return n, p.cur.err
	}
	return n, nil
}

func (p *pump) release() {
	if p.cur.buf != nil {
		pumpBufs.Put(p.cur.buf)
		p.cur.buf = nil
	}
}

// Close aborts the GET, waits for the goroutine and gives back the buffers.
func (p *pump) Close() error {
	p.cancel()
	for piece := range p.ch {
		pumpBufs.Put(piece.buf)
	}
	p.release()
	return p.body.Close()
}
