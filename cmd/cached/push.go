package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"runtime/pprof"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/cached-dev/cached/internal/push"
	"github.com/cached-dev/cached/internal/watch"
	"github.com/dustin/go-humanize"
	"github.com/schollz/progressbar/v3"
	"golang.org/x/term"
)

type pushCmd struct {
	URL         string   `help:"URL of the cache to push to (required but with --enqueue)."`
	TokenFile   string   `help:"File holding a token with write scope, or a netrc file (as nix's netrc-file): then the password of the machine matching the URL's host (required but with --enqueue)." type:"path"`
	Enqueue     bool     `config:"-" help:"Add the paths to the queue of a running cached watch-store (--queue-dir) and return at once, pushing nothing: for a nix post-build-hook."`
	QueueDir    string   `help:"The watch-store queue directory (with --enqueue)." default:"/var/lib/cached-push" type:"path"`
	StoreRoot   string   `help:"Root directory of a chroot store (as nix's --store DIR) to push from, instead of /." type:"path"`
	Jobs        int      `help:"NARs made and uploaded at once (0: twice the CPUs, at most 16)." default:"0"`
	Compression string   `help:"Compression of uploaded NARs: zstd (through a temporary file), xz (likewise; slow), or none (streamed from the store, no temporary file)." default:"zstd" enum:"zstd,xz,none"`
	TmpDir      string   `help:"Where compressed NARs wait for their upload (one per job at a time; default: $TMPDIR or /tmp)." type:"path"`
	Progress    string   `help:"Progress display: auto (a bar on a terminal, lines otherwise), bar, lines." default:"auto" enum:"auto,bar,lines"`
	CPUProfile  string   `hidden:"" type:"path" help:"Write a CPU profile of the push to this file (go tool pprof)."`
	HeadLookups bool     `hidden:"" help:"Ask the server what it has with a HEAD per path, even if it answers POST /_cached/exists (to compare the two)."`
	Nix         string   `help:"The nix binary that reads the local store (nix-store is taken from beside it)." default:"nix"`
	Paths       []string `arg:"" optional:"" help:"Store paths or symlinks to them (./result): their closures are pushed. With --enqueue, a derivation (.drv) stands for its outputs." name:"path"`
}

func (p *pushCmd) Run(log *slog.Logger) error {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if p.Enqueue {
		return p.enqueue(ctx)
	}
	if len(p.Paths) == 0 {
		return errors.New("push: no path given (give store paths or ./result links)")
	}
	if p.CPUProfile != "" {
		f, err := os.Create(p.CPUProfile)
		if err != nil {
			return fmt.Errorf("--cpu-profile: %w", err)
		}
		defer f.Close()
		if err := pprof.StartCPUProfile(f); err != nil {
			return fmt.Errorf("--cpu-profile: %w", err)
		}
		defer pprof.StopCPUProfile()
	}
	if p.URL == "" || p.TokenFile == "" {
		return errors.New("push needs --url and --token-file (or CACHED_URL and CACHED_TOKEN_FILE), unless it is given --enqueue")
	}
	token, err := push.ReadToken(p.TokenFile, p.URL)
	if err != nil {
		return fmt.Errorf("--token-file: %w", err)
	}
	var roots []string
	seen := map[string]bool{}
	for _, arg := range p.Paths {
		sp, err := p.storePathOf(arg)
		if err != nil {
			return err
		}
		if !seen[sp] {
			seen[sp] = true
			roots = append(roots, sp)
		}
	}
	infos, err := push.Nix{Bin: p.Nix, Store: p.StoreRoot}.Closure(ctx, roots)
	if err != nil {
		return stoppedBy(ctx, err)
	}
	bar := p.Progress == "bar" || p.Progress == "auto" && term.IsTerminal(int(os.Stderr.Fd()))
	var prog progressDisplay = &lineProgress{w: os.Stderr}
	if bar {
		prog = &barProgress{w: os.Stderr}
	}
	res, err := push.Push(ctx, push.Options{
		URL: p.URL, Token: token, Jobs: p.Jobs, Compression: p.Compression, TempDir: p.TmpDir,
		StoreRoot: p.StoreRoot, HeadLookups: p.HeadLookups, Progress: prog, Log: log,
	}, infos)
	prog.finish()
	if err != nil {
		if errors.Is(err, push.ErrAuth) {
			return fmt.Errorf("%w (token from %s; it needs write scope)", err, p.TokenFile)
		}
		return stoppedBy(ctx, err)
	}
	fmt.Fprintf(os.Stderr, "pushed %d paths (NAR %s, sent %s %s), %d already present, %d failed, in %s\n",
		len(res.Pushed), humanize.IBytes(res.NarBytes), humanize.IBytes(res.SentBytes), p.Compression,
		res.Present, len(res.Failed), res.Elapsed.Round(time.Millisecond))
	if len(res.Failed) > 0 {
		for _, f := range res.Failed {
			fmt.Fprintf(os.Stderr, "failed: %s: %v\n", f.Path, f.Err)
		}
		return stoppedBy(ctx, fmt.Errorf("%d of %d paths not pushed", len(res.Failed), len(res.Failed)+len(res.Pushed)))
	}
	return nil
}

// storePathOf resolves a path argument; in a chroot store, a store path is taken as it is.
func (p *pushCmd) storePathOf(arg string) (string, error) {
	if p.StoreRoot != "" && strings.HasPrefix(arg, push.StoreDir+"/") {
		return arg, nil
	}
	return push.StorePathOf(arg, push.StoreDir)
}

// enqueue adds the paths to watch-store's queue. It checks nothing in the store (a hook must
// return at once; the watcher checks each path before it pushes it), but for asking the store
// for the outputs of a derivation: Nix 2.8 runs post-build hooks with OUT_PATHS empty, and
// DRV_PATH is then the only way to them. No path at all (an empty $OUT_PATHS) is no error.
func (p *pushCmd) enqueue(ctx context.Context) error {
	q, err := watch.OpenQueue(p.QueueDir, push.StoreDir)
	if err != nil {
		return fmt.Errorf("--queue-dir: %w", err)
	}
	var paths, drvs []string
	for _, arg := range p.Paths {
		sp, err := p.storePathOf(arg)
		if err != nil {
			return err
		}
		if strings.HasSuffix(sp, ".drv") {
			drvs = append(drvs, sp)
		} else {
			paths = append(paths, sp)
		}
	}
	outs, err := push.Nix{Bin: p.Nix, Store: p.StoreRoot}.Outputs(ctx, drvs)
	if err != nil {
		return fmt.Errorf("outputs of %s: %w", strings.Join(drvs, " "), err)
	}
	paths = append(paths, outs...)
	if err := q.Add(paths...); err != nil {
		return err
	}
	fmt.Fprintf(os.Stderr, "queued %d paths in %s\n", len(paths), p.QueueDir)
	return nil
}

type progressDisplay interface {
	push.Progress
	finish()
}

// lineProgress prints one line per path, for logs (CI) where a bar would be noise.
type lineProgress struct {
	mu      sync.Mutex
	w       io.Writer
	missing int
	done    int
}

func (l *lineProgress) Planned(present, missing int, narBytes uint64) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.missing = missing
	fmt.Fprintf(l.w, "%d paths already present, pushing %d (NAR %s)\n", present, missing, humanize.IBytes(narBytes))
}

func (l *lineProgress) NarBytes(int64) {}

func (l *lineProgress) Done(r push.PathResult) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.done++
	if r.Err != nil {
		fmt.Fprintf(l.w, "[%d/%d] failed %s: %v\n", l.done, l.missing, r.Path, r.Err)
		return
	}
	fmt.Fprintf(l.w, "[%d/%d] pushed %s (NAR %s, sent %s)\n", l.done, l.missing, r.Path, humanize.IBytes(r.NarSize), humanize.IBytes(r.FileSize))
}

func (l *lineProgress) finish() {}

// barProgress is one bar over the NAR bytes to push, with the paths done and the rate.
type barProgress struct {
	mu      sync.Mutex
	w       io.Writer
	bar     *progressbar.ProgressBar
	missing int
	done    int
	failed  int
}

func (b *barProgress) Planned(present, missing int, narBytes uint64) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.missing = missing
	fmt.Fprintf(b.w, "%d paths already present, pushing %d (NAR %s)\n", present, missing, humanize.IBytes(narBytes))
	if missing == 0 {
		return
	}
	b.bar = progressbar.NewOptions64(int64(narBytes),
		progressbar.OptionSetWriter(b.w),
		progressbar.OptionShowBytes(true),
		progressbar.OptionSetWidth(30),
		progressbar.OptionThrottle(100*time.Millisecond),
		progressbar.OptionShowElapsedTimeOnFinish(),
		progressbar.OptionSetDescription(b.desc()),
		progressbar.OptionFullWidth(),
	)
}

func (b *barProgress) desc() string { return fmt.Sprintf("paths %d/%d", b.done, b.missing) }

func (b *barProgress) NarBytes(n int64) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.bar != nil {
		b.bar.Add64(n)
	}
}

func (b *barProgress) Done(r push.PathResult) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.done++
	if b.bar == nil {
		return
	}
	if r.Err != nil {
		b.failed++
		b.bar.Clear()
		fmt.Fprintf(b.w, "failed %s: %v\n", r.Path, r.Err)
	}
	d := b.desc()
	if b.failed > 0 {
		d += fmt.Sprintf(", %d failed", b.failed)
	}
	b.bar.Describe(d)
}

func (b *barProgress) finish() {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.bar != nil {
		b.bar.Finish()
		fmt.Fprintln(b.w)
	}
}
