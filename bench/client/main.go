// Command client is the load generator of bench/run.sh. It plays a substituter against any binary
// cache (nginx serving a `nix copy --to file://` directory, or cached) so that both servers are
// measured by the same code:
//
//	client narinfos -base URL -hashes FILE -out NARS.tsv [-repeat N]
//	    fetch <hash>.narinfo for every hash, one after another on one connection; write the hash,
//	    NAR URL and FileSize of each to NARS.tsv
//	client nars -base URL -list NARS.tsv -c N [-repeat N]
//	    download every NAR in NARS.tsv with N concurrent streams, largest first, discarding bytes
//	client get -url URL [-repeat N]
//	    download one URL (the big NAR) on one stream
//	client presign -endpoint URL -bucket B -key K -access A -secret S [-region R]
//	    print a presigned GET URL of an S3 object (path style), so that the same client fetches
//	    it straight from the bucket as the baseline of cached on S3 (bench/s3.sh)
//	client delayproxy -listen ADDR -target URL -delay D [-log]
//	    a reverse proxy that waits D before passing each request on, keeping its Host header (so
//	    that S3 signatures made for the proxy's address stay valid): a distant S3 region. With
//	    -log it prints a line per request ("METHOD PATH?QUERY") to count what a server asks of S3
//	client freeport
//	    print a free TCP port on 127.0.0.1
//	client sink -listen ADDR
//	    serve a binary cache that stores nothing but narinfos (nix reads back those of every
//	    reference): nix-cache-info, the narinfos it was sent, 404 for every other GET and HEAD,
//	    and 200 for every PUT once its body has been read. `nix copy` to it measures what the
//	    nix client itself needs to upload over HTTP, with no server work worth the name.
//	client blackhole -listen ADDR
//	    accept connections and never answer: an upstream that hangs (bench/pull.sh)
//
// Every measuring command prints one JSON object on stdout; with -repeat N it runs N times and
// reports every run and the median. A wrong status, a short body or a missing URL: line is an
// error (exit 1): a benchmark that silently downloads 404 pages measures nothing.
package main

import (
	"bufio"
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httputil"
	"net/url"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/credentials"
	"github.com/aws/aws-sdk-go-v2/service/s3"
)

func main() {
	if len(os.Args) < 2 {
		fmt.Fprintln(os.Stderr, "usage: client narinfos|nars|get|presign|freeport|sink|blackhole [flags]")
		os.Exit(2)
	}
	var err error
	switch cmd, args := os.Args[1], os.Args[2:]; cmd {
	case "narinfos":
		err = cmdNarInfos(args)
	case "nars":
		err = cmdNars(args)
	case "get":
		err = cmdGet(args)
	case "presign":
		err = cmdPresign(args)
	case "delayproxy":
		err = cmdDelayProxy(args)
	case "freeport":
		err = cmdFreePort()
	case "sink":
		err = cmdSink(args)
	case "blackhole":
		err = cmdBlackhole(args)
	default:
		err = fmt.Errorf("unknown command %q", cmd)
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "client:", err)
		os.Exit(1)
	}
}

// newClient returns an HTTP client tuned for bulk transfers on loopback: enough idle connections
// for every worker, no gzip negotiation (a NAR is already compressed, and nginx and cached must
// be compared on the same bytes), large read buffers.
func newClient(conns int) *http.Client {
	tr := &http.Transport{
		Proxy:               nil,
		DialContext:         (&net.Dialer{Timeout: 10 * time.Second, KeepAlive: 30 * time.Second}).DialContext,
		MaxIdleConns:        conns * 2,
		MaxIdleConnsPerHost: conns * 2,
		IdleConnTimeout:     90 * time.Second,
		DisableCompression:  true,
		ForceAttemptHTTP2:   false,
		ReadBufferSize:      256 << 10,
		WriteBufferSize:     16 << 10,
	}
	// Generous, but bounded: a stuck server fails the run instead of hanging it.
	return &http.Client{Transport: tr, Timeout: 30 * time.Minute}
}

// result is what every measuring command prints.
type result struct {
	Runs     []float64 `json:"runs_seconds"`
	Seconds  float64   `json:"seconds"` // median of Runs
	Count    int       `json:"count"`   // requests per run
	Bytes    int64     `json:"bytes"`   // body bytes per run
	GBPerSec float64   `json:"gb_per_sec,omitempty"`
	ReqPerS  float64   `json:"req_per_sec,omitempty"`
}

func (r *result) finish(count int, bytes int64) {
	r.Count, r.Bytes = count, bytes
	s := slices.Clone(r.Runs)
	slices.Sort(s)
	r.Seconds = s[len(s)/2]
	if len(s)%2 == 0 {
		r.Seconds = (s[len(s)/2-1] + s[len(s)/2]) / 2
	}
	if r.Seconds > 0 {
		r.GBPerSec = float64(bytes) / 1e9 / r.Seconds
		r.ReqPerS = float64(count) / r.Seconds
	}
}

func printJSON(v any) error {
	enc := json.NewEncoder(os.Stdout)
	return enc.Encode(v)
}

type narRef struct {
	Hash     string // store path hash of the narinfo that named it
	URL      string
	FileSize int64
}

func cmdNarInfos(args []string) error {
	fs := flag.NewFlagSet("narinfos", flag.ExitOnError)
	base := fs.String("base", "", "cache base URL, e.g. http://127.0.0.1:8080")
	hashesFile := fs.String("hashes", "", "file with one store path hash (or store path) per line")
	out := fs.String("out", "", "write 'hash<TAB>URL<TAB>FileSize' of every NAR here")
	repeat := fs.Int("repeat", 1, "runs")
	fs.Parse(args)
	if *base == "" || *hashesFile == "" {
		return errors.New("narinfos: -base and -hashes are required")
	}
	hashes, err := readHashes(*hashesFile)
	if err != nil {
		return err
	}
	client := newClient(1)
	base2 := strings.TrimSuffix(*base, "/")
	var (
		res   result
		refs  []narRef
		bytes int64
	)
	buf := make([]byte, 64<<10)
	for run := 0; run < max(*repeat, 1); run++ {
		refs, bytes = refs[:0], 0
		start := time.Now()
		for _, h := range hashes {
			body, err := fetchSmall(client, base2+"/"+h+".narinfo", buf)
			if err != nil {
				return err
			}
			bytes += int64(len(body))
			ref, err := parseNarInfo(body)
			if err != nil {
				return fmt.Errorf("%s.narinfo: %w", h, err)
			}
			ref.Hash = h
			refs = append(refs, ref)
		}
		res.Runs = append(res.Runs, time.Since(start).Seconds())
	}
	res.finish(len(hashes), bytes)
	if *out != "" {
		var sb strings.Builder
		for _, r := range refs {
			fmt.Fprintf(&sb, "%s\t%s\t%d\n", r.Hash, r.URL, r.FileSize)
		}
		if err := os.WriteFile(*out, []byte(sb.String()), 0o644); err != nil {
			return err
		}
	}
	return printJSON(res)
}

func readHashes(file string) ([]string, error) {
	data, err := os.ReadFile(file)
	if err != nil {
		return nil, err
	}
	var hashes []string
	for _, line := range strings.Fields(string(data)) {
		// Accept store paths too: /nix/store/<hash>-<name>.
		if i := strings.LastIndexByte(line, '/'); i >= 0 {
			line = line[i+1:]
		}
		if len(line) < 32 {
			return nil, fmt.Errorf("%s: %q is not a store path hash", file, line)
		}
		hashes = append(hashes, line[:32])
	}
	if len(hashes) == 0 {
		return nil, fmt.Errorf("%s: no hashes", file)
	}
	return hashes, nil
}

// fetchSmall GETs url, requires 200, and returns the body (a view into buf when it fits).
func fetchSmall(client *http.Client, url string, buf []byte) ([]byte, error) {
	resp, err := client.Get(url)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		io.Copy(io.Discard, resp.Body)
		return nil, fmt.Errorf("GET %s: %s", url, resp.Status)
	}
	n, err := io.ReadFull(resp.Body, buf)
	if err == io.ErrUnexpectedEOF || err == io.EOF {
		return buf[:n], nil
	}
	if err != nil {
		return nil, fmt.Errorf("GET %s: %w", url, err)
	}
	rest, err := io.ReadAll(resp.Body)
	if err != nil {
		return nil, fmt.Errorf("GET %s: %w", url, err)
	}
	return append(buf[:n:n], rest...), nil
}

// parseNarInfo takes URL and FileSize; it is not a validator (internal/narinfo is), only what a
// substituter needs to go on.
func parseNarInfo(body []byte) (narRef, error) {
	var ref narRef
	for _, line := range strings.Split(string(body), "\n") {
		k, v, ok := strings.Cut(line, ": ")
		if !ok {
			continue
		}
		switch k {
		case "URL":
			ref.URL = v
		case "FileSize":
			n, err := strconv.ParseInt(v, 10, 64)
			if err != nil {
				return ref, fmt.Errorf("FileSize %q: %w", v, err)
			}
			ref.FileSize = n
		}
	}
	if ref.URL == "" {
		return ref, errors.New("no URL line")
	}
	return ref, nil
}

func readNarList(file string) ([]narRef, error) {
	f, err := os.Open(file)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	var refs []narRef
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		f := strings.Split(sc.Text(), "\t")
		if len(f) != 3 {
			continue
		}
		h, u, size := f[0], f[1], f[2]
		n, err := strconv.ParseInt(size, 10, 64)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", file, err)
		}
		refs = append(refs, narRef{Hash: h, URL: u, FileSize: n})
	}
	if len(refs) == 0 {
		return nil, fmt.Errorf("%s: no NARs", file)
	}
	return refs, sc.Err()
}

func cmdNars(args []string) error {
	fs := flag.NewFlagSet("nars", flag.ExitOnError)
	base := fs.String("base", "", "cache base URL")
	list := fs.String("list", "", "file written by 'client narinfos -out'")
	conc := fs.Int("c", 1, "concurrent streams")
	repeat := fs.Int("repeat", 1, "runs")
	trace := fs.String("trace", "", "write 'URL<TAB>bytes<TAB>seconds' of every download of the last run here")
	fs.Parse(args)
	if *base == "" || *list == "" || *conc < 1 {
		return errors.New("nars: -base, -list and -c >= 1 are required")
	}
	refs, err := readNarList(*list)
	if err != nil {
		return err
	}
	// Largest first, as a scheduler that wants the shortest total time does (and Nix >= 2.35
	// uploads): otherwise the run ends with one stream alone on the biggest NAR.
	slices.SortStableFunc(refs, func(a, b narRef) int { return cmp.Compare(b.FileSize, a.FileSize) })
	base2 := strings.TrimSuffix(*base, "/") + "/"
	client := newClient(*conc)
	var res result
	var total int64
	durations := make([]time.Duration, len(refs))
	for run := 0; run < max(*repeat, 1); run++ {
		start := time.Now()
		n, err := downloadAll(client, base2, refs, *conc, durations)
		if err != nil {
			return err
		}
		res.Runs = append(res.Runs, time.Since(start).Seconds())
		total = n
	}
	res.finish(len(refs), total)
	if *trace != "" {
		var sb strings.Builder
		for i, r := range refs {
			fmt.Fprintf(&sb, "%s\t%d\t%.6f\n", r.URL, r.FileSize, durations[i].Seconds())
		}
		if err := os.WriteFile(*trace, []byte(sb.String()), 0o644); err != nil {
			return err
		}
	}
	return printJSON(res)
}

// downloadAll fetches every NAR with conc workers pulling from a shared queue and returns the
// bytes received; durations[i] is how long refs[i] took. The first error cancels the rest.
func downloadAll(client *http.Client, base string, refs []narRef, conc int, durations []time.Duration) (int64, error) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var (
		next     atomic.Int64
		total    atomic.Int64
		wg       sync.WaitGroup
		errOnce  sync.Once
		firstErr error
	)
	for w := 0; w < conc; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			buf := make([]byte, 1<<20)
			for {
				i := int(next.Add(1) - 1)
				if i >= len(refs) || ctx.Err() != nil {
					return
				}
				t := time.Now()
				n, err := download(ctx, client, base+refs[i].URL, buf)
				durations[i] = time.Since(t)
				if err == nil && refs[i].FileSize > 0 && n != refs[i].FileSize {
					err = fmt.Errorf("GET %s: %d bytes, narinfo says FileSize %d", refs[i].URL, n, refs[i].FileSize)
				}
				if err != nil {
					errOnce.Do(func() { firstErr = err; cancel() })
					return
				}
				total.Add(n)
			}
		}()
	}
	wg.Wait()
	return total.Load(), firstErr
}

// download GETs url, requires 200, and counts the body bytes into buf, discarding them.
func download(ctx context.Context, client *http.Client, url string, buf []byte) (int64, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return 0, err
	}
	resp, err := client.Do(req)
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return 0, fmt.Errorf("GET %s: %s", url, resp.Status)
	}
	if enc := resp.Header.Get("Content-Encoding"); enc != "" {
		return 0, fmt.Errorf("GET %s: Content-Encoding %q on a NAR", url, enc)
	}
	// A plain read loop: io.Copy to io.Discard would use Discard's small internal buffer.
	var n int64
	for {
		m, err := resp.Body.Read(buf)
		n += int64(m)
		if err == io.EOF {
			break
		}
		if err != nil {
			return n, fmt.Errorf("GET %s: after %d bytes: %w", url, n, err)
		}
	}
	if resp.ContentLength >= 0 && n != resp.ContentLength {
		return n, fmt.Errorf("GET %s: %d bytes, Content-Length %d", url, n, resp.ContentLength)
	}
	return n, nil
}

func cmdGet(args []string) error {
	fs := flag.NewFlagSet("get", flag.ExitOnError)
	url := fs.String("url", "", "URL to download")
	repeat := fs.Int("repeat", 1, "runs")
	fs.Parse(args)
	if *url == "" {
		return errors.New("get: -url is required")
	}
	client := newClient(1)
	buf := make([]byte, 1<<20)
	var res result
	var n int64
	for run := 0; run < max(*repeat, 1); run++ {
		start := time.Now()
		var err error
		n, err = download(context.Background(), client, *url, buf)
		if err != nil {
			return err
		}
		res.Runs = append(res.Runs, time.Since(start).Seconds())
	}
	res.finish(1, n)
	return printJSON(res)
}

// cmdBlackhole accepts connections and never answers, until it is killed: an upstream that hangs.
func cmdBlackhole(args []string) error {
	fs := flag.NewFlagSet("blackhole", flag.ExitOnError)
	listen := fs.String("listen", "127.0.0.1:0", "address to listen on")
	fs.Parse(args)
	ln, err := net.Listen("tcp", *listen)
	if err != nil {
		return err
	}
	fmt.Printf("blackhole listening at http://%s\n", ln.Addr())
	for {
		c, err := ln.Accept()
		if err != nil {
			return err
		}
		go io.Copy(io.Discard, c) // read whatever comes, answer nothing
	}
}

func cmdFreePort() error {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return err
	}
	defer ln.Close()
	fmt.Println(ln.Addr().(*net.TCPAddr).Port)
	return nil
}

// cmdSink serves the store-nothing cache of `client sink` until it is killed. It keeps the
// narinfos it is sent (a few hundred bytes each), because nix reads back the narinfo of every
// reference before it uploads a path; NAR bodies are read and dropped.
func cmdSink(args []string) error {
	fs := flag.NewFlagSet("sink", flag.ExitOnError)
	listen := fs.String("listen", "127.0.0.1:0", "address to listen on")
	fs.Parse(args)
	ln, err := net.Listen("tcp", *listen)
	if err != nil {
		return err
	}
	fmt.Printf("sink listening at http://%s\n", ln.Addr())
	const cacheInfo = "StoreDir: /nix/store\nWantMassQuery: 1\nPriority: 40\n"
	var mu sync.Mutex
	narinfos := map[string][]byte{}
	return http.Serve(ln, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		isNarInfo := strings.HasSuffix(r.URL.Path, ".narinfo")
		switch {
		case r.Method == http.MethodPut:
			if !isNarInfo {
				if _, err := io.Copy(io.Discard, r.Body); err != nil {
					http.Error(w, err.Error(), http.StatusBadRequest)
				}
				return
			}
			body, err := io.ReadAll(io.LimitReader(r.Body, 1<<20))
			if err != nil {
				http.Error(w, err.Error(), http.StatusBadRequest)
				return
			}
			mu.Lock()
			narinfos[r.URL.Path] = body
			mu.Unlock()
		case r.URL.Path == "/nix-cache-info":
			w.Header().Set("Content-Type", "text/x-nix-cache-info")
			io.WriteString(w, cacheInfo)
		case isNarInfo:
			mu.Lock()
			text, ok := narinfos[r.URL.Path]
			mu.Unlock()
			if !ok {
				http.Error(w, "not found", http.StatusNotFound)
				return
			}
			w.Header().Set("Content-Type", "text/x-nix-narinfo")
			w.Write(text)
		default:
			http.Error(w, "not found", http.StatusNotFound)
		}
	}))
}

func cmdPresign(args []string) error {
	fs := flag.NewFlagSet("presign", flag.ExitOnError)
	endpoint := fs.String("endpoint", "", "S3 endpoint, http://host:port")
	bucket := fs.String("bucket", "", "bucket")
	key := fs.String("key", "", "object key")
	access := fs.String("access", "", "access key")
	secret := fs.String("secret", "", "secret key")
	region := fs.String("region", "us-east-1", "region")
	expiry := fs.Duration("expiry", time.Hour, "how long the URL is valid")
	fs.Parse(args)
	if *endpoint == "" || *bucket == "" || *key == "" || *access == "" || *secret == "" {
		return errors.New("presign: -endpoint, -bucket, -key, -access and -secret are required")
	}
	client := s3.New(s3.Options{
		Region:       *region,
		BaseEndpoint: aws.String(*endpoint),
		UsePathStyle: true,
		Credentials:  credentials.NewStaticCredentialsProvider(*access, *secret, ""),
	})
	req, err := s3.NewPresignClient(client, s3.WithPresignExpires(*expiry)).PresignGetObject(context.Background(),
		&s3.GetObjectInput{Bucket: bucket, Key: key})
	if err != nil {
		return fmt.Errorf("presign %s/%s: %w", *bucket, *key, err)
	}
	fmt.Println(req.URL)
	return nil
}

func cmdDelayProxy(args []string) error {
	fs := flag.NewFlagSet("delayproxy", flag.ExitOnError)
	listen := fs.String("listen", "127.0.0.1:0", "address to listen on")
	target := fs.String("target", "", "URL to pass requests to")
	delay := fs.Duration("delay", 20*time.Millisecond, "wait before passing each request on")
	logRequests := fs.Bool("log", false, "print a line per request on stdout")
	fs.Parse(args)
	u, err := url.Parse(*target)
	if err != nil || u.Host == "" {
		return fmt.Errorf("delayproxy: -target %q is not a URL", *target)
	}
	ln, err := net.Listen("tcp", *listen)
	if err != nil {
		return err
	}
	proxy := &httputil.ReverseProxy{
		Rewrite: func(r *httputil.ProxyRequest) {
			r.SetURL(u)
			r.Out.Host = r.In.Host
		},
		Transport: &http.Transport{MaxIdleConnsPerHost: 256, DisableCompression: true},
	}
	fmt.Printf("delayproxy listening on %s\n", ln.Addr())
	var mu sync.Mutex
	return http.Serve(ln, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if *logRequests {
			mu.Lock()
			fmt.Printf("%s %s\n", r.Method, r.URL.RequestURI())
			mu.Unlock()
		}
		time.Sleep(*delay)
		proxy.ServeHTTP(w, r)
	}))
}
