package e2e

import (
	"bytes"
	"crypto/sha256"
	"encoding/binary"
	"io"
	"net/http"
	"os"
	"os/exec"
	"sync"
	"testing"
	"time"

	"github.com/cached-dev/cached/internal/membudget"
	"github.com/nix-community/go-nix/pkg/nixbase32"
)

// xzZerosNAR is a NAR of one regular file of size zero bytes, compressed by xz with a 128 MiB
// dictionary: a few KiB whose decoder fills its whole dictionary.
func xzZerosNAR(t *testing.T, size int64) []byte {
	t.Helper()
	if _, err := exec.LookPath("xz"); err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatal("xz (xz-utils) not installed (./test.sh installs it)")
		}
		t.Skip("xz (xz-utils) not installed; skipped outside CI, fails when CI=true")
	}
	str := func(w io.Writer, s string) {
		binary.Write(w, binary.LittleEndian, uint64(len(s)))
		io.WriteString(w, s)
		w.Write(make([]byte, -len(s)&7))
	}
	cmd := exec.Command("xz", "-c", "-T1", "--lzma2=preset=0,dict=128MiB")
	in, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	var out bytes.Buffer
	cmd.Stdout = &out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	for _, s := range []string{"nix-archive-1", "(", "type", "regular"} {
		str(in, s)
	}
	str(in, "contents")
	binary.Write(in, binary.LittleEndian, uint64(size))
	io.CopyN(in, zeroReader{}, size+int64(-size&7))
	str(in, ")")
	in.Close()
	if err := cmd.Wait(); err != nil {
		t.Fatalf("xz: %v", err)
	}
	return out.Bytes()
}

type zeroReader struct{}

func (zeroReader) Read(p []byte) (int, error) { clear(p); return len(p), nil }

// TestDecoderMemoryBudget: with --decoder-memory 200MiB, uploads whose xz streams declare
// 128 MiB dictionaries decode one at a time. While one holds its dictionary, the others wait,
// then get 503 with Retry-After: 5; six at once leave the server's peak RSS within twice the
// budget plus 150 MiB (without the budget: 8 of them, 1.3 GB); and real nix copy with xz, nix's
// default, still uploads and substitutes.
func TestDecoderMemoryBudget(t *testing.T) {
	requireNix(t)
	const budget = 200 << 20
	srv := startServer(t, t.TempDir(), "--decoder-memory", "200MiB")
	file := xzZerosNAR(t, 140<<20)
	sum := sha256.Sum256(file)
	url := srv.URL + "/nar/" + nixbase32.EncodeToString(sum[:]) + ".nar.xz"
	put := func(body io.Reader) (int, string, error) {
		req, err := http.NewRequest(http.MethodPut, url, body)
		if err != nil {
			return 0, "", err
		}
		req.SetBasicAuth("cached", srv.Token)
		req.ContentLength = int64(len(file))
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			return 0, "", err
		}
		defer resp.Body.Close()
		io.Copy(io.Discard, resp.Body)
		return resp.StatusCode, resp.Header.Get("Retry-After"), nil
	}
	// concurrently sends n uploads and checks each gets 200 or 503 with Retry-After: 5.
	concurrently := func(n int) (ok, busy int) {
		t.Helper()
		var mu sync.Mutex
		var wg sync.WaitGroup
		for range n {
			wg.Go(func() {
				code, retry, err := put(bytes.NewReader(file))
				mu.Lock()
				defer mu.Unlock()
				switch {
				case err != nil:
					t.Errorf("upload: %v", err)
				case code == http.StatusOK:
					ok++
				case code == http.StatusServiceUnavailable && retry == "5":
					busy++
				default:
					t.Errorf("upload: %d with Retry-After %q, want 200, or 503 with Retry-After: 5", code, retry)
				}
			})
		}
		wg.Wait()
		return ok, busy
	}

	// One upload sends its headers and stalls, holding its 128 MiB: three more wait 10 s, 503.
	pr, pw := io.Pipe()
	held := make(chan int, 1)
	go func() {
		code, _, err := put(pr)
		if err != nil {
			t.Errorf("held upload: %v", err)
		}
		held <- code
	}()
	pw.Write(file[:64])
	time.Sleep(time.Second) // the server reads the block header and reserves
	if ok, busy := concurrently(3); ok != 0 || busy != 3 {
		t.Errorf("beside an upload holding 128 MiB of 200: %d uploads stored, %d got 503; want 0 and 3", ok, busy)
	}
	pw.Write(file[64:])
	pw.Close()
	if code := <-held; code != http.StatusOK {
		t.Errorf("held upload: %d, want 200", code)
	}

	// Six at once: each decodes 140 MiB through its whole dictionary, one at a time.
	ok, busy := concurrently(6)
	peak := peakRSS(t, srv.cmd.Process.Pid)
	t.Logf("6 concurrent uploads: %d stored, %d got 503; peak RSS %d MiB", ok, busy, peak>>20)
	if ok == 0 {
		t.Error("no upload got through")
	}
	// The server sets Go's memory limit to the budget plus membudget.GoHeadroom, so that the
	// dictionaries of finished uploads are collected before the heap doubles; beyond that, the
	// server's base (the index, buffers). Six uploads at once without a budget peak past 1 GB,
	// and with it but without the memory limit at about twice the budget.
	if limit := budget + membudget.GoHeadroom + 100<<20; peak > int64(limit) {
		t.Errorf("peak RSS %d MiB, want at most the 200 MiB budget + %d MiB headroom + 100 MiB", peak>>20, membudget.GoHeadroom>>20)
	}

	// Real nix, normal sizes (xz -6: 8 MiB dictionaries), within the same small budget.
	n := newNixClient(t, hostOf(srv.URL), srv.Token)
	c := buildClosure(t, n, 4<<20)
	n.run("nix", "copy", "--to", srv.URL, c.Top)
	substituteFresh(t, n, srv.URL, srv.PublicKey, c)
}
