package e2e

import (
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"
)

// TestMixedVersions: what one nix version uploads, the other verifies, lists and substitutes
// into a fresh store with signatures required, byte for byte; in both directions.
func TestMixedVersions(t *testing.T) {
	for _, tc := range []struct {
		up, down nixVersion
		comp     string
	}{
		{chrootNix, hostNix, "xz"}, // nix's default, stored as zstd
		{hostNix, chrootNix, "zstd"},
	} {
		t.Run(tc.up.Name+"-uploads-"+tc.down.Name+"-substitutes", func(t *testing.T) {
			tc.up.require(t)
			tc.down.require(t)
			srv := startServer(t, t.TempDir())
			up := newNixClientOf(t, tc.up, hostOf(srv.URL), srv.Token)
			down := newNixClientOf(t, tc.down, hostOf(srv.URL), "")
			c := buildClosure(t, up, 1<<20)
			up.run("nix", "copy", "--to", srv.URL+"?compression="+tc.comp, c.Top)
			infos := pathInfos(t, down, "--store", srv.URL, "-r", c.Top)
			if len(infos) != 2 || !strings.HasSuffix(infos[0].URL, ".nar.zst") || !strings.HasSuffix(infos[1].URL, ".nar.zst") {
				t.Errorf("%s reads %+v, want 2 paths stored as zstd", tc.down.Name, infos)
			}
			down.run("nix", "store", "verify", "--store", srv.URL, "--trusted-public-keys", srv.PublicKey, "-r", c.Top)
			if cat := down.run("nix", "store", "cat", "--store", srv.URL, c.Top+"/bin/hi"); cat != "#!/bin/sh\necho hi\n" {
				t.Errorf("nix store cat bin/hi = %q", cat)
			}
			substituteFreshFrom(t, down, srv.URL, srv.PublicKey, c, up)
			// And the uploader substitutes what it uploaded.
			substituteFresh(t, up, srv.URL, srv.PublicKey, c)
		})
	}
}

// overlapGraph builds tops closures that all reference one shared path, with contents that
// depend only on seed: two clients given the same seed build the same store paths, byte for
// byte, each in its own store.
func overlapGraph(t *testing.T, n *nixClient, seed string, tops, size int) []string {
	t.Helper()
	var b strings.Builder
	fmt.Fprintf(&b, `let
  mk = name: script: builtins.derivation { inherit name; system = builtins.currentSystem; builder = "/bin/sh"; args = [ "-c" script ]; };
  shared = mk "ov-shared" "/usr/bin/yes shared-%[1]s | /usr/bin/head -c %[2]d > $out";
in {
`, seed, size)
	args := []string{"nix-build", "--no-out-link"}
	for i := 0; i < tops; i++ {
		fmt.Fprintf(&b, `  top%[1]d = mk "ov-top-%[1]d" "/bin/mkdir $out; echo ${shared} > $out/shared; /usr/bin/yes %[2]s-%[1]d | /usr/bin/head -c %[3]d > $out/own";
`, i, seed, size)
		args = append(args, "-A", fmt.Sprintf("top%d", i))
	}
	b.WriteString("}\n")
	file := filepath.Join(n.work, "overlap-"+seed+".nix")
	if err := os.WriteFile(file, []byte(b.String()), 0o644); err != nil {
		t.Fatal(err)
	}
	paths := strings.Fields(n.run(append(args, file)...))
	if len(paths) != tops {
		t.Fatalf("nix-build of %d tops printed %v", tops, paths)
	}
	return paths
}

// copyJob is one nix copy in a race of overlapping copies.
type copyJob struct {
	n     *nixClient
	paths []string
}

// raceCopies runs the jobs at once and returns the error of each (nil when it succeeded).
func raceCopies(url string, jobs []copyJob) []error {
	errs := make([]error, len(jobs))
	var wg sync.WaitGroup
	start := make(chan struct{})
	for i, j := range jobs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			<-start
			_, errs[i] = j.n.try(append([]string{"nix", "copy", "--to", url}, j.paths...)...)
		}()
	}
	close(start)
	wg.Wait()
	return errs
}

// nix28CoroutineBug is how Nix 2.8 fails a copy when a path it is about to upload becomes valid
// in the cache meanwhile (another copy uploaded it first): a client bug, fixed in later versions.
const nix28CoroutineBug = "coroutine has finished"

// TestConcurrentOverlappingCopies: 8 nix copy processes upload closures that overlap (each its
// own top, its neighbour's, and the dependency all share) at the same time, with each client,
// and with both clients at once pushing the same paths. Every copy succeeds (but for Nix 2.8's
// own bug, after which the copy is run again), the server refuses no PUT, and every closure
// substitutes into a fresh store with signatures required.
func TestConcurrentOverlappingCopies(t *testing.T) {
	const copies = 8
	check := func(t *testing.T, srv *serverProc, jobs []copyJob, errs []error, tops []string, readers ...*nixClient) {
		t.Helper()
		for i, err := range errs {
			if err == nil {
				continue
			}
			if jobs[i].n.root == "" && strings.Contains(err.Error(), nix28CoroutineBug) {
				t.Logf("nix 2.8 tripped over its own coroutine; copying again: %s", tail(err.Error(), 2))
				jobs[i].n.run(append([]string{"nix", "copy", "--to", srv.URL}, jobs[i].paths...)...)
				continue
			}
			t.Errorf("nix copy %v (%s) failed: %v", jobs[i].paths, clientName(jobs[i].n), err)
		}
		for _, line := range strings.Split(srv.stderr.String(), "\n") {
			if strings.Contains(line, "method=PUT") && !strings.Contains(line, "status=200") {
				t.Errorf("a PUT was refused during overlapping copies: %s", line)
			}
		}
		for _, r := range readers {
			for _, top := range tops {
				if err := substitutes(t, r, srv, top); err != nil {
					t.Errorf("%s does not substitute with %s after overlapping copies: %v", top, clientName(r), err)
				}
			}
		}
	}
	forEachNix(t, func(t *testing.T, v nixVersion) {
		srv := startServer(t, t.TempDir())
		n := newNixClientOf(t, v, hostOf(srv.URL), srv.Token)
		tops := overlapGraph(t, n, fmt.Sprint(time.Now().UnixNano()), copies, 256<<10)
		var jobs []copyJob
		for i := range tops {
			// One client each, as on separate CI machines (they share the store here).
			jobs = append(jobs, copyJob{newNixClientOf(t, v, hostOf(srv.URL), srv.Token), []string{tops[i], tops[(i+1)%len(tops)]}})
		}
		check(t, srv, jobs, raceCopies(srv.URL, jobs), tops, n)
	})
	t.Run("both-at-once", func(t *testing.T) {
		hostNix.require(t)
		chrootNix.require(t)
		srv := startServer(t, t.TempDir())
		seed := fmt.Sprint(time.Now().UnixNano())
		clients := []*nixClient{newNixClientOf(t, hostNix, hostOf(srv.URL), srv.Token), newNixClientOf(t, chrootNix, hostOf(srv.URL), srv.Token)}
		var tops []string
		for _, n := range clients {
			built := overlapGraph(t, n, seed, copies/2, 256<<10)
			if tops != nil && strings.Join(built, " ") != strings.Join(tops, " ") {
				t.Fatalf("the two versions built different store paths from one expression:\n%v\n%v", tops, built)
			}
			tops = built
		}
		for _, top := range tops {
			h := make([]string, len(clients))
			for i, n := range clients {
				h[i] = strings.TrimSpace(n.run("nix-store", "-q", "--hash", top))
			}
			if h[0] != h[1] {
				t.Fatalf("%s has NAR hash %s in one store and %s in the other: not the same path to race on", top, h[0], h[1])
			}
		}
		// Each version pushes every closure, two processes each, in opposite orders.
		var jobs []copyJob
		for _, v := range []nixVersion{hostNix, chrootNix} {
			for i := 0; i < 2; i++ {
				order := append([]string(nil), tops...)
				if i == 1 {
					for l, r := 0, len(order)-1; l < r; l, r = l+1, r-1 {
						order[l], order[r] = order[r], order[l]
					}
				}
				jobs = append(jobs, copyJob{newNixClientOf(t, v, hostOf(srv.URL), srv.Token), order})
			}
		}
		check(t, srv, jobs, raceCopies(srv.URL, jobs), tops, clients...)
		if code, _ := get(t, srv.URL+"/"+hashOf(tops[0])+".narinfo"); code != http.StatusOK {
			t.Errorf("narinfo of %s: %d after both versions pushed it", tops[0], code)
		}
	})
}

func clientName(n *nixClient) string {
	if n.root == "" {
		return hostNix.Name
	}
	return chrootNix.Name
}
