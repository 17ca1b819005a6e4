package server

import (
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"

	"github.com/cached-dev/cached/internal/cache"
	"github.com/cached-dev/cached/internal/membudget"
)

func errorf(format string, a ...any) error { return fmt.Errorf(format, a...) }

func urlUnescape(s string) (string, error) { return url.PathUnescape(s) }

// metaMaxWindow caps the xz dictionary and zstd window of a narinfo, listing or log body:
// xz -9 needs 64 MiB, and these bodies are small.
const metaMaxWindow = 64 << 20

// readMeta reads a small upload body (narinfo, listing, log, realisation), undoing the
// Content-Encoding newer clients put on it (narinfo-compression, ls-compression,
// log-compression), and bounds it before and after decoding. The decoder's memory comes out of
// the budget shared with NAR uploads.
func (s *Server) readMeta(w http.ResponseWriter, r *http.Request) ([]byte, error) {
	limit := s.cfg.MaxMetaSize
	body := http.MaxBytesReader(w, r.Body, limit)
	mem := s.cfg.DecoderMemory.Reserve()
	defer mem.Release()
	dec, err := decodeContent(r.Header.Get("Content-Encoding"), body, func(n int64) error { return mem.Need(r.Context(), n) })
	if err != nil {
		return nil, err
	}
	data, err := io.ReadAll(io.LimitReader(dec, limit+1))
	if err != nil {
		if _, ok := err.(*http.MaxBytesError); ok || budgetErr(err) {
			return nil, err
		}
		return nil, &cache.InputError{Field: "body", Err: fmt.Errorf("decoding %s body: %w", r.Header.Get("Content-Encoding"), err)}
	}
	if int64(len(data)) > limit {
		return nil, &http.MaxBytesError{Limit: limit}
	}
	return data, nil
}

// budgetErr reports whether err is the memory budget's refusal (busy, or never enough).
func budgetErr(err error) bool {
	var tl *membudget.TooLargeError
	return membudget.IsBusy(err) || errors.As(err, &tl)
}

// decodeContent undoes a Content-Encoding.
func decodeContent(encoding string, r io.Reader, need func(int64) error) (io.Reader, error) {
	var compression string
	switch enc := strings.ToLower(strings.TrimSpace(encoding)); enc {
	case "", "identity":
		return r, nil
	case "gzip", "x-gzip":
		compression = "gzip"
	case "bzip2", "x-bzip2":
		compression = "bzip2"
	case "br", "zstd", "xz":
		compression = enc
	default:
		return nil, &cache.InputError{Field: "Content-Encoding", Err: fmt.Errorf("unsupported encoding %q", encoding)}
	}
	dec, err := cache.NewDecoder(compression, r, metaMaxWindow, need)
	if err != nil {
		if budgetErr(err) {
			return nil, err
		}
		return nil, &cache.InputError{Field: "Content-Encoding", Err: err}
	}
	return dec, nil
}
