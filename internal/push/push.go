package push

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"path"
	"runtime"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/cached-dev/cached/internal/narinfo"
	"github.com/nix-community/go-nix/pkg/nixbase32"
)

// Options configure a push.
type Options struct {
	URL   string // the cache's root URL
	Token string // sent as a Bearer token (needs write scope)
	// Jobs is how many NARs are made and uploaded at once. 0 means DefaultJobs().
	Jobs int
	// Compression is what NARs are uploaded in: "zstd" (the default), "xz" or "none".
	// Compressed NARs go through a temporary file in TempDir (the server names NARs by the hash
	// of the uploaded bytes, needed before the body); uncompressed ones stream from the store.
	Compression string
	TempDir     string // "" means os.TempDir()
	// StoreRoot, if not "", is the directory the store is under (a chroot store, as nix's
	// --store /ROOT): /nix/store/x is read from StoreRoot/nix/store/x.
	StoreRoot string
	// Attempts bounds the tries of each request on transient failures (connection errors,
	// 408, 429, 5xx). 0 means 4.
	Attempts int
	// RetryDelay is the wait before the second attempt, doubled after each (with jitter, at
	// most 30s, or what Retry-After asks up to that). 0 means 500ms.
	RetryDelay time.Duration
	// HeadLookups makes the push ask with a HEAD per path even of a server that answers
	// POST /_cached/exists (to compare the two).
	HeadLookups bool
	Progress    Progress     // nil: nothing reported
	Log         *slog.Logger // nil: slog.Default()
	// Transport, if not nil, replaces the HTTP transport (tests inject faults with it).
	Transport http.RoundTripper
}

// DefaultJobs keeps the compressors and the network busy: twice the CPUs (half of the jobs
// are waiting on the network at any time), at most 16.
func DefaultJobs() int { return min(2*runtime.NumCPU(), 16) }

// Progress is told what a push does, from several goroutines at once.
type Progress interface {
	// Planned is called once the server was asked: present paths are skipped, missing ones
	// will be pushed, narBytes is the sum of their NAR sizes.
	Planned(present, missing int, narBytes uint64)
	// NarBytes is called as NAR bytes are read from the store (each byte once).
	NarBytes(n int64)
	// Done is called once for every missing path: pushed, or failed with r.Err.
	Done(r PathResult)
}

// PathResult is the outcome for one path.
type PathResult struct {
	Path     string
	NarSize  uint64
	FileSize uint64 // bytes uploaded (compressed)
	Err      error  // nil when pushed
}

// Result sums up a push.
type Result struct {
	Present   int          // paths the server had already
	Pushed    []PathResult // paths uploaded, narinfo committed
	Failed    []PathResult // paths not pushed, with why; sorted by path
	NarBytes  uint64       // NAR bytes of the pushed paths
	SentBytes uint64       // NAR file bytes uploaded
	Elapsed   time.Duration
}

// StoreDir is the store directory the cache must have.
const StoreDir = "/nix/store"

// Check reports what Push would refuse in the options (a bad URL, compression or job count),
// for callers that start pushing much later.
func (o Options) Check() error { return o.validate() }

func (o *Options) validate() error {
	u, err := url.Parse(o.URL)
	if err != nil {
		return fmt.Errorf("--url %q: %w", o.URL, err)
	}
	if u.Scheme != "http" && u.Scheme != "https" || u.Host == "" {
		return fmt.Errorf("--url %q: want an http or https URL, such as http://HOST:PORT", o.URL)
	}
	if u.RawQuery != "" || u.Fragment != "" {
		return fmt.Errorf("--url %q: a cache URL has no query or fragment", o.URL)
	}
	if o.Jobs < 0 {
		return fmt.Errorf("--jobs %d: want 1 or more (0 for the default)", o.Jobs)
	}
	if o.Compression == "" {
		o.Compression = "zstd"
	}
	if !slices.Contains(Compressions, o.Compression) {
		return fmt.Errorf("--compression %q: want one of %s", o.Compression, strings.Join(Compressions, ", "))
	}
	if o.Jobs == 0 {
		o.Jobs = DefaultJobs()
	}
	if o.Attempts <= 0 {
		o.Attempts = 4
	}
	if o.RetryDelay <= 0 {
		o.RetryDelay = 500 * time.Millisecond
	}
	if o.Log == nil {
		o.Log = slog.Default()
	}
	return nil
}

// Push uploads the paths (a closure: every reference of a path is in paths or already on the
// server) that the cache at opts.URL lacks. Paths that fail are in Result.Failed, and the
// narinfo of no path that depends on one of them is sent. The error is for a push that could
// not run at all: a bad option, a server that cannot be reached or is no binary cache for
// /nix/store, or a refused token (ErrAuth).
func Push(ctx context.Context, opts Options, paths []PathInfo) (Result, error) {
	start := time.Now()
	if err := opts.validate(); err != nil {
		return Result{}, err
	}
	lookups := max(opts.Jobs, 16)
	tr := opts.Transport
	if tr == nil {
		t := http.DefaultTransport.(*http.Transport).Clone()
		t.MaxIdleConnsPerHost = lookups
		t.DialContext = (&net.Dialer{Timeout: 10 * time.Second, KeepAlive: 30 * time.Second}).DialContext
		// The server answers a NAR PUT after verifying and storing it (an S3 upload may take
		// a while to complete); it answers nothing else slowly.
		t.ResponseHeaderTimeout = 10 * time.Minute
		tr = t
	}
	c := &client{
		base: strings.TrimRight(opts.URL, "/"), token: opts.Token,
		http:     &http.Client{Transport: tr},
		attempts: opts.Attempts, delay: opts.RetryDelay, maxDelay: 30 * time.Second, log: opts.Log,
	}
	if err := checkCacheInfo(ctx, c); err != nil {
		return Result{}, err
	}
	missing, present, err := lookup(ctx, c, paths, lookups, !opts.HeadLookups)
	if err != nil {
		return Result{}, err
	}
	p := &pusher{opts: opts, c: c, plan: newPlan(missing), uploaded: map[string]*narinfo.NarInfo{}}
	p.res.Present = present
	var narBytes uint64
	for _, m := range missing {
		narBytes += m.NarSize
	}
	if opts.Progress != nil {
		opts.Progress.Planned(present, len(missing), narBytes)
	}
	ctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	p.cancel = cancel
	p.run(ctx)
	res := p.result()
	res.Elapsed = time.Since(start)
	if cause := context.Cause(ctx); errors.Is(cause, ErrAuth) {
		return res, cause
	}
	return res, nil
}

// checkCacheInfo makes sure the URL is a binary cache for this store directory, and fails
// early, with one clear error, on a wrong URL or a server that is down.
func checkCacheInfo(ctx context.Context, c *client) error {
	var body strings.Builder
	if _, err := c.do(ctx, request{method: http.MethodGet, path: "nix-cache-info", into: &body}); err != nil {
		return fmt.Errorf("%s is not reachable as a binary cache: %w", c.base, err)
	}
	sc := bufio.NewScanner(strings.NewReader(body.String()))
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), "StoreDir:"); ok {
			if v = strings.TrimSpace(v); v != StoreDir {
				return fmt.Errorf("%s is a binary cache for %s, not %s", c.base, v, StoreDir)
			}
			return nil
		}
	}
	return fmt.Errorf("%s/nix-cache-info has no StoreDir line: is --url a binary cache?", c.base)
}

// lookup asks the server which paths it has: in batches (POST /_cached/exists), or with a
// HEAD /<hash>.narinfo per path, in parallel, from a server that does not answer those.
func lookup(ctx context.Context, c *client, paths []PathInfo, parallel int, batched bool) (missing []PathInfo, present int, err error) {
	var has []bool
	if batched && len(paths) > 0 {
		has, err = lookupBatched(ctx, c, paths)
		if err != nil {
			return nil, 0, err
		}
	}
	if has == nil {
		if has, err = lookupHeads(ctx, c, paths, parallel); err != nil {
			return nil, 0, err
		}
	}
	for i, p := range paths {
		if has[i] {
			present++
		} else {
			missing = append(missing, p)
		}
	}
	return missing, present, nil
}

// existsBatch is how many hashes one POST /_cached/exists asks about (the server takes up to
// 10,000; its answer for 1,000 stays well within what the client reads of an answer). Tests
// lower it.
var existsBatch = 1000

// lookupBatched asks the server about the paths through POST /_cached/exists. It returns nil,
// nil when the server refuses the request with a 4xx (a server without the endpoint, a cached
// too old to have it, which keeps /_cached/ for admin tokens): the caller asks with HEADs.
func lookupBatched(ctx context.Context, c *client, paths []PathInfo) ([]bool, error) {
	has := make([]bool, len(paths))
	index := make(map[string][]int, len(paths))
	for i, p := range paths {
		h := p.hashPart()
		index[h] = append(index[h], i)
	}
	for start := 0; start < len(paths); start += existsBatch {
		batch := paths[start:min(start+existsBatch, len(paths))]
		req := struct {
			Hashes []string `json:"hashes"`
		}{Hashes: make([]string, len(batch))}
		for i, p := range batch {
			req.Hashes[i] = p.hashPart()
		}
		body, err := json.Marshal(req)
		if err != nil {
			return nil, err
		}
		var answer bytes.Buffer
		_, err = c.do(ctx, request{
			method: http.MethodPost, path: "_cached/exists", contentType: "application/json",
			size: int64(len(body)), body: func(context.Context) io.Reader { return bytes.NewReader(body) },
			into: &answer,
		})
		var herr *HTTPError
		if errors.As(err, &herr) && herr.Status >= 400 && herr.Status < 500 {
			c.log.Debug("the server does not answer POST /_cached/exists; asking with a HEAD per path", "status", herr.Status)
			return nil, nil
		}
		if err != nil {
			return nil, fmt.Errorf("asking the server which paths it has: %w", err)
		}
		var ans struct {
			Present []string `json:"present"`
		}
		if err := json.Unmarshal(answer.Bytes(), &ans); err != nil {
			return nil, fmt.Errorf("POST _cached/exists: the answer is not {\"present\": [...]}: %w", err)
		}
		for _, h := range ans.Present {
			for _, i := range index[h] {
				has[i] = true
			}
		}
	}
	return has, nil
}

// lookupHeads asks the server about the paths with a HEAD /<hash>.narinfo each, in parallel.
func lookupHeads(ctx context.Context, c *client, paths []PathInfo, parallel int) ([]bool, error) {
	has := make([]bool, len(paths))
	errs := make([]error, len(paths))
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var wg sync.WaitGroup
	next := atomic.Int64{}
	for range min(parallel, len(paths)) {
		wg.Go(func() {
			for {
				i := int(next.Add(1) - 1)
				if i >= len(paths) || ctx.Err() != nil {
					return
				}
				status, err := c.do(ctx, request{method: http.MethodHead, path: paths[i].hashPart() + ".narinfo"})
				if err != nil {
					errs[i] = fmt.Errorf("asking the server for %s: %w", paths[i].Path, err)
					cancel() // every other lookup would fail the same way, or be wasted
					return
				}
				has[i] = status != http.StatusNotFound
			}
		})
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		return nil, err
	}
	return has, nil
}

// pusher runs one push.
type pusher struct {
	opts   Options
	c      *client
	plan   *plan
	cancel context.CancelCauseFunc

	mu       sync.Mutex
	uploaded map[string]*narinfo.NarInfo // by store path: narinfos whose NAR is uploaded
	res      Result
	commits  sync.WaitGroup
}

func (p *pusher) run(ctx context.Context) {
	jobs := make(chan PathInfo)
	var wg sync.WaitGroup
	for range p.opts.Jobs {
		wg.Go(func() {
			for info := range jobs {
				p.pushNar(ctx, info)
			}
		})
	}
	for _, info := range p.plan.Order() {
		if ctx.Err() != nil {
			break
		}
		jobs <- info
	}
	close(jobs)
	wg.Wait()
	p.commits.Wait()
	// What is left was never started (the push was stopped) or waits on a cycle.
	for _, path := range p.plan.Stuck() {
		err := context.Cause(ctx)
		if err == nil {
			err = errors.New("its references form a cycle with it, which a store cannot have")
		}
		p.fail(path, fmt.Errorf("not pushed: %w", err))
	}
}

// pushNar makes and uploads one path's NAR, then commits its narinfo if its references are in.
func (p *pusher) pushNar(ctx context.Context, info PathInfo) {
	if p.plan.IsFailed(info.Path) || ctx.Err() != nil {
		return
	}
	ni, err := p.uploadNar(ctx, info)
	if err != nil {
		p.fail(info.Path, err)
		return
	}
	p.mu.Lock()
	p.uploaded[info.Path] = ni
	p.mu.Unlock()
	if p.plan.NarUploaded(info.Path) {
		p.commit(ctx, info)
	}
}

// uploadNar uploads the NAR of info and returns the narinfo that will name it.
func (p *pusher) uploadNar(ctx context.Context, info PathInfo) (*narinfo.NarInfo, error) {
	ni, err := newNarInfo(info, p.opts.Compression)
	if err != nil {
		return nil, err
	}
	progress := func(int64) {}
	if p.opts.Progress != nil {
		progress = p.opts.Progress.NarBytes
	}
	r := request{method: http.MethodPut, contentType: "application/x-nix-nar"}
	if p.opts.Compression == "none" {
		// The file is the NAR: its name is known from the store's NarHash.
		ni.URL = "nar/" + nixbase32.EncodeToString(ni.NarHash.Digest) + narExt("none")
		ni.FileHash, ni.FileSize = ni.NarHash, ni.NarSize
		s := &narStream{info: info, dir: p.opts.StoreRoot, progress: progress}
		r.size, r.after = int64(info.NarSize), s.wait
		r.body = func(ctx context.Context) io.Reader { return s.open(ctx) }
	} else {
		nf, err := compressToFile(ctx, info, p.opts.StoreRoot, p.opts.Compression, p.opts.TempDir, progress)
		if err != nil {
			return nil, err
		}
		defer nf.Close()
		ni.URL, ni.FileHash, ni.FileSize = nf.Name, nf.FileHash, uint64(nf.FileSize)
		r.size = nf.FileSize
		r.body = func(context.Context) io.Reader { return nf.body() }
	}
	r.path = ni.URL
	if _, err := p.c.do(ctx, r); err != nil {
		p.abortOnAuth(err)
		return nil, err
	}
	return ni, nil
}

// newNarInfo is the narinfo of info, without its NAR's URL and file fields.
func newNarInfo(info PathInfo, compression string) (*narinfo.NarInfo, error) {
	h, err := narinfo.ParseHash(info.NarHash)
	if err != nil {
		return nil, fmt.Errorf("%s: narHash %q: %w", info.Path, info.NarHash, err)
	}
	ni := &narinfo.NarInfo{
		StorePath:   info.Path,
		Compression: compression,
		NarHash:     h,
		NarSize:     info.NarSize,
		Sigs:        info.Signatures,
		CA:          info.CA,
		References:  make([]string, 0, len(info.References)),
	}
	for _, r := range info.References {
		ni.References = append(ni.References, path.Base(r))
	}
	if info.Deriver != "" {
		ni.Deriver = path.Base(info.Deriver)
	}
	return ni, nil
}

// commit sends info's narinfo, and then those of the paths that were waiting for it, each on
// a goroutine of its own.
func (p *pusher) commit(ctx context.Context, info PathInfo) {
	p.commits.Go(func() {
		p.mu.Lock()
		ni := p.uploaded[info.Path]
		p.mu.Unlock()
		r := request{method: http.MethodPut, path: info.hashPart() + ".narinfo", contentType: "text/x-nix-narinfo"}
		text := ni.Bytes()
		r.size = int64(len(text))
		r.body = func(context.Context) io.Reader { return strings.NewReader(string(text)) }
		if _, err := p.c.do(ctx, r); err != nil {
			p.abortOnAuth(err)
			p.fail(info.Path, err)
			return
		}
		p.succeed(PathResult{Path: info.Path, NarSize: ni.NarSize, FileSize: ni.FileSize})
		for _, next := range p.plan.Committed(info.Path) {
			p.commit(ctx, next)
		}
	})
}

// abortOnAuth stops the push when the server refused the token: every request would fail.
func (p *pusher) abortOnAuth(err error) {
	if errors.Is(err, ErrAuth) {
		p.cancel(fmt.Errorf("%w", err))
	}
}

func (p *pusher) succeed(r PathResult) {
	p.mu.Lock()
	p.res.Pushed = append(p.res.Pushed, r)
	p.res.NarBytes += r.NarSize
	p.res.SentBytes += r.FileSize
	p.mu.Unlock()
	if p.opts.Progress != nil {
		p.opts.Progress.Done(r)
	}
}

// fail records that path failed, and so do the paths depending on it.
func (p *pusher) fail(path string, err error) {
	newly, deps := p.plan.Failed(path)
	if !newly {
		return // failed already, as a dependent of a path that failed first
	}
	for _, dep := range append([]string{path}, deps...) {
		r := PathResult{Path: dep, Err: err}
		if dep != path {
			r.Err = &DependencyError{Path: path, Err: err}
		}
		p.mu.Lock()
		p.res.Failed = append(p.res.Failed, r)
		p.mu.Unlock()
		if p.opts.Progress != nil {
			p.opts.Progress.Done(r)
		}
	}
}

// DependencyError is why a path was not pushed when a path in its closure failed.
type DependencyError struct {
	Path string // the path that failed
	Err  error  // why it failed
}

func (e *DependencyError) Error() string { return fmt.Sprintf("depends on %s, which failed", e.Path) }

// Unwrap lets errors.Is and errors.As see why the dependency failed.
func (e *DependencyError) Unwrap() error { return e.Err }

func (p *pusher) result() Result {
	p.mu.Lock()
	defer p.mu.Unlock()
	res := p.res
	slices.SortFunc(res.Failed, func(a, b PathResult) int { return strings.Compare(a.Path, b.Path) })
	slices.SortFunc(res.Pushed, func(a, b PathResult) int { return strings.Compare(a.Path, b.Path) })
	return res
}
