package main

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/cached-dev/cached/internal/cache"
)

type resignCmd struct {
	dataFlags
	DropOthers bool `help:"Also remove every signature not made by a current key: the server's retired keys' and uploaders' alike. Default: keep them (a client ignores signatures by keys it does not trust)."`
	DryRun     bool `help:"Count what would change; write nothing."`
}

// Run signs every stored narinfo with each --secret-key-file key that has not signed it yet, in
// the backend and the index. The server adds such signatures when it serves a narinfo anyway;
// this stores them, for plain nix reading the backend and so that serving costs nothing extra.
func (c *resignCmd) Run(log *slog.Logger) (err error) {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	defer func() { err = stoppedBy(ctx, err) }()
	st, err := c.open(ctx, log, cache.Options{})
	if err != nil {
		return err
	}
	defer st.close()
	// As at server start: an index that was not closed cleanly, or a new one, first catches up
	// with the backend, so that no narinfo is missed.
	dirty, err := st.index.Dirty()
	if err != nil {
		return err
	}
	fresh, err := st.index.Fresh()
	if err != nil {
		return err
	}
	if dirty || fresh {
		fmt.Fprintf(os.Stderr, "indexing %s first\n", st.backendDesc)
		if _, err := st.cache.Reindex(ctx, false, nil); err != nil {
			return err
		}
		if err := st.index.SetDirty(false); err != nil {
			return err
		}
	}
	start := time.Now()
	fmt.Fprintf(os.Stderr, "signing the narinfos of %s with %s\n", st.backendDesc, publicKeys(st.keys))
	stats, err := st.cache.Resign(ctx, cache.ResignOptions{DropOthers: c.DropOthers, DryRun: c.DryRun}, func(s cache.ResignStats) {
		fmt.Fprintf(os.Stderr, "  %d narinfos checked, %d re-signed (%.0f/s)\n", s.NarInfos, s.Resigned, float64(s.NarInfos)/time.Since(start).Seconds())
	})
	if err != nil {
		return err
	}
	verb := "re-signed"
	if c.DryRun {
		verb = "would be re-signed (dry run)"
	}
	fmt.Printf("resign done in %s: %d narinfos checked, %d %s; %d signatures added, %d dropped, %d unreadable skipped\n",
		time.Since(start).Round(time.Millisecond), stats.NarInfos, stats.Resigned, verb, stats.SigsAdded, stats.SigsDropped, stats.Invalid)
	return nil
}
