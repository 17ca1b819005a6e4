package e2e

import (
	"io"
	"net/http"
	"os"
	"strings"
	"sync"
	"testing"
)

// bigFileBytes is the size of the large file in the shared closure: the protocol checklist asks
// for more than 100 MiB.
const bigFileBytes = 100<<20 + 12345

var (
	sharedMu       sync.Mutex
	sharedClosures = map[string]*sharedClosure{} // by client root
)

type sharedClosure struct {
	once sync.Once
	c    closure
}

// bigClosure builds the large closure once per client for all tests that only read it.
func bigClosure(t *testing.T, n *nixClient) closure {
	t.Helper()
	sharedMu.Lock()
	s := sharedClosures[n.root]
	if s == nil {
		s = &sharedClosure{}
		sharedClosures[n.root] = s
	}
	sharedMu.Unlock()
	// A failure inside the Once fails the test that ran it; later tests see no closure.
	s.once.Do(func() { s.c = buildClosure(t, n, bigFileBytes) })
	if s.c.Top == "" {
		t.Fatal("building the shared closure failed")
	}
	return s.c
}

// TestNixRoundTrip uploads, with each client, a closure with every kind of file and a >100 MiB
// file with `nix copy --to` in each compression (recompressed to zstd by default, or kept as
// uploaded), then checks it with nix path-info, nix store verify and nix store ls against the
// cache, and substitutes it into a fresh store with signatures required.
func TestNixRoundTrip(t *testing.T) {
	forEachNix(t, func(t *testing.T, v nixVersion) {
		for _, tc := range []struct{ comp, policy, wantExt string }{
			{"xz", "zstd", ".nar.zst"}, // transcoded while streaming in
			{"zstd", "zstd", ".nar.zst"},
			{"none", "zstd", ".nar.zst"},
			{"none", "as-uploaded", ".nar"},
		} {
			comp := tc.comp
			t.Run(comp+"-stored-as-"+tc.policy, func(t *testing.T) {
				srv := startServer(t, t.TempDir(), "--store-compression", tc.policy)
				n := newNixClientOf(t, v, hostOf(srv.URL), srv.Token)
				c := bigClosure(t, n)
				if v.root != "" && comp == "xz" {
					// Compressing 100 MiB with xz takes the client minutes; Nix 2.8 covers a
					// large xz upload, the big file the other cases.
					c = buildClosure(t, n, 4<<20)
				}
				dest := srv.URL
				if comp != "xz" {
					dest += "?compression=" + comp
				}
				n.run(append(storeInfoArgs(n), "--store", srv.URL)...)
				n.run("nix", "copy", "--to", dest, c.Top)

				// Every narinfo names the compression asked for and carries the server's signature.
				infos := pathInfos(t, n, "--store", srv.URL, "-r", c.Top)
				if len(infos) != 2 {
					t.Fatalf("path-info -r: want 2 paths, got %d: %+v", len(infos), infos)
				}
				keyName := strings.SplitN(srv.PublicKey, ":", 2)[0]
				for _, in := range infos {
					if !strings.HasSuffix(in.URL, tc.wantExt) {
						t.Errorf("%s: url %q, want one ending in %s", in.Path, in.URL, tc.wantExt)
					}
					signed := false
					for _, s := range in.Signatures {
						signed = signed || strings.HasPrefix(s, keyName+":")
					}
					if !signed {
						t.Errorf("%s: no signature by %s in %v", in.Path, keyName, in.Signatures)
					}
					if in.Path == c.Top && (len(in.References) != 1 || in.References[0] != c.Dep) {
						t.Errorf("%s: references %v, want [%s]", in.Path, in.References, c.Dep)
					}
				}
				n.run("nix", "store", "verify", "--store", srv.URL, "--trusted-public-keys", srv.PublicKey, "-r", c.Top)
				ls := n.run("nix", "store", "ls", "--store", srv.URL, "-R", "-l", c.Top)
				for _, want := range []string{"bin/hi", "link -> ref", "empty-dir", "big.bin", "./empty"} {
					if !strings.Contains(ls, want) {
						t.Errorf("nix store ls lacks %q:\n%s", want, ls)
					}
				}
				cat := n.run("nix", "store", "cat", "--store", srv.URL, c.Top+"/bin/hi")
				if cat != "#!/bin/sh\necho hi\n" {
					t.Errorf("nix store cat bin/hi = %q", cat)
				}
				substituteFresh(t, n, srv.URL, srv.PublicKey, c)
			})
		}
	})
}

// TestSignaturesAreRequired shows the substitution check is real: with another key trusted,
// substitution from the cache fails, with each client.
func TestSignaturesAreRequired(t *testing.T) {
	forEachNix(t, func(t *testing.T, v nixVersion) {
		srv := startServer(t, t.TempDir())
		n := newNixClientOf(t, v, hostOf(srv.URL), srv.Token)
		c := buildClosure(t, n, 1024)
		n.run("nix", "copy", "--to", srv.URL, c.Top)
		other := startServer(t, t.TempDir()) // has a key of its own
		_, err := n.try("nix-store", "--store", n.freshStore(t), "--realise", c.Top,
			"--option", "substituters", srv.URL,
			"--option", "trusted-public-keys", other.PublicKey,
			"--option", "require-sigs", "true")
		if err == nil {
			t.Fatal("substitution succeeded although the cache's key was not trusted")
		}
		if _, verr := n.try("nix", "store", "verify", "--store", srv.URL, "--trusted-public-keys", other.PublicKey, c.Top); verr == nil {
			t.Fatal("nix store verify passed with a key that did not sign")
		}
	})
}

// TestUploadNeedsToken: nix copy without a token or with a wrong one fails on the 401 and
// stores nothing, with each client.
func TestUploadNeedsToken(t *testing.T) {
	forEachNix(t, func(t *testing.T, v nixVersion) {
		srv := startServer(t, t.TempDir())
		for name, token := range map[string]string{"no token": "", "wrong token": "not-the-token"} {
			t.Run(name, func(t *testing.T) {
				n := newNixClientOf(t, v, hostOf(srv.URL), token)
				c := buildClosure(t, n, 1024)
				out, err := n.try("nix", "copy", "--to", srv.URL, c.Top)
				if err == nil {
					t.Fatalf("nix copy without a valid token succeeded: %s", out)
				}
				if !strings.Contains(err.Error(), "401") {
					t.Errorf("nix copy error does not mention 401: %v", err)
				}
				for _, p := range []string{c.Top, c.Dep} {
					hash := strings.SplitN(strings.TrimPrefix(p, "/nix/store/"), "-", 2)[0]
					resp, err := http.Get(srv.URL + "/" + hash + ".narinfo")
					if err != nil {
						t.Fatal(err)
					}
					resp.Body.Close()
					if resp.StatusCode != http.StatusNotFound {
						t.Errorf("%s.narinfo: status %d after a refused upload, want 404", hash, resp.StatusCode)
					}
				}
				entries, _ := os.ReadDir(srv.data + "/store/nar")
				if len(entries) != 0 {
					t.Errorf("refused upload left %d NAR files", len(entries))
				}
			})
		}
	})
}

// TestRestartKeepsEverything uploads, restarts the server on the same data, and substitutes.
func TestRestartKeepsEverything(t *testing.T) {
	requireNix(t)
	data := t.TempDir()
	srv := startServer(t, data)
	n := newNixClient(t, hostOf(srv.URL), srv.Token)
	c := buildClosure(t, n, 1<<20)
	n.run("nix", "copy", "--to", srv.URL+"?compression=zstd", c.Top)
	pk := srv.PublicKey
	srv.Stop()

	srv2 := startServer(t, data)
	if srv2.PublicKey != pk {
		t.Fatalf("public key changed across restart: %s -> %s", pk, srv2.PublicKey)
	}
	if strings.Contains(srv2.stderr.String(), "reindexing") {
		t.Errorf("a clean restart reindexed:\n%s", srv2.stderr.String())
	}
	n.run("nix", "store", "verify", "--store", srv2.URL, "--trusted-public-keys", pk, "-r", c.Top)
	substituteFresh(t, n, srv2.URL, pk, c)
}

func get(t *testing.T, url string) (int, string) {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}
