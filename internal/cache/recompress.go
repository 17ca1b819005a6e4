package cache

import (
	"context"
	"errors"
	"fmt"
	"io"

	"github.com/cached-dev/cached/internal/index"
)

// OpenUploaded serves a NAR under the name it was uploaded as when the server stores it in
// another compression: the stored file is decompressed and compressed again on the fly. Only a
// client holding the narinfo it uploaded (nix caches it on the uploading machine) asks for that
// name; it checks the NarHash, which recompression keeps. Slow (xz), so never the normal path.
func (c *Cache) OpenUploaded(ctx context.Context, name string) (io.ReadCloser, error) {
	nn, err := ParseNarName(name)
	if err != nil {
		return nil, err
	}
	a, err := c.alias(ctx, name)
	if errors.Is(err, index.ErrNotFound) {
		return nil, ErrNotFound
	}
	if err != nil {
		return nil, err
	}
	snn, err := ParseNarName(a.Stored)
	if err != nil {
		return nil, fmt.Errorf("alias of %s: %w", name, err)
	}
	if nn.Compression == "bzip2" { // no bzip2 encoder in Go
		return nil, ErrNotFound
	}
	select {
	case c.recompressing <- struct{}{}:
	default:
		c.log.Info("waiting to recompress a NAR for its uploaded name: all recompression slots are busy", "nar", name, "slots", cap(c.recompressing))
		select {
		case c.recompressing <- struct{}{}:
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
	release := func() { <-c.recompressing }
	obj, err := c.Open(ctx, snn.Name)
	if err != nil {
		release()
		return nil, err
	}
	dec, err := decompressor(snn.Compression, obj)
	if err != nil {
		obj.Close()
		release()
		return nil, err
	}
	pr, pw := io.Pipe()
	go func() {
		defer release()
		defer obj.Close()
		defer dec.Close()
		enc, err := compressor(nn.Compression, pw, c.opts)
		if err == nil {
			_, err = io.Copy(enc, dec)
			if cerr := enc.Close(); err == nil {
				err = cerr
			}
		}
		pw.CloseWithError(err)
	}()
	c.log.Info("serving a NAR under its uploaded name by recompression (a client holds the narinfo it uploaded)", "nar", name, "stored", snn.Name)
	return pr, nil
}
