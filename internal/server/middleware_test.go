package server_test

import (
	"io"
	"log/slog"
	"net/http"
	"testing"

	"github.com/cached-dev/cached/internal/server"
)

// BenchmarkGetNarInfoHitLogged is BenchmarkGetNarInfoHit with the request line written (Info
// level), as a production server runs: it measures what one log line and the metrics cost.
func BenchmarkGetNarInfoHitLogged(b *testing.B) {
	tc := newTestCacheConfig(b, func(c *server.Config) {
		c.Log = slog.New(slog.NewTextHandler(io.Discard, &slog.HandlerOptions{Level: slog.LevelInfo}))
	})
	u := newUpload(b, "bench", "xz")
	u.store(b, tc)
	benchGet(b, tc, u.NarInfoPath(), http.StatusOK)
}
