// Command soak runs cached for a while under legitimate and hostile load at once, all on
// 127.0.0.1, and reports what a cache in front of a company's builds must never do: fail a
// legitimate request, let the narinfo latency tail run away, outgrow its memory budget, or break
// a closure.
//
//	go run ./bench/soak                       # 10 minutes, 64 substituters, 8 uploaders
//	go run ./bench/soak -duration 1m -out soak.json
//
// Legitimate load: substituters fetch narinfos and NARs of a pinned seed set (which gc must never
// touch) and ask for missing ones; uploaders push fresh closures (dependencies first) in none, xz
// and zstd and check each is then served; `cached gc` runs every -gc-every against what they
// pushed. A legitimate request fails when it gets an answer a correct cache would not give: an
// error status other than a 503 that a retry then gets past (nix retries 503s), a wrong body, or
// a transport error.
//
// Hostile load: slowloris heads, xz NARs of thousands of tiny blocks each declaring a 128 MiB
// dictionary, zstd decompression bombs, Range floods, and clients that never read what they asked
// for. Their answers are counted, not judged; what matters is the effect on the legitimate ones.
//
// At the end every narinfo the server holds is checked: each reference must be served and each
// NAR must download. Results print as a table and, with -out, as JSON.
package main

import (
	"bufio"
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/cached-dev/cached/internal/nar"
	"github.com/cached-dev/cached/internal/narinfo"
	"github.com/klauspost/compress/zstd"
	"github.com/nix-community/go-nix/pkg/nixbase32"
	"github.com/ulikunitz/xz"
)

type config struct {
	duration     time.Duration
	substituters int
	uploaders    int
	gcEvery      time.Duration
	seedChains   int
	cachedBin    string
	serveArgs    string
	out          string
	keep         bool
}

func main() {
	var cfg config
	flag.DurationVar(&cfg.duration, "duration", 10*time.Minute, "how long the load runs")
	flag.IntVar(&cfg.substituters, "substituters", 64, "concurrent substituting clients")
	flag.IntVar(&cfg.uploaders, "uploaders", 8, "concurrent uploading clients")
	flag.DurationVar(&cfg.gcEvery, "gc-every", time.Minute, "how often cached gc runs")
	flag.IntVar(&cfg.seedChains, "seed-chains", 20, "pinned seed closures (chains of 8 paths) the substituters fetch")
	flag.StringVar(&cfg.cachedBin, "cached", "", "cached binary (default: built from this tree)")
	flag.StringVar(&cfg.serveArgs, "serve-args", "", "extra flags for cached serve, space-separated")
	flag.StringVar(&cfg.out, "out", "", "write the results as JSON to this file")
	flag.BoolVar(&cfg.keep, "keep", false, "keep the work directory (data, server log)")
	flag.Parse()
	if err := run(cfg); err != nil {
		fmt.Fprintln(os.Stderr, "soak:", err)
		os.Exit(1)
	}
}

// results is what a run reports.
type results struct {
	Commit          string         `json:"commit"`
	Duration        string         `json:"duration"`
	Substituters    int            `json:"substituters"`
	Uploaders       int            `json:"uploaders"`
	ServeArgs       string         `json:"serveArgs"`
	Legit           map[string]int `json:"legitimateRequests"`
	LegitFailed     map[string]int `json:"legitimateFailed"`
	Retried503      int64          `json:"retried503"`
	FailureSamples  []string       `json:"failureSamples"`
	NarinfoP50Ms    float64        `json:"narinfoP50Ms"`
	NarinfoP99Ms    float64        `json:"narinfoP99Ms"`
	PeakRSSMiB      float64        `json:"peakRssMiB"`
	GCRuns          int            `json:"gcRuns"`
	GCPathsDeleted  int            `json:"gcPathsDeleted"`
	Hostile         map[string]int `json:"hostile"`
	SlowlorisMaxSec float64        `json:"slowlorisHeldMaxSec"`
	NarinfosChecked int            `json:"narinfosChecked"`
	ClosuresBroken  int            `json:"closuresBroken"`
	BrokenSamples   []string       `json:"brokenSamples"`
}

// tally counts outcomes by kind from many goroutines.
type tally struct {
	mu      sync.Mutex
	counts  map[string]int
	samples []string
}

func newTally() *tally { return &tally{counts: map[string]int{}} }

func (t *tally) add(kind string) {
	t.mu.Lock()
	t.counts[kind]++
	t.mu.Unlock()
}

func (t *tally) fail(kind, format string, args ...any) {
	t.mu.Lock()
	t.counts[kind]++
	if len(t.samples) < 20 {
		t.samples = append(t.samples, kind+": "+fmt.Sprintf(format, args...))
	}
	t.mu.Unlock()
}

func (t *tally) snapshot() map[string]int {
	t.mu.Lock()
	defer t.mu.Unlock()
	return maps(t.counts)
}

func maps(m map[string]int) map[string]int {
	c := make(map[string]int, len(m))
	for k, v := range m {
		c[k] = v
	}
	return c
}

type soak struct {
	cfg        config
	base       string
	token      string
	adminToken string
	client     *http.Client

	seed      []path // pinned: must always be served
	legit     *tally
	failed    *tally
	hostile   *tally
	retried   atomic.Int64
	latencyMu sync.Mutex
	latencies []time.Duration
	slowMax   atomic.Int64 // nanoseconds the longest slowloris connection was held
}

// path is one store path the soak made, with what its NAR and narinfo are.
type path struct {
	hash, name string
	refs       []string // basenames
	nar        []byte
}

func (p path) base() string { return p.hash + "-" + p.name }

func run(cfg config) error {
	work, err := os.MkdirTemp("", "cached-soak-")
	if err != nil {
		return err
	}
	if cfg.keep {
		fmt.Println("work directory:", work)
	} else {
		defer os.RemoveAll(work)
	}
	bin := cfg.cachedBin
	if bin == "" {
		bin = filepath.Join(work, "cached")
		build := exec.Command("go", "build", "-o", bin, "./cmd/cached")
		build.Stdout, build.Stderr = os.Stderr, os.Stderr
		if err := build.Run(); err != nil {
			return fmt.Errorf("building cached (run from the repository root): %w", err)
		}
	}
	port, err := freePort()
	if err != nil {
		return err
	}
	data := filepath.Join(work, "data")
	args := []string{"serve", "--data", data, "--listen", "127.0.0.1:" + strconv.Itoa(port), "--access-log", "errors"}
	args = append(args, strings.Fields(cfg.serveArgs)...)
	logFile, err := os.Create(filepath.Join(work, "server.log"))
	if err != nil {
		return err
	}
	defer logFile.Close()
	srv := exec.Command(bin, args...)
	srv.Stdout, srv.Stderr = logFile, logFile
	if err := srv.Start(); err != nil {
		return err
	}
	exited := make(chan error, 1)
	go func() { exited <- srv.Wait() }()
	defer func() {
		_ = srv.Process.Signal(os.Interrupt)
		select {
		case <-exited:
		case <-time.After(20 * time.Second):
			_ = srv.Process.Kill()
		}
	}()

	s := &soak{
		cfg: cfg, base: fmt.Sprintf("http://127.0.0.1:%d", port),
		client: &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 256}, Timeout: 2 * time.Minute},
		legit:  newTally(), failed: newTally(), hostile: newTally(),
	}
	if err := s.waitReady(exited); err != nil {
		return err
	}
	if s.token, err = firstLine(filepath.Join(data, "upload-tokens")); err != nil {
		return err
	}
	if s.adminToken, err = firstLine(filepath.Join(data, "admin-token")); err != nil {
		return err
	}
	fmt.Printf("cached %s on %s; seeding %d pinned closures\n", strings.Join(args, " "), s.base, cfg.seedChains)
	rng := rand.New(rand.NewPCG(1, 2))
	for c := 0; c < cfg.seedChains; c++ {
		chain := makeClosure(rng, fmt.Sprintf("soak-seed-%d", c), 8, 64<<10)
		for _, p := range chain {
			if err := s.upload(context.Background(), p, "zstd", nil); err != nil {
				return fmt.Errorf("seeding: %w", err)
			}
		}
		s.seed = append(s.seed, chain...)
	}
	if err := s.admin(http.MethodPut, "/_cached/pins/name:soak-seed-", nil); err != nil {
		return fmt.Errorf("pinning the seed: %w", err)
	}
	hostileXZ, err := tinyBlockXZ()
	if err != nil {
		return err
	}

	peak := &atomic.Int64{}
	ctx, cancel := context.WithTimeout(context.Background(), cfg.duration)
	defer cancel()
	var wg sync.WaitGroup
	spawn := func(n int, f func(ctx context.Context, id int)) {
		for i := 0; i < n; i++ {
			wg.Add(1)
			go func(id int) { defer wg.Done(); f(ctx, id) }(i)
		}
	}
	spawn(1, func(ctx context.Context, _ int) { watchRSS(ctx, srv.Process.Pid, peak) })
	spawn(cfg.substituters, s.substituter)
	spawn(cfg.uploaders, s.uploader)
	gcRuns, gcDeleted := 0, 0
	spawn(1, func(ctx context.Context, _ int) { gcRuns, gcDeleted = s.gcLoop(ctx) })
	spawn(4, s.slowloris)
	spawn(2, func(ctx context.Context, id int) { s.hostileUpload(ctx, "xz-tiny-blocks", "xz", hostileXZ) })
	spawn(1, s.bomb)
	spawn(2, s.rangeFlood)
	spawn(4, s.neverRead)
	fmt.Printf("load running for %s\n", cfg.duration)
	progress := time.NewTicker(30 * time.Second)
	defer progress.Stop()
wait:
	for {
		select {
		case <-ctx.Done():
			break wait
		case err := <-exited:
			return fmt.Errorf("cached exited during the soak: %v (log: %s)", err, logFile.Name())
		case <-progress.C:
			l, f := s.legit.snapshot(), s.failed.snapshot()
			fmt.Printf("  legit %v failed %v rss %.1f MiB\n", l, f, float64(peak.Load())/(1<<20))
		}
	}
	wg.Wait()

	res := results{
		Commit: gitCommit(), Duration: cfg.duration.String(), Substituters: cfg.substituters,
		Uploaders: cfg.uploaders, ServeArgs: strings.Join(args[1:], " "),
		Legit: s.legit.snapshot(), LegitFailed: s.failed.snapshot(), Retried503: s.retried.Load(),
		PeakRSSMiB: float64(peak.Load()) / (1 << 20), GCRuns: gcRuns, GCPathsDeleted: gcDeleted,
		Hostile: s.hostile.snapshot(), SlowlorisMaxSec: time.Duration(s.slowMax.Load()).Seconds(),
	}
	res.FailureSamples = s.failed.samples
	res.NarinfoP50Ms, res.NarinfoP99Ms = s.percentiles()
	if hwm, err := vmHWM(srv.Process.Pid); err == nil && float64(hwm)/(1<<20) > res.PeakRSSMiB {
		res.PeakRSSMiB = float64(hwm) / (1 << 20)
	}
	res.NarinfosChecked, res.ClosuresBroken, res.BrokenSamples = s.checkClosures(filepath.Join(data, "store"))
	report(res)
	if cfg.out != "" {
		b, _ := json.MarshalIndent(res, "", "  ")
		if err := os.WriteFile(cfg.out, append(b, '\n'), 0o644); err != nil {
			return err
		}
	}
	return nil
}

func report(r results) {
	total, failed := 0, 0
	for _, v := range r.Legit {
		total += v
	}
	for _, v := range r.LegitFailed {
		failed += v
	}
	fmt.Printf(`
soak of %s (%d substituters, %d uploaders, gc every run: %d runs, %d paths deleted)
legitimate requests:  %d, failed %d %v (503s retried: %d)
narinfo latency:      p50 %.2f ms, p99 %.2f ms
peak RSS of cached:   %.1f MiB
closures checked:     %d narinfos, broken %d
hostile outcomes:     %v (slowloris held at most %.1f s)
`, r.Duration, r.Substituters, r.Uploaders, r.GCRuns, r.GCPathsDeleted, total, failed, r.LegitFailed,
		r.Retried503, r.NarinfoP50Ms, r.NarinfoP99Ms, r.PeakRSSMiB, r.NarinfosChecked, r.ClosuresBroken,
		r.Hostile, r.SlowlorisMaxSec)
	for _, s := range r.FailureSamples {
		fmt.Println("  failure:", s)
	}
	for _, s := range r.BrokenSamples {
		fmt.Println("  broken:", s)
	}
}

func (s *soak) waitReady(exited chan error) error {
	deadline := time.Now().Add(60 * time.Second)
	for time.Now().Before(deadline) {
		select {
		case err := <-exited:
			return fmt.Errorf("cached exited at start-up: %v", err)
		default:
		}
		resp, err := http.Get(s.base + "/readyz")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return nil
			}
		}
		time.Sleep(100 * time.Millisecond)
	}
	return errors.New("cached was not ready within 60 s")
}

// makeClosure makes a chain of n paths, each referring to the one before it (dependencies
// first), with NARs of one regular file of up to maxSize bytes.
func makeClosure(rng *rand.Rand, name string, n, maxSize int) []path {
	var chain []path
	for i := 0; i < n; i++ {
		p := path{hash: randomHash(rng), name: fmt.Sprintf("%s-%d", name, i)}
		if i > 0 {
			p.refs = []string{chain[i-1].base()}
		}
		contents := make([]byte, 1+rng.IntN(maxSize))
		for j := range contents {
			// compressible but not trivially so
			contents[j] = byte('a' + rng.IntN(8))
		}
		var buf bytes.Buffer
		w := nar.NewWriter(&buf)
		if err := w.File(false, int64(len(contents)), bytes.NewReader(contents)); err != nil {
			panic(err) // a NAR of one file cannot be invalid
		}
		if err := w.Close(); err != nil {
			panic(err)
		}
		p.nar = buf.Bytes()
		chain = append(chain, p)
	}
	return chain
}

func randomHash(rng *rand.Rand) string {
	b := make([]byte, 20)
	for i := range b {
		b[i] = byte(rng.IntN(256))
	}
	return nixbase32.EncodeToString(b)
}

func compress(data []byte, how string) ([]byte, string, error) {
	var buf bytes.Buffer
	switch how {
	case "none":
		return data, ".nar", nil
	case "xz":
		w, err := xz.NewWriter(&buf)
		if err != nil {
			return nil, "", err
		}
		if _, err := w.Write(data); err != nil {
			return nil, "", err
		}
		if err := w.Close(); err != nil {
			return nil, "", err
		}
		return buf.Bytes(), ".nar.xz", nil
	case "zstd":
		w, err := zstd.NewWriter(&buf)
		if err != nil {
			return nil, "", err
		}
		if _, err := w.Write(data); err != nil {
			return nil, "", err
		}
		if err := w.Close(); err != nil {
			return nil, "", err
		}
		return buf.Bytes(), ".nar.zst", nil
	}
	return nil, "", fmt.Errorf("compression %q", how)
}

// upload PUTs p's NAR then its narinfo, retrying 503s as nix does.
func (s *soak) upload(ctx context.Context, p path, how string, t *tally) error {
	file, ext, err := compress(p.nar, how)
	if err != nil {
		return err
	}
	fileHash := sha256.Sum256(file)
	narHash := sha256.Sum256(p.nar)
	url := "nar/" + nixbase32.EncodeToString(fileHash[:]) + ext
	if err := s.put(ctx, "/"+url, file, "application/x-nix-nar", t); err != nil {
		return fmt.Errorf("NAR of %s (%s): %w", p.base(), how, err)
	}
	compression := how
	if how == "none" {
		compression = "none"
	}
	ni := narinfo.NarInfo{
		StorePath: "/nix/store/" + p.base(), URL: url, Compression: compression,
		FileHash: narinfo.Hash{Algo: "sha256", Digest: fileHash[:]}, FileSize: uint64(len(file)),
		NarHash: narinfo.Hash{Algo: "sha256", Digest: narHash[:]}, NarSize: uint64(len(p.nar)),
		References: p.refs,
	}
	if err := s.put(ctx, "/"+p.hash+".narinfo", ni.Bytes(), "text/x-nix-narinfo", t); err != nil {
		return fmt.Errorf("narinfo of %s: %w", p.base(), err)
	}
	return nil
}

// put sends one PUT with the upload token, retrying 503 and 429 like nix (a few times, with
// backoff). The final answer must be 200.
func (s *soak) put(ctx context.Context, urlPath string, body []byte, ctype string, t *tally) error {
	for attempt := 0; ; attempt++ {
		req, err := http.NewRequestWithContext(ctx, http.MethodPut, s.base+urlPath, bytes.NewReader(body))
		if err != nil {
			return err
		}
		req.Header.Set("Content-Type", ctype)
		req.SetBasicAuth("soak", s.token)
		resp, err := s.client.Do(req)
		if t != nil {
			t.add("put")
		}
		if err != nil {
			return err
		}
		msg, _ := io.ReadAll(io.LimitReader(resp.Body, 512))
		resp.Body.Close()
		switch {
		case resp.StatusCode == http.StatusOK:
			return nil
		case (resp.StatusCode == http.StatusServiceUnavailable || resp.StatusCode == http.StatusTooManyRequests) && attempt < 8:
			s.retried.Add(1)
			wait := time.Duration(250<<attempt) * time.Millisecond
			if ra, err := strconv.Atoi(resp.Header.Get("Retry-After")); err == nil && ra > 0 {
				wait = time.Duration(ra) * time.Second
			}
			select {
			case <-ctx.Done():
				return ctx.Err()
			case <-time.After(wait):
			}
		default:
			return fmt.Errorf("PUT %s: %s: %s", urlPath, resp.Status, strings.TrimSpace(string(msg)))
		}
	}
}

func (s *soak) admin(method, urlPath string, body io.Reader) error {
	req, err := http.NewRequest(method, s.base+urlPath, body)
	if err != nil {
		return err
	}
	req.Header.Set("Authorization", "Bearer "+s.adminToken)
	resp, err := s.client.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	msg, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("%s %s: %s: %s", method, urlPath, resp.Status, strings.TrimSpace(string(msg)))
	}
	return nil
}

// substituter fetches seed narinfos and their NARs, checking the bytes, and asks for missing
// paths now and then, the way nix substitutes.
func (s *soak) substituter(ctx context.Context, id int) {
	rng := rand.New(rand.NewPCG(uint64(id), 7))
	buf := make([]byte, 256<<10)
	for ctx.Err() == nil {
		if rng.IntN(4) == 0 {
			miss := randomHash(rng)
			status, _, err := s.get(ctx, "/"+miss+".narinfo", nil)
			if ctx.Err() != nil {
				return
			}
			s.legit.add("narinfo-miss")
			if err != nil || status != http.StatusNotFound {
				s.failed.fail("narinfo-miss", "%s: status %d err %v", miss, status, err)
			}
			continue
		}
		p := s.seed[rng.IntN(len(s.seed))]
		start := time.Now()
		status, body, err := s.get(ctx, "/"+p.hash+".narinfo", buf)
		if ctx.Err() != nil {
			return
		}
		s.recordLatency(time.Since(start))
		s.legit.add("narinfo-hit")
		if err != nil || status != http.StatusOK {
			s.failed.fail("narinfo-hit", "%s: status %d err %v", p.base(), status, err)
			continue
		}
		ni, err := narinfo.Parse(body)
		if err != nil {
			s.failed.fail("narinfo-hit", "%s: %v", p.base(), err)
			continue
		}
		if err := s.fetchNar(ctx, ni); err != nil {
			if ctx.Err() != nil {
				return
			}
			s.failed.fail("nar", "%s: %v", p.base(), err)
		}
		s.legit.add("nar")
	}
}

// fetchNar downloads the NAR a narinfo names and checks its size and hash.
func (s *soak) fetchNar(ctx context.Context, ni *narinfo.NarInfo) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, s.base+"/"+ni.URL, nil)
	if err != nil {
		return err
	}
	resp, err := s.client.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("GET %s: %s", ni.URL, resp.Status)
	}
	h := sha256.New()
	n, err := io.Copy(h, resp.Body)
	if err != nil {
		return fmt.Errorf("GET %s: %w after %d bytes", ni.URL, err, n)
	}
	if uint64(n) != ni.FileSize || !bytes.Equal(h.Sum(nil), ni.FileHash.Digest) {
		return fmt.Errorf("GET %s: %d bytes not matching FileSize %d / FileHash", ni.URL, n, ni.FileSize)
	}
	return nil
}

func (s *soak) get(ctx context.Context, urlPath string, buf []byte) (int, []byte, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, s.base+urlPath, nil)
	if err != nil {
		return 0, nil, err
	}
	resp, err := s.client.Do(req)
	if err != nil {
		return 0, nil, err
	}
	defer resp.Body.Close()
	if buf == nil {
		_, err = io.Copy(io.Discard, resp.Body)
		return resp.StatusCode, nil, err
	}
	n, err := io.ReadFull(resp.Body, buf)
	if errors.Is(err, io.ErrUnexpectedEOF) || errors.Is(err, io.EOF) {
		err = nil
	}
	return resp.StatusCode, buf[:n], err
}

func (s *soak) recordLatency(d time.Duration) {
	s.latencyMu.Lock()
	s.latencies = append(s.latencies, d)
	s.latencyMu.Unlock()
}

func (s *soak) percentiles() (p50, p99 float64) {
	s.latencyMu.Lock()
	defer s.latencyMu.Unlock()
	if len(s.latencies) == 0 {
		return 0, 0
	}
	slices.Sort(s.latencies)
	at := func(q float64) float64 {
		return float64(s.latencies[int(q*float64(len(s.latencies)-1))].Microseconds()) / 1000
	}
	return at(0.50), at(0.99)
}

// uploader pushes fresh closures of 3 paths in a random compression and checks the last one is
// then served.
func (s *soak) uploader(ctx context.Context, id int) {
	rng := rand.New(rand.NewPCG(uint64(id), 11))
	hows := []string{"none", "xz", "zstd"}
	for n := 0; ctx.Err() == nil; n++ {
		chain := makeClosure(rng, fmt.Sprintf("soak-up-%d-%d", id, n), 3, 256<<10)
		how := hows[rng.IntN(len(hows))]
		ok := true
		for _, p := range chain {
			err := s.upload(ctx, p, how, s.legit)
			if ctx.Err() != nil {
				return
			}
			if err != nil {
				s.failed.fail("put", "%v", err)
				ok = false
				break
			}
		}
		if !ok {
			continue
		}
		last := chain[len(chain)-1]
		status, _, err := s.get(ctx, "/"+last.hash+".narinfo", nil)
		if ctx.Err() != nil {
			return
		}
		s.legit.add("narinfo-after-upload")
		if err != nil || status != http.StatusOK {
			s.failed.fail("narinfo-after-upload", "%s: status %d err %v", last.base(), status, err)
		}
	}
}

// gcLoop runs a collection of what the uploaders pushed: paths not asked for in the last
// interval, but never paths pushed less than two intervals ago (so that gc cannot take a
// dependency from under an upload in progress, as the README's advice goes).
func (s *soak) gcLoop(ctx context.Context) (runs, deleted int) {
	t := time.NewTicker(s.cfg.gcEvery)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		q := fmt.Sprintf("older-than=%ds&keep-since=%ds&grace=%ds", int(s.cfg.gcEvery.Seconds()),
			int(2*s.cfg.gcEvery.Seconds()), int(s.cfg.gcEvery.Seconds()))
		req, _ := http.NewRequestWithContext(ctx, http.MethodPost, s.base+"/_cached/gc?"+q, nil)
		req.Header.Set("Authorization", "Bearer "+s.adminToken)
		resp, err := s.client.Do(req)
		if err != nil {
			if ctx.Err() == nil {
				s.failed.fail("gc", "%v", err)
			}
			continue
		}
		runs++
		s.legit.add("gc")
		sc := bufio.NewScanner(resp.Body)
		sawReport := false
		for sc.Scan() {
			if js, ok := strings.CutPrefix(sc.Text(), "report: "); ok {
				var rep struct {
					PathsDeleted, Failures int
					Error                  string
				}
				if json.Unmarshal([]byte(js), &rep) == nil {
					sawReport = true
					deleted += rep.PathsDeleted
					if rep.Failures > 0 || rep.Error != "" {
						s.failed.fail("gc", "failures %d error %q", rep.Failures, rep.Error)
					}
				}
			}
		}
		resp.Body.Close()
		if !sawReport && ctx.Err() == nil {
			s.failed.fail("gc", "no report (status %s)", resp.Status)
		}
	}
}

// slowloris sends a request head one byte every few seconds and records how long the server
// keeps the connection.
func (s *soak) slowloris(ctx context.Context, id int) {
	head := "GET /nix-cache-info HTTP/1.1\r\nHost: x\r\nX-Slow: " + strings.Repeat("a", 64) + "\r\n\r\n"
	for ctx.Err() == nil {
		c, err := net.Dial("tcp", strings.TrimPrefix(s.base, "http://"))
		if err != nil {
			s.hostile.add("slowloris-dial-error")
			time.Sleep(time.Second)
			continue
		}
		start := time.Now()
		closed := false
		for i := 0; i < len(head) && ctx.Err() == nil; i++ {
			_ = c.SetWriteDeadline(time.Now().Add(5 * time.Second))
			if _, err := c.Write([]byte{head[i]}); err != nil {
				closed = true
				break
			}
			select {
			case <-ctx.Done():
			case <-time.After(3 * time.Second):
			}
			// a closed connection shows as a read that returns at once
			_ = c.SetReadDeadline(time.Now().Add(time.Millisecond))
			var b [1]byte
			if _, err := c.Read(b[:]); err != nil && !isTimeout(err) {
				closed = true
				break
			}
		}
		held := time.Since(start)
		c.Close()
		if closed {
			s.hostile.add("slowloris-closed-by-server")
			for {
				cur := s.slowMax.Load()
				if int64(held) <= cur || s.slowMax.CompareAndSwap(cur, int64(held)) {
					break
				}
			}
		} else {
			s.hostile.add("slowloris-not-closed")
		}
	}
}

func isTimeout(err error) bool {
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}

// hostileUpload PUTs a crafted NAR again and again with a valid token (a compromised builder).
func (s *soak) hostileUpload(ctx context.Context, kind, ext string, body []byte) {
	sum := sha256.Sum256(body)
	urlPath := "/nar/" + nixbase32.EncodeToString(sum[:]) + ".nar." + ext
	for ctx.Err() == nil {
		req, _ := http.NewRequestWithContext(ctx, http.MethodPut, s.base+urlPath, bytes.NewReader(body))
		req.SetBasicAuth("soak", s.token)
		resp, err := s.client.Do(req)
		if err != nil {
			if ctx.Err() == nil {
				s.hostile.add(kind + "-error")
			}
			continue
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		s.hostile.add(fmt.Sprintf("%s-%d", kind, resp.StatusCode))
		if resp.StatusCode == http.StatusOK {
			// accepted: it is a valid NAR; a second PUT of the same file is cheap, so vary it
			time.Sleep(time.Second)
		}
	}
}

// tinyBlockXZ is a small NAR compressed as thousands of 16-byte xz blocks, each declaring a
// 128 MiB dictionary.
func tinyBlockXZ() ([]byte, error) {
	var buf bytes.Buffer
	w := nar.NewWriter(&buf)
	contents := bytes.Repeat([]byte("soak "), 8<<10)
	if err := w.File(false, int64(len(contents)), bytes.NewReader(contents)); err != nil {
		return nil, err
	}
	if err := w.Close(); err != nil {
		return nil, err
	}
	cmd := exec.Command("xz", "-T1", "--block-size=16", "--lzma2=preset=0,dict=128MiB", "-c")
	cmd.Stdin = &buf
	out, err := cmd.Output()
	if err != nil {
		return nil, fmt.Errorf("making the tiny-block xz stream (needs xz-utils): %w", err)
	}
	return out, nil
}

// bomb uploads a small zstd stream that decompresses to a huge valid NAR of zeros.
func (s *soak) bomb(ctx context.Context, _ int) {
	const size = 8 << 30
	var buf bytes.Buffer
	zw, err := zstd.NewWriter(&buf)
	if err != nil {
		return
	}
	hdr := &bytes.Buffer{}
	// NAR of one regular file of `size` zeros, written by hand around a streamed body
	for _, str := range []string{"nix-archive-1", "(", "type", "regular", "contents"} {
		writeNarString(hdr, str)
	}
	var n [8]byte
	putUint64(n[:], size)
	hdr.Write(n[:])
	zw.Write(hdr.Bytes())
	zeros := make([]byte, 1<<20)
	for i := 0; i < size/len(zeros); i++ {
		zw.Write(zeros)
	}
	tail := &bytes.Buffer{}
	writeNarString(tail, ")")
	zw.Write(tail.Bytes())
	zw.Close()
	s.hostileUpload(ctx, "zstd-bomb", "zst", buf.Bytes())
}

func writeNarString(b *bytes.Buffer, str string) {
	var n [8]byte
	putUint64(n[:], uint64(len(str)))
	b.Write(n[:])
	b.WriteString(str)
	if pad := (8 - len(str)%8) % 8; pad > 0 {
		b.Write(make([]byte, pad))
	}
}

func putUint64(b []byte, v uint64) {
	for i := 0; i < 8; i++ {
		b[i] = byte(v >> (8 * i))
	}
}

// rangeFlood asks for a seed NAR with thousands of one-byte ranges.
func (s *soak) rangeFlood(ctx context.Context, id int) {
	var ranges []string
	for i := 0; i < 2000; i++ {
		ranges = append(ranges, fmt.Sprintf("%d-%d", i, i))
	}
	header := "bytes=" + strings.Join(ranges, ",")
	for ctx.Err() == nil {
		p := s.seed[(id*7)%len(s.seed)]
		_, body, err := s.get(ctx, "/"+p.hash+".narinfo", make([]byte, 64<<10))
		if err != nil {
			continue
		}
		ni, err := narinfo.Parse(body)
		if err != nil {
			continue
		}
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, s.base+"/"+ni.URL, nil)
		req.Header.Set("Range", header)
		resp, err := s.client.Do(req)
		if err != nil {
			continue
		}
		n, _ := io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		kind := fmt.Sprintf("range-flood-%d", resp.StatusCode)
		if n > int64(ni.FileSize) {
			kind += "-amplified"
		}
		s.hostile.add(kind)
	}
}

// neverRead asks for a seed NAR and a pipeline of narinfos and never reads the answers,
// recording how long the server keeps the connection.
func (s *soak) neverRead(ctx context.Context, id int) {
	p := s.seed[(id*13)%len(s.seed)]
	var pipeline strings.Builder
	for i := 0; i < 2000; i++ {
		fmt.Fprintf(&pipeline, "GET /%s.narinfo HTTP/1.1\r\nHost: x\r\n\r\n", p.hash)
	}
	for ctx.Err() == nil {
		c, err := net.Dial("tcp", strings.TrimPrefix(s.base, "http://"))
		if err != nil {
			time.Sleep(time.Second)
			continue
		}
		if tc, ok := c.(*net.TCPConn); ok {
			_ = tc.SetReadBuffer(4096)
		}
		start := time.Now()
		_ = c.SetWriteDeadline(time.Now().Add(10 * time.Second))
		_, err = io.WriteString(c, pipeline.String())
		// wait until the server gives up on us (a write fails) or the soak ends
		for err == nil && ctx.Err() == nil {
			_ = c.SetWriteDeadline(time.Now().Add(5 * time.Second))
			_, err = io.WriteString(c, fmt.Sprintf("GET /%s.narinfo HTTP/1.1\r\nHost: x\r\n\r\n", p.hash))
			if err == nil {
				select {
				case <-ctx.Done():
				case <-time.After(5 * time.Second):
				}
			}
		}
		c.Close()
		if ctx.Err() == nil {
			s.hostile.add(fmt.Sprintf("never-read-dropped-after-%ds", int(time.Since(start).Seconds())/10*10))
		}
	}
}

// checkClosures reads every narinfo in the disk store and checks through HTTP that each one's
// references are served and its NAR downloads whole.
func (s *soak) checkClosures(store string) (checked, broken int, samples []string) {
	files, _ := filepath.Glob(filepath.Join(store, "*.narinfo"))
	for _, f := range files {
		raw, err := os.ReadFile(f)
		if err != nil {
			continue
		}
		ni, err := narinfo.Parse(raw)
		if err != nil {
			broken++
			samples = append(samples, fmt.Sprintf("%s: %v", filepath.Base(f), err))
			continue
		}
		checked++
		problem := ""
		for _, ref := range ni.References {
			h, _, _ := strings.Cut(ref, "-")
			status, _, err := s.get(context.Background(), "/"+h+".narinfo", nil)
			if err != nil || status != http.StatusOK {
				problem = fmt.Sprintf("reference %s: status %d err %v", ref, status, err)
				break
			}
		}
		if problem == "" {
			if err := s.fetchNar(context.Background(), ni); err != nil {
				problem = err.Error()
			}
		}
		if problem != "" {
			broken++
			if len(samples) < 20 {
				samples = append(samples, ni.StorePath+": "+problem)
			}
		}
	}
	return checked, broken, samples
}

// watchRSS samples the server's resident memory every 100 ms.
func watchRSS(ctx context.Context, pid int, peak *atomic.Int64) {
	t := time.NewTicker(100 * time.Millisecond)
	defer t.Stop()
	for {
		if rss, err := statusField(pid, "VmRSS:"); err == nil && rss > peak.Load() {
			peak.Store(rss)
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

func vmHWM(pid int) (int64, error) { return statusField(pid, "VmHWM:") }

// statusField reads a "kB" field of /proc/PID/status, in bytes.
func statusField(pid int, field string) (int64, error) {
	raw, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0, err
	}
	for _, line := range strings.Split(string(raw), "\n") {
		if rest, ok := strings.CutPrefix(line, field); ok {
			kb, err := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(rest), " kB"), 10, 64)
			return kb << 10, err
		}
	}
	return 0, fmt.Errorf("%s not in /proc/%d/status", field, pid)
}

func freePort() (int, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port, nil
}

func firstLine(file string) (string, error) {
	raw, err := os.ReadFile(file)
	if err != nil {
		return "", err
	}
	line, _, _ := strings.Cut(strings.TrimSpace(string(raw)), "\n")
	return strings.TrimSpace(line), nil
}

func gitCommit() string {
	out, err := exec.Command("git", "rev-parse", "--short", "HEAD").Output()
	if err != nil {
		return "unknown"
	}
	return strings.TrimSpace(string(out))
}
