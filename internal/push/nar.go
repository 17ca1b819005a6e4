package push

import (
	"bufio"
	"bytes"
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"hash"
	"io"
	"os"
	"sync"

	"github.com/cached-dev/cached/internal/nar"
	"github.com/cached-dev/cached/internal/narinfo"
	"github.com/klauspost/compress/zstd"
	"github.com/nix-community/go-nix/pkg/nixbase32"
	"github.com/ulikunitz/xz"
)

// Compressions are the NAR compressions Push can upload in.
var Compressions = []string{"zstd", "xz", "none"}

// narExt is the file name extension of a NAR in a compression.
func narExt(compression string) string {
	switch compression {
	case "zstd":
		return ".nar.zst"
	case "xz":
		return ".nar.xz"
	}
	return ".nar"
}

// ErrCorrupt is a store path whose contents do not match the NarHash or NarSize the store
// recorded for it: the push refuses to upload it.
var ErrCorrupt = errors.New("the store path's contents do not match its recorded NarHash/NarSize (check it with nix-store --verify-path; repair with nix-store --repair-path)")

// narCheck hashes and counts a NAR as it is written, and compares it with the store's record.
type narCheck struct {
	want     narinfo.Hash
	wantSize uint64
	h        hash.Hash
	n        uint64
	progress func(int64)
}

func newNarCheck(info PathInfo, progress func(int64)) (*narCheck, error) {
	want, err := narinfo.ParseHash(info.NarHash)
	if err != nil {
		return nil, fmt.Errorf("%s: narHash %q: %w", info.Path, info.NarHash, err)
	}
	if want.Algo != "sha256" {
		return nil, fmt.Errorf("%s: narHash %q is not sha256", info.Path, info.NarHash)
	}
	return &narCheck{want: want, wantSize: info.NarSize, h: sha256.New(), progress: progress}, nil
}

func (c *narCheck) Write(p []byte) (int, error) {
	c.h.Write(p)
	c.n += uint64(len(p))
	if c.n > c.wantSize {
		// Stop early: a NAR longer than recorded cannot match.
		return 0, fmt.Errorf("NAR longer than its recorded NarSize %d: %w", c.wantSize, ErrCorrupt)
	}
	if c.progress != nil {
		c.progress(int64(len(p)))
	}
	return len(p), nil
}

// check reports whether what was written is the recorded NAR.
func (c *narCheck) check() error {
	if c.n != c.wantSize {
		return fmt.Errorf("NAR is %d bytes, recorded NarSize is %d: %w", c.n, c.wantSize, ErrCorrupt)
	}
	got := narinfo.Hash{Algo: "sha256", Digest: c.h.Sum(nil)}
	if !got.Equal(c.want) {
		return fmt.Errorf("NAR hashes to %s, recorded NarHash is %s: %w", got, c.want, ErrCorrupt)
	}
	return nil
}

// dumpChecked writes the NAR of info.Path (under root) to w, and fails if it is not the
// recorded one.
func dumpChecked(info PathInfo, root string, w io.Writer, progress func(int64)) error {
	c, err := newNarCheck(info, progress)
	if err != nil {
		return err
	}
	if err := nar.Dump(io.MultiWriter(c, w), root+info.Path); err != nil {
		if errors.Is(err, ErrCorrupt) {
			return err
		}
		return fmt.Errorf("reading %s from the store: %w", info.Path, err)
	}
	return c.check()
}

// compressor returns a writer that compresses into w.
func compressor(compression string, w io.Writer) (io.WriteCloser, error) {
	switch compression {
	case "zstd":
		enc, _ := zstdEncoders.Get().(*zstd.Encoder)
		if enc == nil {
			// One encoder goroutine per NAR: Push compresses several NARs at once (--jobs),
			// which keeps the CPUs busy without each encoder holding a window per CPU. A 2 MiB
			// window is what zstd's level 3 (nix's default) uses for large inputs: the ratio
			// is nix's within a percent, and klauspost's encoder runs about 1.4x as fast on
			// shared libraries as with its default 8 MiB window in low-memory mode (which moves
			// its history around).
			var err error
			enc, err = zstd.NewWriter(nil, zstd.WithEncoderLevel(zstd.SpeedDefault), zstd.WithEncoderConcurrency(1), zstd.WithWindowSize(2<<20))
			if err != nil {
				return nil, err
			}
		}
		enc.Reset(w)
		return pooledZstd{enc}, nil
	case "xz":
		return xz.NewWriter(w)
	case "none":
		return nopCloser{w}, nil
	}
	return nil, fmt.Errorf("compression %q: want one of zstd, xz, none", compression)
}

// zstdEncoders keeps encoders between NARs: making one allocates and clears its tables (a few
// MiB), which took most of the CPU time of pushing many small paths.
var zstdEncoders sync.Pool

// pooledZstd is an encoder that goes back to the pool when closed.
type pooledZstd struct{ *zstd.Encoder }

func (p pooledZstd) Close() error {
	err := p.Encoder.Close()
	p.Encoder.Reset(io.Discard) // forget the writer it wrote to
	zstdEncoders.Put(p.Encoder)
	return err
}

type nopCloser struct{ io.Writer }

func (nopCloser) Close() error { return nil }

// narFile is a compressed NAR waiting for its upload: the server names NARs by the hash of
// their compressed bytes (nar/<filehash>.nar.zst), which is known only once the whole file is.
// A small one is held in memory, a larger one in an unlinked temporary file.
type narFile struct {
	f        *os.File // nil when held in memory
	mem      []byte
	Name     string // "nar/<filehash><ext>"
	FileHash narinfo.Hash
	FileSize int64
}

// smallNar is the largest NAR compressed in memory rather than into a temporary file: most
// store paths are small, and a temporary file each (create, write, read back) cost more than
// compressing them. At most --jobs of them are held at once.
const smallNar = 1 << 20

// compressToFile writes the checked NAR of info.Path, compressed, to a new file in dir (or to
// memory, for a NAR of at most smallNar bytes), and names it by its hash. The NAR is checked
// before anything is sent: a corrupt store path fails here with ErrCorrupt.
func compressToFile(ctx context.Context, info PathInfo, root, compression, dir string, progress func(int64)) (*narFile, error) {
	nf := &narFile{}
	fh := sha256.New()
	fileCount := &countWriter{}
	var (
		mem *bytes.Buffer
		buf *bufio.Writer
		out io.Writer
	)
	if info.NarSize <= smallNar {
		mem = bytes.NewBuffer(make([]byte, 0, info.NarSize/2+512))
		out = io.MultiWriter(mem, fh, fileCount)
	} else {
		f, err := os.CreateTemp(dir, "cached-push-*.nar")
		if err != nil {
			return nil, fmt.Errorf("temporary file for %s: %w", info.Path, err)
		}
		os.Remove(f.Name()) // unlinked at once: nothing is left behind, whatever happens
		nf.f = f
		buf = bufio.NewWriterSize(io.MultiWriter(f, fh, fileCount), 256<<10)
		out = buf
	}
	enc, err := compressor(compression, out)
	if err != nil {
		nf.Close()
		return nil, err
	}
	err = dumpChecked(info, root, ctxWriter{ctx, enc}, progress)
	if cerr := enc.Close(); err == nil {
		err = cerr
	}
	if err == nil && buf != nil {
		err = buf.Flush()
	}
	if err != nil {
		nf.Close()
		return nil, fmt.Errorf("%s: %w", info.Path, err)
	}
	if mem != nil {
		nf.mem = mem.Bytes()
	}
	nf.FileHash = narinfo.Hash{Algo: "sha256", Digest: fh.Sum(nil)}
	nf.FileSize = fileCount.n
	nf.Name = "nar/" + nixbase32.EncodeToString(nf.FileHash.Digest) + narExt(compression)
	return nf, nil
}

func (nf *narFile) Close() error {
	nf.mem = nil
	if nf.f == nil {
		return nil
	}
	return nf.f.Close()
}

// body returns the file's bytes for one upload attempt.
func (nf *narFile) body() io.Reader {
	if nf.f == nil {
		return bytes.NewReader(nf.mem)
	}
	return io.NewSectionReader(nf.f, 0, nf.FileSize)
}

type countWriter struct{ n int64 }

func (c *countWriter) Write(p []byte) (int, error) {
	c.n += int64(len(p))
	return len(p), nil
}

// ctxWriter stops a dump once ctx is done.
type ctxWriter struct {
	ctx context.Context
	w   io.Writer
}

func (c ctxWriter) Write(p []byte) (int, error) {
	if err := c.ctx.Err(); err != nil {
		return 0, err
	}
	return c.w.Write(p)
}

// narStream is the uncompressed NAR of a store path streamed from the store as the request
// body, for --compression none: its file hash is its NarHash, known beforehand, so it needs
// no temporary file. Its last bytes are held back until the whole NAR is checked: a corrupt
// path ends the body short, and the server, which waits for Content-Length bytes, never gets
// a complete NAR.
type narStream struct {
	info     PathInfo
	dir      string // the store's root
	progress func(int64)
	pr       *io.PipeReader
	done     chan error
}

// holdBack is how many bytes of a streamed NAR wait for its check: a NAR ends with the
// 8-byte-padded closing ")", so the last 8 bytes are always there to hold.
const holdBack = 8

// open starts streaming the NAR for one upload attempt.
func (s *narStream) open(ctx context.Context) io.Reader {
	pr, pw := io.Pipe()
	s.pr = pr
	s.done = make(chan error, 1)
	progress := s.progress
	go func() {
		hw := &holdBackWriter{w: pw}
		err := dumpChecked(s.info, s.dir, ctxWriter{ctx, hw}, progress)
		if err == nil {
			err = hw.flush()
		}
		pw.CloseWithError(err)
		s.done <- err
	}()
	// Progress is counted on the first attempt only.
	s.progress = nil
	return pr
}

// wait ends an attempt: it stops the dump if the request gave up on it, and returns its error
// if the NAR was bad (ErrCorrupt, or the store could not be read).
func (s *narStream) wait() error {
	if s.pr == nil {
		return nil
	}
	s.pr.CloseWithError(errAttemptOver)
	err := <-s.done
	s.pr = nil
	if errors.Is(err, errAttemptOver) || errors.Is(err, context.Canceled) {
		return nil
	}
	return err
}

var errAttemptOver = errors.New("upload attempt over")

// holdBackWriter passes on all but the last holdBack bytes written to it until flush.
type holdBackWriter struct {
	w    io.Writer
	tail [holdBack]byte
	n    int
}

func (h *holdBackWriter) Write(p []byte) (int, error) {
	total := len(p)
	if h.n+len(p) <= holdBack {
		h.n += copy(h.tail[h.n:], p)
		return total, nil
	}
	// Send what was held and all of p but its last holdBack bytes.
	if send := h.n + len(p) - holdBack; send > 0 {
		fromTail := min(send, h.n)
		if _, err := h.w.Write(h.tail[:fromTail]); err != nil {
			return 0, err
		}
		copy(h.tail[:], h.tail[fromTail:h.n])
		h.n -= fromTail
		fromP := send - fromTail
		if fromP > 0 {
			if _, err := h.w.Write(p[:fromP]); err != nil {
				return 0, err
			}
			p = p[fromP:]
		}
	}
	h.n += copy(h.tail[h.n:], p)
	return total, nil
}

func (h *holdBackWriter) flush() error {
	_, err := h.w.Write(h.tail[:h.n])
	h.n = 0
	return err
}
