// Command cached is a Nix binary cache server. Subcommands: serve, keygen, reindex. This package
// holds flags and wiring only; what the cache does lives in internal/.
package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"strings"

	"github.com/alecthomas/kong"
	"github.com/cached-dev/cached/internal/logging"
	"github.com/dustin/go-humanize"
)

type cli struct {
	LogLevel  string `help:"Log level: debug, info, warn, error." default:"info" enum:"debug,info,warn,error"`
	LogFormat string `help:"Log format: text or json." default:"text" enum:"text,json"`

	Serve   serveCmd   `cmd:"" help:"Serve a Nix binary cache over HTTP (nix copy --to uploads, substituters download)."`
	Keygen  keygenCmd  `cmd:"" help:"Write a Nix-compatible ed25519 signing key pair."`
	Reindex reindexCmd `cmd:"" help:"Rebuild the index from the backend (stop the server first)."`
	Resign  resignCmd  `cmd:"" help:"Sign every stored narinfo with each current signing key (after adding a --secret-key-file); stop the server first."`
	Gc      gcCmd      `cmd:"" name:"gc" help:"Garbage-collect a running server's cache by age and/or size, never breaking a kept closure."`
	Verify  verifyCmd  `cmd:"" help:"Check a running server's cache: NARs against their narinfos (re-hashing all or a sample), index against backend, signatures, orphans; optionally quarantine what is bad."`
	Pin     pinCmd     `cmd:"" help:"Pin closures so that gc never collects them."`
	Token   tokenCmd   `cmd:"" help:"Manage access tokens with read, write or admin scope."`
}

// byteSize is a flag value such as 64GiB, 512MB or 1048576.
type byteSize int64

func (b *byteSize) UnmarshalText(text []byte) error {
	n, err := humanize.ParseBytes(string(text))
	if err != nil {
		return fmt.Errorf("invalid size %q: %w", text, err)
	}
	*b = byteSize(n)
	return nil
}

func newLogger(level, format string, buf *logging.Buffer) *slog.Logger {
	var lv slog.Level
	_ = lv.UnmarshalText([]byte(strings.ToUpper(level)))
	return logging.New(lv, format == "json", buf)
}

func main() {
	var c cli
	ctx := kong.Parse(&c,
		kong.Name("cached"),
		kong.Description("A content-addressed Nix binary cache server. Every flag can also be set as CACHED_<FLAG> in the environment (e.g. CACHED_LISTEN, CACHED_DATA)."),
		kong.DefaultEnvars("CACHED"),
		kong.UsageOnError(),
	)
	buf := logging.NewBuffer(os.Stderr)
	log := newLogger(c.LogLevel, c.LogFormat, buf)
	slog.SetDefault(log)
	err := ctx.Run(log)
	buf.Close()
	if err != nil {
		fmt.Fprintln(os.Stderr, "cached:", err)
		os.Exit(1)
	}
}

// stoppedBy adds what ended ctx to err when a signal did (a start-up step then fails with a bare
// "context canceled"), so that the log says who stopped the command.
func stoppedBy(ctx context.Context, err error) error {
	if err == nil || ctx.Err() == nil {
		return err
	}
	cause := context.Cause(ctx)
	if cause == nil || errors.Is(err, cause) {
		return err
	}
	return fmt.Errorf("%w (stopped: %v)", err, cause)
}
