package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/http/pprof"
	neturl "net/url"
	"os"
	"os/signal"
	"runtime/debug"
	"strings"
	"syscall"
	"time"

	"github.com/cached-dev/cached/internal/auth"
	"github.com/cached-dev/cached/internal/backend"
	"github.com/cached-dev/cached/internal/cache"
	"github.com/cached-dev/cached/internal/membudget"
	"github.com/cached-dev/cached/internal/server"
	"github.com/cached-dev/cached/internal/signing"
	"github.com/cached-dev/cached/internal/upstream"
)

type serveCmd struct {
	dataFlags
	pullFlags
	narRedirectFlags
	Listen            string        `help:"Address to listen on (host:port; port 0 picks a free one)." default:"127.0.0.1:5000"`
	UploadTokenFile   string        `help:"File with upload tokens, one per line; a line sha256:<hex> is a token's SHA-256 digest (cached token hash). Default: DATA/upload-tokens, generated on first start." type:"path"`
	AdminTokenFile    string        `help:"File with admin tokens (cached gc, pin, token), one per line; a line sha256:<hex> is a token's SHA-256 digest. Default: DATA/admin-token, generated on first start." type:"path"`
	PublicURL         string        `help:"URL clients use to reach this cache, shown in the printed nix.conf lines and the landing page (default http://LISTEN)."`
	Priority          int           `help:"Priority announced in nix-cache-info; lower wins among substituters." default:"40"`
	MaxUploadSize     byteSize      `help:"Largest NAR upload accepted (e.g. 64GiB)." default:"64GiB"`
	MaxNarSize        byteSize      `help:"Largest NAR accepted once decompressed (a small compressed upload may expand to far more); over it 413, nothing stored." default:"64GiB"`
	MaxMetaSize       byteSize      `help:"Largest narinfo, listing, log or realisation upload, after decoding." default:"8MiB"`
	DecoderMemory     byteSize      `help:"Memory the decoders of concurrent uploads may reserve together (the xz dictionaries and zstd or brotli windows their streams declare); an upload that does not fit waits up to 10s, then gets 503 with Retry-After, one that never could gets 413. 0: a quarter of the cgroup's memory.max or of the machine's memory, at least 256MiB. Go's memory limit is set to this plus 128MiB, unless GOMEMLIMIT is set." default:"0"`
	ShutdownTimeout   time.Duration `help:"How long in-flight requests may take to finish on SIGINT/SIGTERM." default:"60s"`
	StoreCompression  string        `help:"Compression NARs are stored in: zstd (uploads in xz, bzip2, br or none are recompressed while they stream in; zstd uploads are kept), xz, or as-uploaded. Narinfos are rewritten to match; signatures stay valid." default:"zstd" enum:"zstd,xz,as-uploaded"`
	ZstdLevel         int           `help:"zstd level for recompressed NARs (1-22; klauspost/compress maps it onto its fastest, default, better and best encoders)." default:"3"`
	Recompressions    int           `help:"How many NARs may be recompressed at once for clients asking for one under the name it was uploaded as, or decompressed for nix-serve's and harmonia's NAR URLs (rare, CPU-heavy requests); more wait. 0: one per CPU." default:"0"`
	SharedBucket      string        `help:"Whether other servers may write to the same backend (replicas on one bucket): the servers follow each other's journal (--journal-interval) or else a narinfo missing from the index is looked up in the backend, the backend is listed every --sync-interval, and staged uploads are cleaned up only once an hour old. auto: true for --backend s3, false for disk." default:"auto" enum:"auto,true,false"`
	SyncInterval      time.Duration `help:"With a shared bucket: how often to list the bucket to pick up paths uploaded or deleted through other servers sharing it (0: never)." default:"60s"`
	NegativeTTL       time.Duration `help:"With a shared bucket: how long a narinfo missing from both the index and the bucket is answered 404 without asking the bucket again." default:"10s"`
	JournalInterval   time.Duration `help:"With a shared bucket: how often to read the journal (journal/ in the bucket) in which the servers sharing it publish the narinfos they commit and delete; while it is read, a narinfo miss is answered from the index without a bucket request (0: no journal, a miss asks the bucket)." default:"1s"`
	StaleUploadAge    time.Duration `help:"With --backend s3: incomplete multipart uploads older than this are aborted (hourly)." default:"24h"`
	RequireUploadSigs []string      `help:"Accept only narinfos signed by one of these public keys (name:base64, repeatable or comma-separated), e.g. your builders' keys." sep:","`
	BodyIdleTimeout   time.Duration `help:"Fail an upload whose body sends nothing for this long (slow or stalled clients)." default:"60s"`
	WriteIdleTimeout  time.Duration `help:"Drop a connection whose client takes no bytes of an answer for this long (a download that moves, however slowly, is never cut); 0: never." default:"60s"`
	WriteRateLimit    int           `help:"Most PUT requests per minute per client (token, else IP); 0 for no limit. Over it clients get 429, which nix retries." default:"0"`
	TLSCert           string        `help:"Serve HTTPS with this certificate (PEM) and --tls-key." type:"path" name:"tls-cert"`
	TLSKey            string        `help:"Private key (PEM) for --tls-cert." type:"path" name:"tls-key"`
	AccessLog         string        `help:"Which requests get a log line: all, errors (writes and failures; successful reads only with --log-level debug) or none (server errors only)." default:"all" enum:"all,errors,none"`
	Private           bool          `help:"Require a token with read scope for every read (nix sends its netrc credentials on reads too)."`
	FastPath          bool          `help:"Answer plain HTTP/1.1 GET and HEAD requests for narinfos and for whole NARs on the disk backend without net/http's per-request work (same answers, logs and metrics); anything else on a connection goes to net/http. Not used with --tls-cert or --private." default:"true" negatable:""`
	PprofListen       string        `help:"Serve Go's profiling endpoints (/debug/pprof/) on this separate address, e.g. 127.0.0.1:6060; off when empty. Never expose it publicly." placeholder:"ADDR"`
}

// decoderMemoryWait is how long an upload waits for room in the decoder memory budget before
// it gets 503: long enough for a burst to pass, short of nix's patience.
const decoderMemoryWait = 10 * time.Second

func (c *serveCmd) Run(log *slog.Logger) (err error) {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	defer func() { err = stoppedBy(ctx, err) }()

	cred, err := c.credentials()
	if err != nil {
		return err
	}
	lim, err := c.limits()
	if err != nil {
		return err
	}
	st, err := c.open(ctx, log, cache.Options{
		Priority:         c.Priority,
		StoreCompression: c.StoreCompression, ZstdLevel: c.ZstdLevel, Recompressions: c.Recompressions,
		ReadThrough: c.sharedBucket(), NegativeTTL: c.NegativeTTL, UploadKeys: lim.uploadKeys, MaxNarSize: int64(c.MaxNarSize),
		DecoderMemory: lim.budget,
	})
	if err != nil {
		return err
	}
	defer st.close()

	// Crash recovery: reindex a dirty or new index, remove partial uploads (cache.Recover).
	if err := st.cache.Recover(ctx); err != nil {
		return err
	}
	defer func() {
		if err := st.cache.MarkClean(); err != nil {
			log.Error("marking index clean", "err", err)
		}
	}()

	ln, err := net.Listen("tcp", c.Listen)
	if err != nil {
		return fmt.Errorf("listen on %s: %w", c.Listen, err)
	}
	url := c.PublicURL
	if url == "" {
		url = "http://" + ln.Addr().String()
		if c.TLSCert != "" {
			url = "https://" + ln.Addr().String()
		}
	}
	stopBackground := st.cache.StartBackground(cache.BackgroundOptions{SyncInterval: c.SyncInterval, StaleUploadAge: c.StaleUploadAge})
	defer stopBackground()
	journalCtx, stopJournal := context.WithCancel(context.Background())
	defer func() { stopJournal(); st.cache.WaitJournal() }() // its last flush, before the index closes
	if c.sharedBucket() && c.JournalInterval > 0 {
		f, err := st.cache.FollowJournal(journalCtx, c.JournalInterval)
		if err != nil {
			return err
		}
		log.Info("following the replicas' journal", "every", c.JournalInterval, "staleAfter", f.StaleAfter())
	}

	puller, err := c.puller(st.cache, c.Data, log)
	if err != nil {
		return err
	}
	if puller != nil {
		defer puller.Close()
		log.Info("pull-through on", "upstreams", puller.Upstreams())
	}
	srv, httpSrv, err := c.newServer(st, cred, lim, puller, log)
	if err != nil {
		return err
	}
	printBanner(url, st, cred.tokens, cred.tokenCreated, cred.tokenPath, c.Data)
	if cred.adminCreated {
		fmt.Printf("Admin token (cached gc, cached pin, cached token) written to %s\n\n", cred.adminPath)
	}
	log.Info("serving", "url", url, "backend", st.backendDesc, "publicKeys", publicKeys(st.keys), "decoderMemory", byteSize(lim.decoderMemory).String(), "goMemoryLimit", byteSize(debug.SetMemoryLimit(-1)).String())

	if c.PprofListen != "" {
		pln, err := startPprof(c.PprofListen, log)
		if err != nil {
			return err
		}
		defer pln.Close()
	}
	return c.serve(ctx, ln, srv, httpSrv, log)
}

// serveCredentials are the tokens serve accepts, and whether it generated them.
type serveCredentials struct {
	tokens       []string // upload tokens
	tokenCreated bool
	tokenPath    string
	adminTokens  []string
	adminCreated bool
	adminPath    string
}

// credentials creates the data directory and loads (on a first start, generates) the upload
// and admin tokens.
func (c *serveCmd) credentials() (serveCredentials, error) {
	var cr serveCredentials
	if err := os.MkdirAll(c.Data, 0o755); err != nil {
		return cr, fmt.Errorf("data directory: %w", err)
	}
	var err error
	cr.tokens, cr.tokenCreated, cr.tokenPath, err = loadTokens(c.UploadTokenFile, c.Data)
	if err != nil {
		return cr, err
	}
	cr.adminTokens, cr.adminCreated, cr.adminPath, err = loadAdminToken(c.AdminTokenFile, c.Data)
	return cr, err
}

// serveLimits is what the flags that bound uploads and memory come to.
type serveLimits struct {
	uploadKeys    []signing.PublicKey
	decoderMemory int64
	budget        *membudget.Budget
}

// limits checks the flags that need more than their type and sets up the decoder memory
// budget (and Go's memory limit from it, unless GOMEMLIMIT is set).
func (c *serveCmd) limits() (serveLimits, error) {
	var l serveLimits
	for _, k := range c.RequireUploadSigs {
		pk, err := signing.ParsePublicKey(k)
		if err != nil {
			return l, fmt.Errorf("--require-upload-sigs: %w", err)
		}
		l.uploadKeys = append(l.uploadKeys, pk)
	}
	if c.JournalInterval < 0 {
		return l, fmt.Errorf("--journal-interval %s: want 0 (no journal) or more", c.JournalInterval)
	}
	if c.WriteIdleTimeout < 0 {
		return l, fmt.Errorf("--write-idle-timeout %s: want 0 (never) or more", c.WriteIdleTimeout)
	}
	if (c.TLSCert == "") != (c.TLSKey == "") {
		return l, fmt.Errorf("--tls-cert and --tls-key go together")
	}
	l.decoderMemory = int64(c.DecoderMemory)
	if l.decoderMemory == 0 {
		l.decoderMemory = membudget.DefaultSize()
	}
	l.budget = membudget.New(l.decoderMemory, decoderMemoryWait)
	if os.Getenv("GOMEMLIMIT") == "" { // an operator's GOMEMLIMIT wins
		debug.SetMemoryLimit(membudget.GoMemoryLimit(l.decoderMemory))
	}
	if err := c.narRedirectFlags.check(c.Backend); err != nil {
		return l, err
	}
	return l, nil
}

// newServer wires the HTTP server: the handler over the cache, and net/http's server with its
// limits and protocols.
func (c *serveCmd) newServer(st *opened, cred serveCredentials, lim serveLimits, puller *upstream.Puller, log *slog.Logger) (*server.Server, *http.Server, error) {
	tokenStore := auth.NewStore(st.index)
	for _, t := range cred.adminTokens {
		tokenStore.AddFixed(t, auth.ScopeAdmin)
	}
	cfg := server.Config{
		Cache:           st.cache,
		Index:           st.index,
		Tokens:          tokenStore,
		Private:         c.Private,
		BodyIdleTimeout: c.BodyIdleTimeout,
		WriteRateLimit:  c.WriteRateLimit,
		AccessLog:       c.AccessLog,
		Log:             log,
		UploadTokens:    cred.tokens,
		MaxUploadSize:   int64(c.MaxUploadSize),
		MaxMetaSize:     int64(c.MaxMetaSize),
		DecoderMemory:   lim.budget,
		Priority:        c.Priority,
		PublicURL:       c.PublicURL,
		Puller:          puller,
	}
	redirector, _ := backend.As[backend.Redirector](st.backend)
	var err error
	if cfg.NarRedirect, err = c.narRedirect(c.Backend, redirector); err != nil {
		return nil, nil, err
	}
	if cfg.NarRedirect != nil {
		log.Info("NAR downloads are redirected", "to", c.NarRedirect, "expiry", c.NarRedirectExpiry)
	}
	cfg.WriteIdleTimeout = c.WriteIdleTimeout
	srv := server.New(cfg)
	httpSrv := &http.Server{
		Handler:           srv,
		ReadHeaderTimeout: 30 * time.Second,
		IdleTimeout:       2 * time.Minute,
		MaxHeaderBytes:    64 << 10,
		ErrorLog:          slog.NewLogLogger(log.Handler(), slog.LevelWarn),
	}
	// HTTP/1.1 (what nix speaks over http://, with sendfile for NARs), HTTP/2 over TLS, and
	// h2c for clients that ask for it in clear.
	httpSrv.Protocols = new(http.Protocols)
	httpSrv.Protocols.SetHTTP1(true)
	httpSrv.Protocols.SetHTTP2(true)
	httpSrv.Protocols.SetUnencryptedHTTP2(true)
	return srv, httpSrv, nil
}

// startPprof serves Go's profiling endpoints on addr, apart from the cache; closing the
// listener it returns stops it.
func startPprof(addr string, log *slog.Logger) (net.Listener, error) {
	pln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("--pprof-listen %s: %w", addr, err)
	}
	mux := http.NewServeMux()
	mux.HandleFunc("/debug/pprof/", pprof.Index)
	mux.HandleFunc("/debug/pprof/profile", pprof.Profile)
	mux.HandleFunc("/debug/pprof/trace", pprof.Trace)
	mux.HandleFunc("/debug/pprof/symbol", pprof.Symbol)
	go (&http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}).Serve(pln)
	log.Warn("profiling endpoints enabled", "addr", pln.Addr().String())
	return pln, nil
}

// serve answers on ln (through the fast path when it can) until ctx ends, then shuts down
// gracefully within --shutdown-timeout.
func (c *serveCmd) serve(ctx context.Context, ln net.Listener, srv *server.Server, httpSrv *http.Server, log *slog.Logger) error {
	var fast *server.FastServer
	if c.FastPath && c.TLSCert == "" && !c.Private {
		fast = server.NewFastServer(srv, httpSrv)
	}
	if fast == nil { // the fast path bounds its connections' writes itself
		ln = server.WriteIdleListener(ln, c.WriteIdleTimeout)
	}
	errCh := make(chan error, 1)
	go func() {
		if c.TLSCert != "" {
			errCh <- httpSrv.ServeTLS(ln, c.TLSCert, c.TLSKey)
			return
		}
		if fast != nil {
			errCh <- fast.Serve(ln)
			return
		}
		errCh <- httpSrv.Serve(ln)
	}()
	select {
	case err := <-errCh:
		return err
	case <-ctx.Done():
	}
	log.Info("shutting down: waiting for in-flight requests", "cause", context.Cause(ctx), "timeout", c.ShutdownTimeout)
	sctx, cancel := context.WithTimeout(context.Background(), c.ShutdownTimeout)
	defer cancel()
	shutdown := httpSrv.Shutdown
	if fast != nil {
		shutdown = fast.Shutdown
	}
	if err := shutdown(sctx); err != nil && !errors.Is(err, http.ErrServerClosed) {
		log.Warn("shutdown", "err", err)
	}
	log.Info("stopped")
	return nil
}

func printBanner(url string, st *opened, tokens []string, tokenCreated bool, tokenPath, dataDir string) {
	host := "HOST"
	if u, err := neturl.Parse(url); err == nil && u.Hostname() != "" {
		host = u.Hostname()
	}
	if st.keyCreated {
		fmt.Printf("Generated signing key %s in %s (secret-key, public-key)\n", st.keys[0].Name, dataDir)
	}
	fmt.Printf(`cached is serving %s at %s
public key: %s

On machines that substitute from this cache, add to nix.conf:
  substituters = %s
  trusted-public-keys = %s

On machines that upload, put this line in a netrc file and set netrc-file = /path/to/netrc in nix.conf:
`, st.backendDesc, url, st.keys[0].Public(), url, publicKeys(st.keys))
	if tokenCreated {
		fmt.Printf("  machine %s login cached password %s\n", host, tokens[0])
	} else {
		fmt.Printf("  machine %s login cached password <a token from %s>\n", host, tokenPath)
	}
	fmt.Printf("then upload with (zstd: nix's default, xz, is several times slower to compress and to check):\n  nix copy --to '%s?compression=zstd' /nix/store/...\n\n", url)
}

// publicKeys is the trusted-public-keys value for keys: every current one, the primary first.
func publicKeys(keys []signing.SecretKey) string {
	out := make([]string, len(keys))
	for i, k := range keys {
		out[i] = k.Public().String()
	}
	return strings.Join(out, " ")
}

// sharedBucket reports whether other servers may write to the backend (--shared-bucket; auto:
// an S3 bucket may be shared, a disk directory is this server's alone).
func (c *serveCmd) sharedBucket() bool {
	return c.SharedBucket == "true" || c.SharedBucket == "auto" && c.Backend == "s3"
}
