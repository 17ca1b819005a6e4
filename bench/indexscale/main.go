// Command indexscale measures internal/index at the size of a large cache: it loads N synthetic
// but valid narinfos with every index record an upload writes, then reports load time, size on
// disk, start-up time (opening the index and the cache's start-up checks), lookup latency for
// hits and misses under many concurrent readers, RSS while serving, the stats recount, and gc
// planning over the whole index (a dry run of internal/gc).
//
//	go run ./bench/indexscale -n 1000000
//	go run ./bench/indexscale -n 10000000 -sign=false -dir /work/tmp/ix10m -keep
//
// Narinfo i is a function of i alone, so nothing the size of the corpus is held in memory: the
// harness's RSS while serving is the index's. Each path has a narinfo (n/), a NAR record and its
// NarHash (f/, h/), a commit time (c/), the reverse keys of its references and of its NAR (R/,
// r/), and every second one a last-access time (t/). References go to earlier paths (a
// dependency exists before its dependents), up to 8 each.
//
// -load batch (the default) writes through index.Batch (one Badger WriteBatch); -load put writes
// each path with the calls an upload makes (PutNar, PutNarHash, CommitNarInfo, SetCreated) from
// -writers goroutines. With -sign=false the signatures are 64 random bytes under the key's name
// (the same size; the index never checks them) instead of ed25519 over the fingerprint, which
// costs about 25 µs of CPU per path.
package main

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"math"
	mrand "math/rand/v2"
	"os"
	"path/filepath"
	"runtime"
	"runtime/debug"
	"runtime/pprof"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/nix-community/go-nix/pkg/nixbase32"

	"github.com/cached-dev/cached/internal/backend/disk"
	"github.com/cached-dev/cached/internal/cache"
	"github.com/cached-dev/cached/internal/gc"
	"github.com/cached-dev/cached/internal/index"
	"github.com/cached-dev/cached/internal/narinfo"
	"github.com/cached-dev/cached/internal/signing"
)

type report struct {
	N               int     `json:"narinfos"`
	Signed          bool    `json:"signed"`
	AvgNarInfoBytes float64 `json:"avg_narinfo_bytes"`
	Load            string  `json:"load"` // batch or put
	Writers         int     `json:"writers"`
	LoadSeconds     float64 `json:"load_seconds"`
	LoadPerSec      float64 `json:"load_per_sec"`
	CloseSeconds    float64 `json:"close_seconds"`
	DiskBytes       int64   `json:"disk_bytes"`           // sum of file sizes
	DiskAllocBytes  int64   `json:"disk_allocated_bytes"` // blocks actually allocated
	DiskFiles       int     `json:"disk_files"`
	// Start-up: index.Open alone, then cache.New and cache.Recover on a clean index (what
	// `cached serve` does before it listens).
	OpenSeconds    float64 `json:"open_seconds"`
	StartupSeconds float64 `json:"startup_seconds"`
	Hit            lookups `json:"hit"`     // uniformly random over all N
	HotSet         int     `json:"hot_set"` // paths in the hot set
	HotHit         lookups `json:"hot_hit"` // uniformly random over the hot set
	Miss           lookups `json:"miss"`    // random hashes, never repeated
	// While serving: after the lookups, peak since the index was opened.
	RSSMiB       float64 `json:"rss_serving_mib"`
	RSSAnonMiB   float64 `json:"rss_anon_serving_mib"`
	RSSFileMiB   float64 `json:"rss_file_serving_mib"` // the index's mmapped tables
	PeakRSSMiB   float64 `json:"peak_rss_serving_mib"`
	HeapInuseMiB float64 `json:"go_heap_inuse_serving_mib"`
	CountSeconds float64 `json:"count_seconds"` // index.Count (the stats recount, every 30 s)
	GC           gcPlan  `json:"gc_plan"`
}

type gcPlan struct {
	Seconds    float64 `json:"seconds"`
	Paths      int     `json:"paths"`
	WouldGo    int     `json:"would_delete"`
	PeakRSSMiB float64 `json:"peak_rss_mib"`
	Policy     string  `json:"policy"`
}

type lookups struct {
	Readers   int     `json:"readers"`
	Count     int     `json:"count"`
	Seconds   float64 `json:"seconds"`
	PerSec    float64 `json:"per_sec"`
	P50us     float64 `json:"p50_us"`
	P99us     float64 `json:"p99_us"`
	P999us    float64 `json:"p999_us"`
	MaxUs     float64 `json:"max_us"`
	Unexpects int     `json:"unexpected"` // hits that missed or misses that hit: must be 0
}

func main() {
	var o opts
	flag.IntVar(&o.n, "n", 1000000, "narinfos to load")
	flag.StringVar(&o.dir, "dir", "", "directory for the index and an empty disk store (default: a new temporary directory)")
	flag.BoolVar(&o.keep, "keep", false, "keep -dir at the end; a kept index holding -n paths is measured again without loading")
	flag.StringVar(&o.load, "load", "batch", "how to load: batch (index.Batch) or put (one upload's calls per path)")
	flag.IntVar(&o.writers, "writers", 64, "goroutines writing during the load")
	flag.IntVar(&o.readers, "readers", 64, "goroutines doing lookups")
	flag.IntVar(&o.count, "lookups", 1000000, "lookups per kind (hit, hot hit, miss)")
	flag.IntVar(&o.hot, "hot", 10000, "size of the hot set for the repeated-hits test")
	flag.BoolVar(&o.sign, "sign", true, "sign every narinfo with ed25519 (false: random signature bytes of the same size)")
	flag.BoolVar(&o.gc, "gc", true, "measure gc planning (a dry run over the whole index)")
	flag.StringVar(&o.jsonOut, "json", "", "also write the numbers as JSON to this file")
	flag.StringVar(&o.pprof, "pprof", "", "write load.cpu.pprof (the load), lookups.{cpu,mutex,block}.pprof and serving.heap.pprof (after the lookups) into this directory")
	flag.Parse()
	if err := run(o); err != nil {
		fmt.Fprintln(os.Stderr, "indexscale:", err)
		os.Exit(1)
	}
}

type opts struct {
	n, writers, readers, count, hot int
	dir, load, jsonOut, pprof       string
	keep, sign, gc                  bool
}

// corpus makes narinfo i from i alone.
type corpus struct {
	n    int
	key  signing.SecretKey
	sign bool
	now  time.Time
}

const span = 180 * 24 * time.Hour // commit times spread over the last 180 days

func (c *corpus) raw(i int) [20]byte {
	r := mrand.New(mrand.NewPCG(uint64(i), 0x1dec5ca1e))
	var b [20]byte
	fillRandom(r, b[:])
	return b
}

func (c *corpus) hash(i int) string { b := c.raw(i); return nixbase32.EncodeToString(b[:]) }

func (c *corpus) name(i int) string { return c.hash(i) + "-pkg-" + strconv.Itoa(i) + "-1.0" }

func (c *corpus) created(i int) time.Time {
	return c.now.Add(-span + time.Duration(float64(span)*float64(i)/float64(c.n)))
}

// path returns what an upload of path i records.
func (c *corpus) path(i int) (hash string, text []byte, nar string, refs []string, rec index.NarRecord, access time.Time) {
	r := mrand.New(mrand.NewPCG(uint64(i), 42))
	var narHash, fileHash [32]byte
	fillRandom(r, narHash[:])
	fillRandom(r, fileHash[:])
	hash = c.hash(i)
	var refNames []string
	if i > 0 {
		for range r.IntN(9) {
			j := r.IntN(i)
			refNames = append(refNames, c.name(j))
			refs = append(refs, c.hash(j))
		}
	}
	narSize := uint64(1024 + r.IntN(64<<20))
	ni := narinfo.NarInfo{
		StorePath:   narinfo.StoreDir + "/" + c.name(i),
		URL:         "nar/" + nixbase32.EncodeToString(fileHash[:]) + ".nar.zst",
		Compression: "zstd",
		FileHash:    narinfo.Hash{Algo: "sha256", Digest: fileHash[:]},
		FileSize:    narSize/3 + 1,
		NarHash:     narinfo.Hash{Algo: "sha256", Digest: narHash[:]},
		NarSize:     narSize,
		References:  refNames,
		Deriver:     c.hash((i+1)%c.n) + "-pkg-" + strconv.Itoa(i) + "-1.0.drv",
		System:      "x86_64-linux",
	}
	if c.sign {
		ni.Sigs = []string{c.key.Sign(ni.Fingerprint())}
	} else {
		var sig [64]byte
		fillRandom(r, sig[:])
		ni.Sigs = []string{c.key.Name + ":" + base64.StdEncoding.EncodeToString(sig[:])}
	}
	rec = index.NarRecord{NarHash: ni.NarHash.String(), NarSize: ni.NarSize, FileHash: ni.FileHash.String(), FileSize: ni.FileSize}
	if i%2 == 0 {
		created := c.created(i)
		access = created.Add(time.Duration(r.Int64N(int64(c.now.Sub(created)) + 1)))
	}
	return hash, ni.Bytes(), ni.URL, refs, rec, access
}

func run(o opts) error {
	if o.n < 1 || o.writers < 1 || o.readers < 1 || o.count < 1 || o.hot < 1 {
		return fmt.Errorf("-n, -writers, -readers, -lookups and -hot must be >= 1")
	}
	if o.load != "batch" && o.load != "put" {
		return fmt.Errorf("-load %q: want batch or put", o.load)
	}
	dir := o.dir
	if dir == "" {
		d, err := os.MkdirTemp("", "cached-indexscale-")
		if err != nil {
			return err
		}
		dir = d
	}
	if !o.keep {
		defer os.RemoveAll(dir)
	}
	log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
	key, err := signing.Generate("indexscale-1")
	if err != nil {
		return err
	}
	// The corpus's times are relative to a fixed now kept beside a kept index.
	now := time.Now().Truncate(time.Second)
	nowFile := filepath.Join(dir, "indexscale-now")
	reuse := false
	if b, err := os.ReadFile(nowFile); err == nil {
		var kept struct {
			N   int   `json:"n"`
			Now int64 `json:"now"`
		}
		if json.Unmarshal(b, &kept) == nil && kept.N == o.n {
			now, reuse = time.Unix(kept.Now, 0), true
		}
	}
	c := &corpus{n: o.n, key: key, sign: o.sign, now: now}
	rep := report{N: o.n, Signed: o.sign, Load: o.load, Writers: o.writers}
	ixDir := filepath.Join(dir, "index")

	// Check the corpus before loading it: what the server would store, parseable and signed.
	var total int64
	for _, i := range []int{0, o.n / 2, o.n - 1} {
		_, text, _, _, _, _ := c.path(i)
		ni, err := narinfo.Parse(text)
		if err != nil {
			return fmt.Errorf("generated narinfo does not parse: %w\n%s", err, text)
		}
		if o.sign && !key.Public().Verify(ni.Fingerprint(), ni.Sigs[0]) {
			return fmt.Errorf("generated narinfo's signature does not verify:\n%s", text)
		}
	}
	for i := 0; i < o.n; i += max(1, o.n/1000) {
		_, text, _, _, _, _ := c.path(i)
		total += int64(len(text))
	}
	rep.AvgNarInfoBytes = float64(total) / float64((o.n+max(1, o.n/1000)-1)/max(1, o.n/1000))

	if reuse {
		fmt.Printf("reusing the index of %d paths in %s\n", o.n, ixDir)
	} else {
		os.RemoveAll(ixDir)
		if err := load(c, o, ixDir, log, &rep); err != nil {
			return err
		}
		if err := os.WriteFile(nowFile, fmt.Appendf(nil, `{"n":%d,"now":%d}`, o.n, now.Unix()), 0o644); err != nil {
			return err
		}
	}
	rep.DiskBytes, rep.DiskAllocBytes, rep.DiskFiles = diskUsage(ixDir)

	// From here on the process should look like a server starting on the index.
	runtime.GC()
	debug.FreeOSMemory()
	resetPeakRSS()
	start := time.Now()
	ix, err := index.Open(ixDir, log)
	if err != nil {
		return err
	}
	rep.OpenSeconds = time.Since(start).Seconds()
	// A kept index left dirty by a killed run would be rebuilt from the empty store: emptied.
	if dirty, err := ix.Dirty(); err != nil || dirty {
		ix.Close()
		return fmt.Errorf("the index in %s was not closed cleanly (dirty %v, %v): remove it and load again", ixDir, dirty, err)
	}
	storeDir := filepath.Join(dir, "store")
	be, err := disk.Open(storeDir)
	if err != nil {
		ix.Close()
		return err
	}
	ctx := context.Background()
	ca, err := cache.New(ctx, be, ix, key, log, cache.Options{})
	if err == nil {
		err = ca.Recover(ctx)
	}
	if err != nil {
		ix.Close()
		return err
	}
	rep.StartupSeconds = time.Since(start).Seconds()
	defer ix.Close()
	defer ca.MarkClean()
	fmt.Printf("start-up: index.Open %.3f s, with cache.New and Recover %.3f s\n", rep.OpenSeconds, rep.StartupSeconds)

	// Spot check before measuring: a stored narinfo comes back byte for byte.
	probe, probeText, _, _, _, _ := c.path(o.n / 2)
	got, err := ix.NarInfo(probe)
	if err != nil || string(got) != string(probeText) {
		return fmt.Errorf("index returned %q, %v for a loaded narinfo", got, err)
	}

	hot := min(o.hot, o.n)
	fmt.Printf("lookups, %d readers: %d random hits, %d hits among %d hot paths, %d random misses...\n", o.readers, o.count, o.count, hot, o.count)
	var stopProfile func() error
	if o.pprof != "" {
		f, err := os.Create(filepath.Join(o.pprof, "lookups.cpu.pprof"))
		if err != nil {
			return err
		}
		defer f.Close()
		if err := pprof.StartCPUProfile(f); err != nil {
			return err
		}
		runtime.SetMutexProfileFraction(100)
		runtime.SetBlockProfileRate(100_000) // one blocking event per 100 µs blocked
		stopProfile = func() error {
			pprof.StopCPUProfile()
			for _, name := range []string{"mutex", "block"} {
				if err := writeProfile(filepath.Join(o.pprof, "lookups."+name+".pprof"), func(w io.Writer) error { return pprof.Lookup(name).WriteTo(w, 0) }); err != nil {
					return err
				}
			}
			runtime.SetMutexProfileFraction(0)
			runtime.SetBlockProfileRate(0)
			return nil
		}
	}
	rep.Hit = measure(o.readers, o.count, func(r *mrand.Rand) (string, bool) { return c.hash(r.IntN(o.n)), true }, ix)
	rep.HotHit = measure(o.readers, o.count, func(r *mrand.Rand) (string, bool) { return c.hash(r.IntN(hot)), true }, ix)
	rep.HotSet = hot
	rep.Miss = measure(o.readers, o.count, func(r *mrand.Rand) (string, bool) { return randomHash(r), false }, ix)
	if stopProfile != nil {
		if err := stopProfile(); err != nil {
			return err
		}
	}
	if rep.Hit.Unexpects+rep.HotHit.Unexpects+rep.Miss.Unexpects > 0 {
		return fmt.Errorf("lookups answered wrongly: %d+%d hits missed, %d misses hit", rep.Hit.Unexpects, rep.HotHit.Unexpects, rep.Miss.Unexpects)
	}
	var ms runtime.MemStats
	runtime.GC() // live heap, not the lookups' garbage
	if o.pprof != "" {
		if err := writeProfile(filepath.Join(o.pprof, "serving.heap.pprof"), pprof.WriteHeapProfile); err != nil {
			return err
		}
	}
	runtime.ReadMemStats(&ms)
	rep.RSSMiB, rep.RSSAnonMiB, rep.RSSFileMiB = statusMiB("VmRSS:"), statusMiB("RssAnon:"), statusMiB("RssFile:")
	rep.HeapInuseMiB = float64(ms.HeapInuse) / (1 << 20)
	rep.PeakRSSMiB = statusMiB("VmHWM:")

	start = time.Now()
	counts, err := ix.Count(ctx)
	if err != nil {
		return err
	}
	rep.CountSeconds = time.Since(start).Seconds()
	if counts.NarInfos != int64(o.n) {
		return fmt.Errorf("index counts %d narinfos, want %d", counts.NarInfos, o.n)
	}

	if o.gc {
		p := gc.Policy{ByAge: true, OlderThan: 90 * 24 * time.Hour, DryRun: true}
		rep.GC.Policy = "dry run, not accessed for 90 days"
		fmt.Printf("gc planning (%s)...\n", rep.GC.Policy)
		runtime.GC()
		debug.FreeOSMemory()
		resetPeakRSS()
		start = time.Now()
		gr, err := gc.Run(ctx, ca, ix, p, io.Discard)
		if err != nil {
			return err
		}
		rep.GC.Seconds = time.Since(start).Seconds()
		rep.GC.Paths, rep.GC.WouldGo = gr.Paths, gr.PathsDeleted
		rep.GC.PeakRSSMiB = statusMiB("VmHWM:")
		if gr.Paths != o.n {
			return fmt.Errorf("gc saw %d paths, want %d", gr.Paths, o.n)
		}
	}

	printReport(rep)
	if o.jsonOut != "" {
		data, _ := json.MarshalIndent(rep, "", "  ")
		if err := os.WriteFile(o.jsonOut, append(data, '\n'), 0o644); err != nil {
			return err
		}
	}
	return nil
}

func load(c *corpus, o opts, ixDir string, log *slog.Logger, rep *report) error {
	ix, err := index.Open(ixDir, log)
	if err != nil {
		return err
	}
	fmt.Printf("loading %d paths (%s, %d writers)...\n", o.n, o.load, o.writers)
	var done atomic.Int64
	stop := make(chan struct{})
	go func() {
		t := time.NewTicker(30 * time.Second)
		defer t.Stop()
		for {
			select {
			case <-stop:
				return
			case <-t.C:
				fmt.Printf("  %d paths\n", done.Load())
			}
		}
	}()
	if o.pprof != "" {
		f, err := os.Create(filepath.Join(o.pprof, "load.cpu.pprof"))
		if err != nil {
			return err
		}
		defer f.Close()
		if err := pprof.StartCPUProfile(f); err != nil {
			return err
		}
		defer pprof.StopCPUProfile()
	}
	start := time.Now()
	if o.load == "batch" {
		b := ix.NewBatch()
		err = parallel(o.n, o.writers, func(i int) error {
			hash, text, nar, refs, rec, access := c.path(i)
			if err := b.PutNar(nar, rec); err != nil {
				return err
			}
			if err := b.CommitNarInfo(hash, text, nar, refs, c.created(i)); err != nil {
				return err
			}
			if !access.IsZero() {
				if err := b.SetAccessTime(hash, access); err != nil {
					return err
				}
			}
			done.Add(1)
			return nil
		})
		if err == nil {
			err = b.Flush()
		} else {
			b.Cancel()
		}
	} else {
		err = parallel(o.n, o.writers, func(i int) error {
			hash, text, nar, refs, rec, access := c.path(i)
			if err := ix.PutNar(nar, rec); err != nil {
				return err
			}
			if err := ix.PutNarHash(rec.NarHash, nar); err != nil {
				return err
			}
			if err := ix.CommitNarInfo(hash, text, nar, refs); err != nil {
				return err
			}
			if err := ix.SetCreated(hash, c.created(i)); err != nil {
				return err
			}
			if !access.IsZero() {
				if err := ix.SetAccessTimes(map[string]time.Time{hash: access}); err != nil {
					return err
				}
			}
			done.Add(1)
			return nil
		})
	}
	close(stop)
	if err == nil {
		// As a server that shut down cleanly leaves it.
		err = ix.SetDirty(false)
	}
	if err != nil {
		ix.Close()
		return err
	}
	rep.LoadSeconds = time.Since(start).Seconds()
	rep.LoadPerSec = float64(o.n) / rep.LoadSeconds
	start = time.Now()
	if err := ix.Close(); err != nil {
		return err
	}
	rep.CloseSeconds = time.Since(start).Seconds()
	fmt.Printf("  loaded in %.1f s, closed in %.1f s\n", rep.LoadSeconds, rep.CloseSeconds)
	return nil
}

func writeProfile(name string, write func(io.Writer) error) error {
	f, err := os.Create(name)
	if err != nil {
		return err
	}
	if err := write(f); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}

func fillRandom(r *mrand.Rand, b []byte) {
	for i := range b {
		b[i] = byte(r.Uint32())
	}
}

func randomHash(r *mrand.Rand) string {
	var raw [20]byte
	fillRandom(r, raw[:])
	return nixbase32.EncodeToString(raw[:])
}

// parallel calls fn(i) for every i in [0, n) from workers goroutines; the first error wins.
func parallel(n, workers int, fn func(i int) error) error {
	var (
		next    atomic.Int64
		wg      sync.WaitGroup
		errOnce sync.Once
		first   error
		failed  atomic.Bool
	)
	for w := 0; w < workers; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for !failed.Load() {
				i := int(next.Add(1) - 1)
				if i >= n {
					return
				}
				if err := fn(i); err != nil {
					errOnce.Do(func() { first = err })
					failed.Store(true)
					return
				}
			}
		}()
	}
	wg.Wait()
	return first
}

// measure runs count lookups from readers goroutines and reports their latency distribution.
func measure(readers, count int, pick func(*mrand.Rand) (string, bool), ix *index.Index) lookups {
	lat := make([][]time.Duration, readers)
	var unexpected atomic.Int64
	var wg sync.WaitGroup
	start := time.Now()
	for w := 0; w < readers; w++ {
		per := count / readers
		if w < count%readers {
			per++
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			r := mrand.New(mrand.NewPCG(uint64(w), uint64(time.Now().UnixNano())))
			l := make([]time.Duration, 0, per)
			for range per {
				h, want := pick(r)
				t := time.Now()
				_, err := ix.NarInfo(h)
				l = append(l, time.Since(t))
				if (err == nil) != want {
					unexpected.Add(1)
				}
			}
			lat[w] = l
		}()
	}
	wg.Wait()
	secs := time.Since(start).Seconds()
	all := slices.Concat(lat...)
	slices.Sort(all)
	q := func(p float64) float64 {
		i := int(math.Ceil(p*float64(len(all)))) - 1
		return float64(all[max(i, 0)]) / 1e3
	}
	return lookups{Readers: readers, Count: len(all), Seconds: secs, PerSec: float64(len(all)) / secs,
		P50us: q(0.50), P99us: q(0.99), P999us: q(0.999), MaxUs: q(1), Unexpects: int(unexpected.Load())}
}

func diskUsage(dir string) (size, alloc int64, files int) {
	filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return nil
		}
		if info, err := d.Info(); err == nil {
			files++
			size += info.Size()
			if st, ok := info.Sys().(*syscall.Stat_t); ok {
				alloc += st.Blocks * 512
			}
		}
		return nil
	})
	return size, alloc, files
}

// statusMiB reads a kB field of /proc/self/status ("VmRSS:", "VmHWM:") in MiB.
func statusMiB(field string) float64 {
	data, err := os.ReadFile("/proc/self/status")
	if err != nil {
		return 0
	}
	for _, line := range strings.Split(string(data), "\n") {
		if rest, ok := strings.CutPrefix(line, field); ok {
			kb, _ := strconv.ParseFloat(strings.TrimSuffix(strings.TrimSpace(rest), " kB"), 64)
			return kb / 1024
		}
	}
	return 0
}

// resetPeakRSS starts VmHWM again from the current RSS (proc(5), clear_refs "5").
func resetPeakRSS() {
	if err := os.WriteFile("/proc/self/clear_refs", []byte("5"), 0); err != nil {
		fmt.Fprintln(os.Stderr, "indexscale: cannot reset the peak RSS, peaks include the load:", err)
	}
}

func printReport(r report) {
	sig := "ed25519-signed"
	if !r.Signed {
		sig = "random signature bytes"
	}
	fmt.Printf("\ninternal/index with %d paths (narinfos of %.0f bytes on average, %s)\n", r.N, r.AvgNarInfoBytes, sig)
	if r.LoadSeconds > 0 {
		fmt.Printf("  load (%s, %d writers): %8.1f s  (%.0f paths/s), close %.1f s\n", r.Load, r.Writers, r.LoadSeconds, r.LoadPerSec, r.CloseSeconds)
	}
	fmt.Printf("  size on disk:         %8.1f MiB in %d files (allocated %.1f MiB; narinfo text alone %.1f MiB)\n",
		float64(r.DiskBytes)/(1<<20), r.DiskFiles, float64(r.DiskAllocBytes)/(1<<20), r.AvgNarInfoBytes*float64(r.N)/(1<<20))
	fmt.Printf("  start-up:             %8.3f s  (index.Open %.3f s)\n", r.StartupSeconds, r.OpenSeconds)
	for _, l := range []struct {
		name string
		l    lookups
	}{{fmt.Sprintf("hit, random over all %d", r.N), r.Hit}, {fmt.Sprintf("hit, random over %d hot", r.HotSet), r.HotHit}, {"miss, random", r.Miss}} {
		fmt.Printf("  lookup %-28s x%d, %d goroutines: %9.0f/s  p50 %6.1f µs  p99 %8.1f µs  p99.9 %8.1f µs  max %6.0f µs\n",
			l.name, l.l.Count, l.l.Readers, l.l.PerSec, l.l.P50us, l.l.P99us, l.l.P999us, l.l.MaxUs)
	}
	fmt.Printf("  serving: RSS %.0f MiB (anonymous %.0f, file-backed: the index's mmapped tables %.0f), peak %.0f MiB, Go heap in use after GC %.0f MiB\n",
		r.RSSMiB, r.RSSAnonMiB, r.RSSFileMiB, r.PeakRSSMiB, r.HeapInuseMiB)
	fmt.Printf("  index.Count (stats): %8.2f s\n", r.CountSeconds)
	if r.GC.Paths > 0 {
		fmt.Printf("  gc planning (%s): %.1f s over %d paths, %d would go, peak RSS %.0f MiB\n",
			r.GC.Policy, r.GC.Seconds, r.GC.Paths, r.GC.WouldGo, r.GC.PeakRSSMiB)
	}
}
