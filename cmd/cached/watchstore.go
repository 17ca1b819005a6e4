package main

import (
	"context"
	"log/slog"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/cached-dev/cached/internal/push"
	"github.com/cached-dev/cached/internal/watch"
)

type watchStoreCmd struct {
	URL          string        `help:"URL of the cache to push to." required:""`
	TokenFile    string        `help:"File holding a token with write scope, or a netrc file (as nix's netrc-file). Read again before each push, so a replaced token needs no restart." required:"" type:"path"`
	QueueDir     string        `help:"Directory of the durable queue of paths to push (cached push --enqueue adds to it too) and of the watcher's state." default:"/var/lib/cached-push" type:"path"`
	Ignore       []string      `help:"Globs on store path names (what follows <hash>-) never pushed unless a pushed path refers to them." default:"*.drv,source,*-source"`
	SkipUpstream []string      `help:"Binary caches (e.g. https://cache.nixos.org) whose paths are not pushed: a queued path one of them has (substituted from it) is dropped. Unset, everything new is pushed."`
	Jobs         int           `help:"NARs made and uploaded at once (0: twice the CPUs, at most 16)." default:"0"`
	Compression  string        `help:"Compression of uploaded NARs." default:"zstd" enum:"zstd,xz,none"`
	TmpDir       string        `help:"Where compressed NARs wait for their upload (default: $TMPDIR or /tmp)." type:"path"`
	ScanInterval time.Duration `help:"How often every valid path is listed, to find what events missed (a restarted daemon, a full event queue)." default:"10m"`
	MaxBackoff   time.Duration `help:"Longest wait between tries while the server is unreachable or refuses the token." default:"1m"`
	Nix          string        `help:"The nix binary that reads the local store (nix-store is taken from beside it)." default:"nix"`
	StoreRoot    string        `help:"Root directory of a chroot store (as nix's --store DIR) to watch, instead of /." type:"path"`
}

func (w *watchStoreCmd) Run(log *slog.Logger) error {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	err := watch.Run(ctx, watch.Config{
		Push: push.Options{
			URL: w.URL, Jobs: w.Jobs, Compression: w.Compression, TempDir: w.TmpDir, StoreRoot: w.StoreRoot,
		},
		TokenFile:    w.TokenFile,
		Nix:          push.Nix{Bin: w.Nix, Store: w.StoreRoot},
		QueueDir:     w.QueueDir,
		Ignore:       w.Ignore,
		SkipUpstream: w.SkipUpstream,
		ScanInterval: w.ScanInterval,
		MaxBackoff:   w.MaxBackoff,
		Log:          log,
	})
	return stoppedBy(ctx, err)
}
