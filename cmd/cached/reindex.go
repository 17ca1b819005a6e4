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

type reindexCmd struct {
	dataFlags
}

func (c *reindexCmd) Run(log *slog.Logger) (err error) {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	defer func() { err = stoppedBy(ctx, err) }()
	st, err := c.open(ctx, log, cache.Options{})
	if err != nil {
		return err
	}
	defer st.close()
	start := time.Now()
	fmt.Fprintf(os.Stderr, "reindexing %s\n", st.backendDesc)
	stats, err := st.cache.Reindex(ctx, true, func(s cache.ReindexStats) {
		fmt.Fprintf(os.Stderr, "  %d narinfos indexed (%.0f/s)\n", s.NarInfos, float64(s.NarInfos)/time.Since(start).Seconds())
	})
	if err != nil {
		return err
	}
	if err := st.index.SetDirty(false); err != nil {
		return err
	}
	fmt.Printf("reindex done in %s: %d narinfos indexed, %d unreadable skipped, %d stale entries removed\n",
		time.Since(start).Round(time.Millisecond), stats.NarInfos, stats.Invalid, stats.Removed)
	return nil
}
