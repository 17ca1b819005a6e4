// Command indexscale measures internal/index at the size of a large cache: it loads N synthetic
// but valid, signed narinfos, then reports load time, close and reopen (start-up) time, size on
// disk, and lookup latency for hits and misses under many concurrent readers.
//
//	go run ./bench/indexscale -n 1000000
//
// The index has no batch write API, so the load uses -writers goroutines calling PutNarInfo (one
// Badger transaction each, which Badger groups into batched commits internally). With
// -compare-batch it also loads the same narinfos into a Badger database opened with the same
// options through badger.WriteBatch, to show what a batch API in internal/index would give
// (bulk imports, cached reindex).
package main

import (
	"crypto/rand"
	"encoding/json"
	"flag"
	"fmt"
	"io/fs"
	"log/slog"
	"math"
	mrand "math/rand/v2"
	"os"
	"path/filepath"
	"runtime"
	"runtime/debug"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	badger "github.com/dgraph-io/badger/v4"
	"github.com/nix-community/go-nix/pkg/nixbase32"

	"github.com/cached-dev/cached/internal/index"
	"github.com/cached-dev/cached/internal/narinfo"
	"github.com/cached-dev/cached/internal/signing"
)

type report struct {
	N               int     `json:"narinfos"`
	AvgNarInfoBytes float64 `json:"avg_narinfo_bytes"`
	GenerateSeconds float64 `json:"generate_seconds"`
	Writers         int     `json:"writers"`
	LoadSeconds     float64 `json:"load_seconds"`
	LoadPerSec      float64 `json:"load_per_sec"`
	CloseSeconds    float64 `json:"close_seconds"`
	ReopenSeconds   float64 `json:"reopen_seconds"`
	DiskBytes       int64   `json:"disk_bytes"`           // sum of file sizes
	DiskAllocBytes  int64   `json:"disk_allocated_bytes"` // blocks actually allocated
	Hit             lookups `json:"hit"`                  // uniformly random over all N
	HotSet          int     `json:"hot_set"`              // paths in the hot set
	HotHit          lookups `json:"hot_hit"`              // uniformly random over the hot set
	Miss            lookups `json:"miss"`                 // random hashes, never repeated
	Batch           *batch  `json:"write_batch,omitempty"`
	RSSAfterMiB     float64 `json:"rss_after_lookups_mib"` // harness's generated data freed
	HeapInuseMiB    float64 `json:"go_heap_inuse_after_lookups_mib"`
	PeakRSSMiB      float64 `json:"peak_rss_mib"` // includes generation and load
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

type batch struct {
	LoadSeconds  float64 `json:"load_seconds"`
	LoadPerSec   float64 `json:"load_per_sec"`
	CloseSeconds float64 `json:"close_seconds"`
	DiskBytes    int64   `json:"disk_bytes"`
}

func main() {
	n := flag.Int("n", 1000000, "narinfos to load")
	dir := flag.String("dir", "", "directory for the index (default: a new temporary directory, removed at the end)")
	writers := flag.Int("writers", 64, "goroutines calling PutNarInfo during the load")
	readers := flag.Int("readers", 64, "goroutines doing lookups")
	count := flag.Int("lookups", 1000000, "lookups per kind (hit, miss)")
	hot := flag.Int("hot", 10000, "size of the hot set for the repeated-hits test")
	compareBatch := flag.Bool("compare-batch", true, "also load through badger.WriteBatch with the index's options")
	jsonOut := flag.String("json", "", "also write the numbers as JSON to this file")
	flag.Parse()
	if err := run(*n, *dir, *writers, *readers, *count, *hot, *compareBatch, *jsonOut); err != nil {
		fmt.Fprintln(os.Stderr, "indexscale:", err)
		os.Exit(1)
	}
}

func run(n int, dir string, writers, readers, count, hot int, compareBatch bool, jsonOut string) error {
	if n < 1 || writers < 1 || readers < 1 || count < 1 || hot < 1 {
		return fmt.Errorf("-n, -writers, -readers, -lookups and -hot must be >= 1")
	}
	if dir == "" {
		d, err := os.MkdirTemp("", "cached-indexscale-")
		if err != nil {
			return err
		}
		defer os.RemoveAll(d)
		dir = d
	}
	log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
	rep := report{N: n, Writers: writers}

	fmt.Printf("generating %d signed narinfos...\n", n)
	start := time.Now()
	hashes, texts, err := generate(n)
	if err != nil {
		return err
	}
	rep.GenerateSeconds = time.Since(start).Seconds()
	var total int64
	for _, t := range texts {
		total += int64(len(t))
	}
	rep.AvgNarInfoBytes = float64(total) / float64(n)
	fmt.Printf("  %.1fs, %.0f bytes per narinfo on average\n", rep.GenerateSeconds, rep.AvgNarInfoBytes)

	ixDir := filepath.Join(dir, "index")
	ix, err := index.Open(ixDir, log)
	if err != nil {
		return err
	}
	fmt.Printf("loading into internal/index with %d writers (PutNarInfo)...\n", writers)
	start = time.Now()
	if err := parallel(n, writers, func(i int) error { return ix.PutNarInfo(hashes[i], texts[i]) }); err != nil {
		ix.Close()
		return err
	}
	rep.LoadSeconds = time.Since(start).Seconds()
	rep.LoadPerSec = float64(n) / rep.LoadSeconds
	start = time.Now()
	if err := ix.Close(); err != nil {
		return err
	}
	rep.CloseSeconds = time.Since(start).Seconds()
	rep.DiskBytes, rep.DiskAllocBytes = diskUsage(ixDir)

	if compareBatch {
		fmt.Println("loading the same narinfos through badger.WriteBatch (what a batch API would do)...")
		b, err := loadBatch(filepath.Join(dir, "batch"), hashes, texts)
		if err != nil {
			return err
		}
		rep.Batch = b
		os.RemoveAll(filepath.Join(dir, "batch"))
	}

	// From here on the process should look like a server with the index open: drop the generated
	// texts (keeping one to check) so that their gigabyte neither inflates RSS nor makes the
	// garbage collector's work, and so lookup latency, the harness's.
	probe, probeText := hashes[n/2], texts[n/2]
	texts = nil
	runtime.GC()
	debug.FreeOSMemory()

	start = time.Now()
	ix, err = index.Open(ixDir, log)
	if err != nil {
		return err
	}
	rep.ReopenSeconds = time.Since(start).Seconds()
	defer ix.Close()

	// Spot check before measuring: a stored narinfo comes back byte for byte and parses.
	got, err := ix.NarInfo(probe)
	if err != nil || string(got) != string(probeText) {
		return fmt.Errorf("index returned %q, %v for a loaded narinfo", got, err)
	}
	if _, err := narinfo.Parse(got); err != nil {
		return fmt.Errorf("index returned a narinfo that does not parse: %w", err)
	}

	hot = min(hot, n)
	fmt.Printf("lookups, %d readers: %d random hits, %d hits among %d hot paths, %d random misses...\n", readers, count, count, hot, count)
	rep.Hit = measure(readers, count, func(r *mrand.Rand) (string, bool) { return hashes[r.IntN(n)], true }, ix)
	rep.HotHit = measure(readers, count, func(r *mrand.Rand) (string, bool) { return hashes[r.IntN(hot)], true }, ix)
	rep.HotSet = hot
	rep.Miss = measure(readers, count, func(r *mrand.Rand) (string, bool) { return randomHash(r), false }, ix)
	if rep.Hit.Unexpects+rep.HotHit.Unexpects+rep.Miss.Unexpects > 0 {
		return fmt.Errorf("lookups answered wrongly: %d+%d hits missed, %d misses hit", rep.Hit.Unexpects, rep.HotHit.Unexpects, rep.Miss.Unexpects)
	}
	var ms runtime.MemStats
	runtime.GC() // live heap, not the lookups' garbage
	runtime.ReadMemStats(&ms)
	rep.RSSAfterMiB = statusMiB("VmRSS:")
	rep.HeapInuseMiB = float64(ms.HeapInuse) / (1 << 20)
	rep.PeakRSSMiB = statusMiB("VmHWM:")
	printReport(rep)
	if jsonOut != "" {
		data, _ := json.MarshalIndent(rep, "", "  ")
		if err := os.WriteFile(jsonOut, append(data, '\n'), 0o644); err != nil {
			return err
		}
	}
	return nil
}

// generate makes n narinfos that internal/narinfo.Parse accepts: random store hashes, random
// sha256 NAR and file hashes, up to 8 references to other generated paths, a deriver, and a real
// ed25519 signature over the fingerprint.
func generate(n int) (hashes []string, texts [][]byte, err error) {
	key, err := signing.Generate("indexscale-1")
	if err != nil {
		return nil, nil, err
	}
	hashes = make([]string, n)
	names := make([]string, n)
	seen := make(map[string]struct{}, n)
	var raw [20]byte
	for i := range hashes {
		for {
			rand.Read(raw[:])
			h := nixbase32.EncodeToString(raw[:])
			if _, dup := seen[h]; !dup {
				seen[h] = struct{}{}
				hashes[i] = h
				break
			}
		}
		names[i] = hashes[i] + "-pkg-" + strconv.Itoa(i) + "-1.0"
	}
	seen = nil
	texts = make([][]byte, n)
	err = parallel(n, runtime.GOMAXPROCS(0), func(i int) error {
		r := mrand.New(mrand.NewPCG(uint64(i), 42))
		var narHash, fileHash [32]byte
		fillRandom(r, narHash[:])
		fillRandom(r, fileHash[:])
		refs := make([]string, r.IntN(9))
		for j := range refs {
			refs[j] = names[r.IntN(n)]
		}
		narSize := uint64(1024 + r.IntN(64<<20))
		ni := narinfo.NarInfo{
			StorePath:   narinfo.StoreDir + "/" + names[i],
			URL:         "nar/" + nixbase32.EncodeToString(fileHash[:]) + ".nar.zst",
			Compression: "zstd",
			FileHash:    narinfo.Hash{Algo: "sha256", Digest: fileHash[:]},
			FileSize:    narSize/3 + 1,
			NarHash:     narinfo.Hash{Algo: "sha256", Digest: narHash[:]},
			NarSize:     narSize,
			References:  refs,
			Deriver:     hashes[(i+1)%n] + "-pkg-" + strconv.Itoa(i) + "-1.0.drv",
			System:      "x86_64-linux",
		}
		ni.Sigs = []string{key.Sign(ni.Fingerprint())}
		texts[i] = ni.Bytes()
		return nil
	})
	if err != nil {
		return nil, nil, err
	}
	// They must be what the server would store: parseable, and signed verifiably.
	for _, i := range []int{0, n / 2, n - 1} {
		ni, err := narinfo.Parse(texts[i])
		if err != nil {
			return nil, nil, fmt.Errorf("generated narinfo does not parse: %w\n%s", err, texts[i])
		}
		if !key.Public().Verify(ni.Fingerprint(), ni.Sigs[0]) {
			return nil, nil, fmt.Errorf("generated narinfo's signature does not verify:\n%s", texts[i])
		}
	}
	return hashes, texts, nil
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

// loadBatch loads everything with one badger.WriteBatch into a database opened with the options
// of index.Open.
func loadBatch(dir string, hashes []string, texts [][]byte) (*batch, error) {
	opts := index.BadgerOptions(dir)
	db, err := badger.Open(opts)
	if err != nil {
		return nil, fmt.Errorf("open %s: %w", dir, err)
	}
	start := time.Now()
	wb := db.NewWriteBatch()
	for i := range hashes {
		if err := wb.Set([]byte("n/"+hashes[i]), texts[i]); err != nil {
			wb.Cancel()
			db.Close()
			return nil, err
		}
	}
	if err := wb.Flush(); err != nil {
		db.Close()
		return nil, err
	}
	b := &batch{LoadSeconds: time.Since(start).Seconds()}
	b.LoadPerSec = float64(len(hashes)) / b.LoadSeconds
	start = time.Now()
	if err := db.Close(); err != nil {
		return nil, err
	}
	b.CloseSeconds = time.Since(start).Seconds()
	b.DiskBytes, _ = diskUsage(dir)
	return b, nil
}

func diskUsage(dir string) (size, alloc int64) {
	filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return nil
		}
		if info, err := d.Info(); err == nil {
			size += info.Size()
			if st, ok := info.Sys().(*syscall.Stat_t); ok {
				alloc += st.Blocks * 512
			}
		}
		return nil
	})
	return size, alloc
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

func printReport(r report) {
	fmt.Printf("\ninternal/index with %d narinfos (%.0f bytes each on average)\n", r.N, r.AvgNarInfoBytes)
	fmt.Printf("  load, %d writers:     %8.2f s  (%.0f narinfos/s)\n", r.Writers, r.LoadSeconds, r.LoadPerSec)
	if r.Batch != nil {
		fmt.Printf("  load, badger.WriteBatch with the index's options (what a batch API would give): %.2f s (%.0f narinfos/s), close %.2f s, %.1f MiB\n",
			r.Batch.LoadSeconds, r.Batch.LoadPerSec, r.Batch.CloseSeconds, float64(r.Batch.DiskBytes)/(1<<20))
	}
	fmt.Printf("  close:                %8.2f s\n", r.CloseSeconds)
	fmt.Printf("  reopen (start-up):    %8.3f s\n", r.ReopenSeconds)
	fmt.Printf("  size on disk:         %8.1f MiB (allocated %.1f MiB; raw narinfo text %.1f MiB)\n",
		float64(r.DiskBytes)/(1<<20), float64(r.DiskAllocBytes)/(1<<20), r.AvgNarInfoBytes*float64(r.N)/(1<<20))
	for _, l := range []struct {
		name string
		l    lookups
	}{{fmt.Sprintf("hit, random over all %d", r.N), r.Hit}, {fmt.Sprintf("hit, random over %d hot", r.HotSet), r.HotHit}, {"miss, random", r.Miss}} {
		fmt.Printf("  lookup %-28s x%d, %d goroutines: %9.0f/s  p50 %6.1f µs  p99 %8.1f µs  p99.9 %8.1f µs  max %6.0f µs\n",
			l.name, l.l.Count, l.l.Readers, l.l.PerSec, l.l.P50us, l.l.P99us, l.l.P999us, l.l.MaxUs)
	}
	fmt.Printf("  after the lookups: RSS %.0f MiB (includes the index's mmapped tables), Go heap in use after GC %.0f MiB (generated texts freed; the 1M hashes kept, ~%.0f MiB); peak RSS of the run %.0f MiB\n",
		r.RSSAfterMiB, r.HeapInuseMiB, float64(r.N)*48/(1<<20), r.PeakRSSMiB)
}
