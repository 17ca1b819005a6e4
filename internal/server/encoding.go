package server

import (
	"compress/bzip2"
	"compress/gzip"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"

	"github.com/andybalholm/brotli"
	"github.com/cached-dev/cached/internal/cache"
	"github.com/cached-dev/cached/internal/xzlimit"
	"github.com/klauspost/compress/zstd"
)

func errorf(format string, a ...any) error { return fmt.Errorf(format, a...) }

func urlUnescape(s string) (string, error) { return url.PathUnescape(s) }

// readMeta reads a small upload body (narinfo, listing, log, realisation), undoing the
// Content-Encoding newer clients put on it (narinfo-compression, ls-compression,
// log-compression), and bounds it before and after decoding.
func (s *Server) readMeta(w http.ResponseWriter, r *http.Request) ([]byte, error) {
	limit := s.cfg.MaxMetaSize
	body := http.MaxBytesReader(w, r.Body, limit)
	dec, err := decodeContent(r.Header.Get("Content-Encoding"), body)
	if err != nil {
		return nil, err
	}
	data, err := io.ReadAll(io.LimitReader(dec, limit+1))
	if err != nil {
		if _, ok := err.(*http.MaxBytesError); ok {
			return nil, err
		}
		return nil, &cache.InputError{Field: "body", Err: fmt.Errorf("decoding %s body: %w", r.Header.Get("Content-Encoding"), err)}
	}
	if int64(len(data)) > limit {
		return nil, &http.MaxBytesError{Limit: limit}
	}
	return data, nil
}

func decodeContent(encoding string, r io.Reader) (io.Reader, error) {
	enc := strings.ToLower(strings.TrimSpace(encoding))
	switch enc {
	case "", "identity":
		return r, nil
	case "gzip", "x-gzip":
		gr, err := gzip.NewReader(r)
		if err != nil {
			return nil, &cache.InputError{Field: "Content-Encoding", Err: fmt.Errorf("gzip: %w", err)}
		}
		return gr, nil
	case "br":
		return brotli.NewReader(r), nil
	case "zstd":
		zr, err := zstd.NewReader(r, zstd.WithDecoderConcurrency(1), zstd.WithDecoderMaxMemory(64<<20))
		if err != nil {
			return nil, &cache.InputError{Field: "Content-Encoding", Err: err}
		}
		return zr.IOReadCloser(), nil
	case "xz":
		xr, err := xzlimit.NewReader(r, xzlimit.DefaultMaxDict)
		if err != nil {
			return nil, &cache.InputError{Field: "Content-Encoding", Err: fmt.Errorf("xz: %w", err)}
		}
		return xr, nil
	case "bzip2", "x-bzip2":
		return bzip2.NewReader(r), nil
	}
	return nil, &cache.InputError{Field: "Content-Encoding", Err: fmt.Errorf("unsupported encoding %q", encoding)}
}
