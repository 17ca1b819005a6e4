// Command cached is a Nix binary cache server and its tools. The subcommands are the fields of
// cli below (cached --help lists them). This package holds flags and wiring only; what the cache
// does lives in internal/.
package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"strconv"
	"strings"

	"github.com/alecthomas/kong"
	"github.com/cached-dev/cached/internal/logging"
	"github.com/dustin/go-humanize"
)

type cli struct {
	LogLevel  string      `help:"Log level: debug, info, warn, error." default:"info" enum:"debug,info,warn,error"`
	LogFormat string      `help:"Log format: text or json." default:"text" enum:"text,json"`
	Config    string      `help:"TOML configuration file: one key per flag, named as the flag (listen = '0.0.0.0:5000'). Command-line flags override the environment, which overrides the file, which overrides the defaults. Every command accepts it and takes the keys it has flags for; a key no command knows is an error. See cached config check." env:"CACHED_CONFIG" type:"path" placeholder:"FILE"`
	Version   versionFlag `help:"Print version, commit and Go version, and exit." env:"-"`

	Serve       serveCmd       `cmd:"" help:"Serve a Nix binary cache over HTTP (nix copy --to uploads, substituters download)."`
	Keygen      keygenCmd      `cmd:"" help:"Write a Nix-compatible ed25519 signing key pair."`
	Reindex     reindexCmd     `cmd:"" help:"Rebuild the index from the backend (stop the server first)."`
	Resign      resignCmd      `cmd:"" help:"Sign every stored narinfo with each current signing key (after adding a --secret-key-file); stop the server first."`
	Gc          gcCmd          `cmd:"" name:"gc" help:"Garbage-collect a running server's cache by age and/or size, never breaking a kept closure."`
	Verify      verifyCmd      `cmd:"" help:"Check a running server's cache: NARs against their narinfos (re-hashing all or a sample), index against backend, signatures, orphans; optionally quarantine what is bad."`
	Pin         pinCmd         `cmd:"" help:"Pin closures so that gc never collects them."`
	Token       tokenCmd       `cmd:"" help:"Manage access tokens with read, write or admin scope."`
	ConfigCmd   configCmd      `cmd:"" name:"config" help:"Check a configuration file."`
	VersionCmd  versionCmd     `cmd:"" name:"version" help:"Print version, commit and Go version."`
	Push        pushCmd        `cmd:"" help:"Upload the closures of store paths (or ./result links) that the cache lacks, in parallel, references first."`
	WatchStore  watchStoreCmd  `cmd:"" name:"watch-store" help:"Push every path that becomes valid in the local store, through a durable queue on disk (a service for builders)."`
	Healthcheck healthcheckCmd `cmd:"" help:"Exit 0 when a running server is ready (GET /readyz answers 200), 1 with the reason otherwise: a container HEALTHCHECK that needs no curl."`

	file *configFile // the loaded --config file; empty when none
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

// String gives the size exactly, in the largest binary unit that divides it (64GiB, 1536KiB).
func (b byteSize) String() string {
	n := int64(b)
	units := []string{"KiB", "MiB", "GiB", "TiB", "PiB", "EiB"}
	for i := len(units) - 1; i >= 0; i-- {
		size := int64(1) << (10 * (i + 1))
		if n != 0 && n%size == 0 {
			return strconv.FormatInt(n/size, 10) + units[i]
		}
	}
	return strconv.FormatInt(n, 10)
}

func newLogger(level, format string, buf *logging.Buffer) *slog.Logger {
	var lv slog.Level
	_ = lv.UnmarshalText([]byte(strings.ToUpper(level)))
	return logging.New(lv, format == "json", buf)
}

func main() {
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr, os.Exit))
}

// newParser builds the command line parser; tests build theirs with it too.
func newParser(c *cli, stdout, stderr io.Writer, exit func(int)) (*kong.Kong, error) {
	return kong.New(c,
		kong.Name("cached"),
		kong.Description("A content-addressed Nix binary cache server. Every flag can also be set as CACHED_<FLAG> in the environment (e.g. CACHED_LISTEN, CACHED_DATA), or under its name in the --config file (CACHED_CONFIG)."),
		kong.DefaultEnvars("CACHED"),
		kong.UsageOnError(),
		kong.Writers(stdout, stderr),
		kong.Exit(exit),
	)
}

// run parses args, runs the chosen command and returns the exit status.
func run(args []string, stdout, stderr io.Writer, exit func(int)) int {
	var c cli
	parser, err := newParser(&c, stdout, stderr, exit)
	if err != nil {
		fmt.Fprintln(stderr, "cached:", err)
		return 2
	}
	kctx, err := parser.Parse(args)
	if err != nil {
		// A bad configuration file is not a usage error: say where, without the usage text.
		var ce *configError
		if errors.As(err, &ce) {
			fmt.Fprintln(stderr, "cached:", ce)
			return 2
		}
		parser.FatalIfErrorf(err)
		return 2
	}
	if c.file == nil {
		c.file = &configFile{}
	}
	buf := logging.NewBuffer(stderr)
	log := newLogger(c.LogLevel, c.LogFormat, buf)
	slog.SetDefault(log)
	kctx.BindTo(stdout, (*io.Writer)(nil))
	err = kctx.Run(log, c.file)
	buf.Close()
	if err != nil {
		fmt.Fprintln(stderr, "cached:", err)
		return 1
	}
	return 0
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
