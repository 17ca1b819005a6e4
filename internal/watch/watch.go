package watch

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"math/rand/v2"
	"net/http"
	"os"
	"path"
	"path/filepath"
	"strings"
	"sync/atomic"
	"time"

	"github.com/cached-dev/cached/internal/narinfo"
	"github.com/cached-dev/cached/internal/push"
)

// Config configures Run.
type Config struct {
	// Push holds the cache URL and how to upload; its Token is read from TokenFile before
	// each round of pushes, so that a replaced token is used without a restart. Its StoreRoot
	// is the root of a chroot store ("" for /).
	Push      push.Options
	TokenFile string
	Nix       push.Nix // with Store set to Push.StoreRoot for a chroot store
	QueueDir  string
	// Ignore are globs (path.Match) on the name of a store path (what follows "<hash>-"): a
	// matching path is not pushed unless a pushed path refers to it.
	Ignore []string
	// SkipUpstream are binary caches (https://cache.nixos.org): a queued path one of them has
	// (substituted from it, most likely) is not pushed. Its closure is there too.
	SkipUpstream []string
	// ScanInterval is how often every valid path is listed, to find what events missed.
	// 0 means 10 minutes.
	ScanInterval time.Duration
	// DBScanDelay is the least time between two scans prompted by writes to the database.
	// 0 means 30 seconds.
	DBScanDelay time.Duration
	// MaxBackoff bounds the wait between failed rounds (an unreachable server, a refused
	// token). 0 means one minute.
	MaxBackoff time.Duration
	// Batch is how many queued paths one round pushes at most. 0 means 1000.
	Batch int
	Log   *slog.Logger
}

// DefaultIgnore skips derivations and fetched sources, which builders rarely need from a cache.
var DefaultIgnore = []string{"*.drv", "source", "*-source"}

func (c *Config) validate() error {
	if err := c.Push.Check(); err != nil {
		return err
	}
	for _, u := range c.SkipUpstream {
		if !strings.HasPrefix(u, "http://") && !strings.HasPrefix(u, "https://") {
			return fmt.Errorf("--skip-upstream %q: want an http or https URL, such as https://cache.nixos.org", u)
		}
	}
	for _, g := range c.Ignore {
		if _, err := path.Match(g, ""); err != nil {
			return fmt.Errorf("--ignore %q: %w", g, err)
		}
	}
	if c.ScanInterval == 0 {
		c.ScanInterval = 10 * time.Minute
	}
	if c.DBScanDelay == 0 {
		c.DBScanDelay = 30 * time.Second
	}
	if c.MaxBackoff == 0 {
		c.MaxBackoff = time.Minute
	}
	if c.ScanInterval < 0 || c.DBScanDelay < 0 || c.MaxBackoff < 0 {
		return fmt.Errorf("negative interval (scan %s, db scan delay %s, max backoff %s)", c.ScanInterval, c.DBScanDelay, c.MaxBackoff)
	}
	if c.Batch <= 0 {
		c.Batch = 1000
	}
	if c.Log == nil {
		c.Log = slog.Default()
	}
	c.Push.Log = c.Log
	return nil
}

// Ignored reports whether the store path's name matches one of the globs.
func Ignored(storePath string, globs []string) bool {
	_, _, name, err := narinfo.ParseStorePath(storePath)
	if err != nil {
		return false
	}
	for _, g := range globs {
		if ok, _ := path.Match(g, name); ok {
			return true
		}
	}
	return false
}

type eventKind int

const (
	lockRemoved  eventKind = iota // name: the store path's basename
	dbChanged                     // the database was written
	queueChanged                  // an entry was added to the queue
	overflow                      // events were lost
)

type event struct {
	kind eventKind
	name string
}

// Run watches the store and pushes what becomes valid in it until ctx ends. It returns an error
// for what stops it from starting (a bad option, a queue directory it cannot write, a token
// file it cannot read, a store it cannot list); once running, failures are logged and retried.
func Run(ctx context.Context, cfg Config) error {
	if err := cfg.validate(); err != nil {
		return err
	}
	if _, err := push.ReadToken(cfg.TokenFile, cfg.Push.URL); err != nil {
		return fmt.Errorf("--token-file: %w", err)
	}
	q, err := OpenQueue(cfg.QueueDir, push.StoreDir)
	if err != nil {
		return err
	}
	release, err := q.Lock()
	if err != nil {
		return fmt.Errorf("--queue-dir: %w", err)
	}
	defer release()
	log := cfg.Log
	root := cfg.Push.StoreRoot
	ownNixEnd := &atomic.Int64{}
	d := &detector{cfg: &cfg, q: q, knownFile: filepath.Join(q.Dir(), ".known"), ownNixEnd: ownNixEnd}
	if err := d.load(); err != nil {
		return err
	}
	events := make(chan event, 4096)
	storeDir, dbDir := filepath.Join(root, push.StoreDir), filepath.Join(root, "/nix/var/nix/db")
	n, err := newNotifier(storeDir, dbDir, q.Dir())
	if errors.Is(err, fs.ErrNotExist) {
		// A store nix has never used: the scan makes nix create it, and a second one
		// covers what became valid before the watch began.
		if err := d.scan(ctx); err != nil {
			return err
		}
		n, err = newNotifier(storeDir, dbDir, q.Dir())
	}
	if err != nil {
		log.Warn("watching the store without events: new paths wait for the periodic scan", "err", err, "scan_interval", cfg.ScanInterval)
	} else {
		if n.dbErr != nil {
			log.Warn("not watching the nix database: paths made valid without a lock file wait for the periodic scan", "err", n.dbErr, "scan_interval", cfg.ScanInterval)
		}
		defer n.Close()
		go func() {
			if err := n.run(events); err != nil {
				log.Error("inotify stopped: new paths wait for the periodic scan", "err", err)
			}
		}()
	}
	if err := d.scan(ctx); err != nil {
		return err
	}
	queued, _ := q.Len()
	log.Info("watching the store", "store", filepath.Join(root, push.StoreDir), "url", cfg.Push.URL, "queue", q.Dir(), "queued", queued, "known_paths", len(d.known))

	wake := make(chan struct{}, 1)
	poke := func() {
		select {
		case wake <- struct{}{}:
		default:
		}
	}
	poke()
	p := &pusher{cfg: &cfg, q: q, ownNixEnd: ownNixEnd}
	done := make(chan struct{})
	go func() {
		defer close(done)
		p.loop(ctx, wake)
	}()
	d.loop(ctx, events, poke)
	<-done
	return nil
}

// detector finds paths that became valid and queues them.
type detector struct {
	cfg       *Config
	q         *Queue
	knownFile string
	known     map[string]bool // every valid path seen, by basename
	loaded    bool            // known comes from a previous run
	dirty     bool            // known has changed since it was saved
	lastScan  time.Time       // when the last scan started
	ownNixEnd *atomic.Int64   // when a nix command of the watcher's own last ended (UnixNano)
}

func (d *detector) loop(ctx context.Context, events <-chan event, poke func()) {
	log := d.cfg.Log
	scanTick := time.NewTicker(d.cfg.ScanInterval)
	defer scanTick.Stop()
	var (
		pending  []string         // basenames whose lock was removed
		debounce <-chan time.Time // when to check pending
		dbScan   <-chan time.Time // when to scan for a write to the database
	)
	scanSoon := func(after time.Duration) {
		if dbScan == nil {
			dbScan = time.After(max(after, 0))
		}
	}
	for {
		select {
		case <-ctx.Done():
			d.save()
			return
		case ev := <-events:
			switch ev.kind {
			case lockRemoved:
				pending = append(pending, ev.name)
				if debounce == nil {
					debounce = time.After(50 * time.Millisecond)
				}
			case dbChanged:
				// The scan this asks for may come well after the write: the paths the
				// write made valid are found sooner through their lock files, and a
				// scan is not cheap on a large store (nix path-info --all).
				if time.Since(time.Unix(0, d.ownNixEnd.Load())) > ownScanGrace {
					scanSoon(d.cfg.DBScanDelay - time.Since(d.lastScan))
				}
			case queueChanged:
				poke()
			case overflow:
				log.Warn("store events were lost: scanning the store")
				scanSoon(0)
			}
		case <-debounce:
			debounce = nil
			if n, err := d.candidates(ctx, pending); err != nil {
				log.Warn("checking new store paths; the next scan will find them", "err", err)
			} else if n > 0 {
				poke()
			}
			pending = nil
		case <-dbScan:
			dbScan = nil
			d.scanAndPoke(ctx, poke)
		case <-scanTick.C:
			d.scanAndPoke(ctx, poke)
		}
	}
}

// ownScanGrace is how long after a nix command of its own the detector takes writes to the
// database for that command's (nix may checkpoint its log when it closes the database, even
// after a read).
const ownScanGrace = 500 * time.Millisecond

func (d *detector) scanAndPoke(ctx context.Context, poke func()) {
	if err := d.scan(ctx); err != nil {
		if ctx.Err() == nil {
			d.cfg.Log.Warn("scanning the store; retrying at the next scan", "err", err)
		}
		return
	}
	poke()
}

// load reads the paths known from a previous run.
func (d *detector) load() error {
	d.known = map[string]bool{}
	f, err := os.Open(d.knownFile)
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("known paths: %w", err)
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if name := strings.TrimSpace(sc.Text()); name != "" {
			d.known[name] = true
		}
	}
	if err := sc.Err(); err != nil {
		return fmt.Errorf("known paths %s: %w", d.knownFile, err)
	}
	d.loaded = true
	return nil
}

// save writes the known paths, replacing the file at once. Losing them (a kill before this)
// costs a re-check of paths already pushed, never a path: a path is queued before it is known.
func (d *detector) save() {
	if !d.dirty {
		return
	}
	tmp := d.knownFile + ".tmp"
	err := func() error {
		f, err := os.Create(tmp)
		if err != nil {
			return err
		}
		w := bufio.NewWriter(f)
		for name := range d.known {
			w.WriteString(name + "\n")
		}
		if err := w.Flush(); err != nil {
			f.Close()
			return err
		}
		if err := f.Close(); err != nil {
			return err
		}
		return os.Rename(tmp, d.knownFile)
	}()
	if err != nil {
		d.cfg.Log.Warn("saving the known paths; a restart will re-check them", "file", d.knownFile, "err", err)
		return
	}
	d.dirty = false
}

// scan lists every valid path and queues those not known. On the very first scan (no known
// paths saved) the store's paths are taken as they are: watch-store pushes what is new.
func (d *detector) scan(ctx context.Context) error {
	d.lastScan = time.Now()
	all, err := d.cfg.Nix.AllValid(ctx)
	d.ownNixEnd.Store(time.Now().UnixNano())
	if err != nil {
		return fmt.Errorf("listing the store's valid paths: %w", err)
	}
	var fresh []string
	now := make(map[string]bool, len(all))
	for _, p := range all {
		base := filepath.Base(p)
		now[base] = true
		if !d.known[base] {
			fresh = append(fresh, p)
		}
	}
	first := !d.loaded
	if first {
		d.cfg.Log.Info("first start: the paths already in the store are not pushed (push them with cached push)", "paths", len(all))
		d.loaded = true
	} else if err := d.enqueue(fresh); err != nil {
		return err
	}
	// The first scan always leaves a file behind: without one, the next start would be a
	// first one too, and take what was built meanwhile as old.
	if first || len(now) != len(d.known) || len(fresh) > 0 {
		d.known = now
		d.dirty = true
	}
	d.save()
	return nil
}

// candidates queues those of the named paths (basenames) that are valid and not known.
func (d *detector) candidates(ctx context.Context, names []string) (int, error) {
	var paths []string
	seen := map[string]bool{}
	for _, n := range names {
		if d.known[n] || seen[n] {
			continue
		}
		seen[n] = true
		p := push.StoreDir + "/" + n
		if _, _, _, err := narinfo.ParseStorePath(p); err == nil {
			paths = append(paths, p)
		}
	}
	if len(paths) == 0 {
		return 0, nil
	}
	invalid, err := d.cfg.Nix.Invalid(ctx, paths)
	d.ownNixEnd.Store(time.Now().UnixNano())
	if err != nil {
		return 0, err
	}
	bad := map[string]bool{}
	for _, p := range invalid {
		bad[p] = true
	}
	var valid []string
	for _, p := range paths {
		if !bad[p] {
			valid = append(valid, p)
		}
	}
	return len(valid), d.enqueue(valid)
}

// enqueue queues the paths that are not ignored, then counts them all as known.
func (d *detector) enqueue(paths []string) error {
	var keep []string
	for _, p := range paths {
		if Ignored(p, d.cfg.Ignore) {
			d.cfg.Log.Debug("ignored", "path", p)
		} else {
			keep = append(keep, p)
		}
	}
	if err := d.q.Add(keep...); err != nil {
		return err
	}
	for _, p := range keep {
		d.cfg.Log.Info("queued", "path", p)
	}
	for _, p := range paths {
		d.known[filepath.Base(p)] = true
		d.dirty = true
	}
	return nil
}

// pusher pushes what is queued.
type pusher struct {
	cfg       *Config
	q         *Queue
	ownNixEnd *atomic.Int64
}

// errRetry is a round that left paths queued for a later one.
var errRetry = errors.New("paths stay queued")

func (p *pusher) loop(ctx context.Context, wake <-chan struct{}) {
	log := p.cfg.Log
	backoff := time.Duration(0)
	poll := time.NewTicker(30 * time.Second)
	defer poll.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-wake:
		case <-poll.C:
		}
		for ctx.Err() == nil {
			more, err := p.round(ctx)
			if err == nil {
				backoff = 0
				if !more {
					break
				}
				continue
			}
			if ctx.Err() != nil {
				return
			}
			backoff = min(max(2*backoff, time.Second), p.cfg.MaxBackoff)
			wait := backoff/2 + rand.N(backoff/2+1)
			queued, _ := p.q.Len()
			if errors.Is(err, push.ErrAuth) {
				log.Error("the server refused the token: nothing is pushed until it accepts one (the token file is read again before each try)", "token_file", p.cfg.TokenFile, "url", p.cfg.Push.URL, "queued", queued, "retry_in", wait.Round(time.Millisecond), "err", err)
			} else {
				log.Warn("push failed; the paths stay queued", "queued", queued, "retry_in", wait.Round(time.Millisecond), "err", err)
			}
			select {
			case <-ctx.Done():
				return
			case <-time.After(wait):
			}
		}
	}
}

// round pushes one batch of queued paths and their closures. It reports whether more are
// queued, and an error when paths stay queued for another try.
func (p *pusher) round(ctx context.Context) (more bool, err error) {
	log := p.cfg.Log
	queued, err := p.q.List(p.cfg.Batch)
	if err != nil || len(queued) == 0 {
		return false, err
	}
	var roots []string
	for _, r := range queued {
		if Ignored(r, p.cfg.Ignore) {
			log.Info("ignored; dropped from the queue", "path", r)
			if err := p.q.Remove(r); err != nil {
				return false, err
			}
			continue
		}
		roots = append(roots, r)
	}
	if up := onUpstream(ctx, p.cfg.SkipUpstream, roots); len(up) > 0 {
		var keep []string
		for _, r := range roots {
			if u, ok := up[r]; ok {
				log.Info("the upstream cache has it; dropped from the queue", "path", r, "upstream", u)
				if err := p.q.Remove(r); err != nil {
					return false, err
				}
			} else {
				keep = append(keep, r)
			}
		}
		roots = keep
	}
	if len(roots) == 0 {
		return len(queued) == p.cfg.Batch, nil
	}
	token, err := push.ReadToken(p.cfg.TokenFile, p.cfg.Push.URL)
	if err != nil {
		return false, fmt.Errorf("--token-file: %w", err)
	}
	infos, err := p.cfg.Nix.Closure(ctx, roots)
	var invalid push.ErrInvalidPaths
	if errors.As(err, &invalid) {
		// Garbage-collected since they were queued: they can never be pushed.
		gone := map[string]bool{}
		for _, r := range invalid {
			gone[r] = true
			log.Warn("not valid in the store any more (garbage-collected?); dropped from the queue", "path", r)
		}
		if err := p.q.Remove(invalid...); err != nil {
			return false, err
		}
		var valid []string
		for _, r := range roots {
			if !gone[r] {
				valid = append(valid, r)
			}
		}
		if roots = valid; len(roots) == 0 {
			return len(queued) == p.cfg.Batch, nil
		}
		infos, err = p.cfg.Nix.Closure(ctx, roots)
	}
	p.ownNixEnd.Store(time.Now().UnixNano())
	if err != nil {
		return false, fmt.Errorf("reading the closures of %d queued paths: %w", len(roots), err)
	}
	opts := p.cfg.Push
	opts.Token = token
	res, err := push.Push(ctx, opts, infos)
	if err != nil {
		return false, err
	}
	failed := map[string]error{}
	for _, f := range res.Failed {
		failed[f.Path] = f.Err
	}
	var done []string
	retry := 0
	for _, r := range roots {
		ferr, isFailed := failed[r]
		switch {
		case !isFailed:
			done = append(done, r)
		case permanent(ferr):
			var dep *push.DependencyError
			if errors.As(ferr, &dep) {
				ferr = fmt.Errorf("%w: %w", ferr, dep.Err) // the reason, in failed/ too
			}
			log.Error("the server can never accept this path as it is; moved to failed/ in the queue directory", "path", r, "err", ferr)
			if err := p.q.Fail(r, ferr); err != nil {
				return false, err
			}
		default:
			retry++
			log.Warn("not pushed; stays queued", "path", r, "err", ferr)
		}
	}
	if err := p.q.Remove(done...); err != nil {
		return false, err
	}
	log.Info("pushed", "roots", len(done), "paths", len(res.Pushed), "present", res.Present, "nar_bytes", res.NarBytes, "sent_bytes", res.SentBytes, "elapsed", res.Elapsed.Round(time.Millisecond), "failed", len(res.Failed))
	if retry > 0 {
		return false, fmt.Errorf("%d of %d queued paths: %w", retry, len(roots), errRetry)
	}
	return len(queued) == p.cfg.Batch, nil
}

// permanent reports whether a path's failure will happen again however often it is retried:
// the server refused it (a 4xx other than 408 and 429) or the store's copy is corrupt.
func permanent(err error) bool {
	if errors.Is(err, push.ErrCorrupt) {
		return true
	}
	var he *push.HTTPError
	if errors.As(err, &he) {
		return he.Status >= 400 && he.Status < 500 && he.Status != http.StatusRequestTimeout && he.Status != http.StatusTooManyRequests &&
			he.Status != http.StatusUnauthorized && he.Status != http.StatusForbidden
	}
	return false
}
