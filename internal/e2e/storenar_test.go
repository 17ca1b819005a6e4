package e2e

import (
	"io"
	"net"
	"net/http"
	"path"
	"strings"
	"testing"

	"github.com/cached-dev/cached/internal/narinfo"
	"github.com/nix-community/go-nix/pkg/nixbase32"
)

// TestTakingOverFromNixServe: cached takes over the address of a nix-serve or harmonia that
// served the same paths. Clients keep the narinfos they read for a month
// (narinfo-cache-positive-ttl), and those name each NAR by its store path, uncompressed:
// nix-serve's "URL: nar/<store hash>-<NarHash>.nar", harmonia's "URL:
// nar/<NarHash>.nar?hash=<store hash>". A client substitutes with those narinfos, into a fresh
// store with signatures required, and cached must answer the NAR URLs they name. With each
// client; the top path of the closure has nix-serve's form, its dependency harmonia's.
//
// Neither nix-serve nor harmonia runs here, so a stand-in serves, before cached takes over,
// the narinfos they write: cached's own, with the URL and Compression those servers give (the
// signatures stay valid: they do not cover either).
func TestTakingOverFromNixServe(t *testing.T) {
	forEachNix(t, takingOverFromNixServe)
}

func takingOverFromNixServe(t *testing.T, v nixVersion) {
	data := t.TempDir()
	srv := startServer(t, data)
	up := newNixClientOf(t, v, hostOf(srv.URL), srv.Token)
	c := buildClosure(t, up, 256<<10)
	up.run("nix", "copy", "--to", srv.URL, c.Top) // the paths cached will serve, stored as zstd
	// The client of the previous server (not the uploader, which keeps the narinfos it uploaded),
	// with nix's own narinfo cache TTLs, as a user has them.
	n := newNixClientOf(t, v, hostOf(srv.URL), "")
	for i, e := range n.env {
		if conf, ok := strings.CutPrefix(e, "NIX_CONFIG="); ok {
			conf = strings.ReplaceAll(conf, "narinfo-cache-negative-ttl = 0", "")
			n.env[i] = "NIX_CONFIG=" + strings.ReplaceAll(conf, "narinfo-cache-positive-ttl = 0", "")
		}
	}

	// The narinfos the previous server wrote.
	previous := map[string]string{}
	var topNar, depNar string
	for _, p := range []string{c.Top, c.Dep} {
		hash := path.Base(p)[:32]
		resp, err := http.Get(srv.URL + "/" + hash + ".narinfo")
		if err != nil {
			t.Fatal(err)
		}
		text, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		ni, err := narinfo.Parse(text)
		if err != nil {
			t.Fatalf("narinfo of %s: %v\n%s", p, err, text)
		}
		narHash := nixbase32.EncodeToString(ni.NarHash.Digest)
		ni.Compression = "none"
		if p == c.Top { // nix-serve
			ni.URL = "nar/" + hash + "-" + narHash + ".nar"
			ni.FileHash, ni.FileSize = narinfo.Hash{}, 0
			topNar = "/" + ni.URL
		} else { // harmonia
			ni.URL = "nar/" + narHash + ".nar?hash=" + hash
			ni.FileHash, ni.FileSize = ni.NarHash, ni.NarSize
			depNar = "/nar/" + narHash + ".nar"
		}
		previous["/"+hash+".narinfo"] = string(ni.Bytes())
	}

	// The previous server, at the address cached will take over; the client reads the
	// closure's narinfos from it and keeps them.
	addr := strings.TrimPrefix(srv.URL, "http://")
	srv.Stop()
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		t.Fatalf("the stand-in cannot listen where cached was: %v", err)
	}
	stand := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/nix-cache-info" {
			io.WriteString(w, "StoreDir: /nix/store\nWantMassQuery: 1\nPriority: 30\n")
			return
		}
		if text, ok := previous[r.URL.Path]; ok {
			w.Header().Set("Content-Type", "text/x-nix-narinfo")
			io.WriteString(w, text)
			return
		}
		http.NotFound(w, r)
	})}
	t.Cleanup(func() { stand.Close() })
	go stand.Serve(ln)
	infos := pathInfos(t, n, "--store", srv.URL, "-r", c.Top)
	stand.Close()
	if len(infos) != 2 || !strings.Contains(infos[0].URL+infos[1].URL, "?hash=") {
		t.Fatalf("the client read %+v from the stand-in, want its 2 narinfos", infos)
	}

	srv = startServer(t, data, "--listen", addr)
	substituteFreshFrom(t, n, srv.URL, srv.PublicKey, c, up)
	srv.Stop() // its access log is complete once it has stopped
	log := srv.stderr.String()
	for _, p := range []string{topNar, depNar} {
		if !strings.Contains(log, p) {
			t.Errorf("cached was never asked for %s: nix did not use the narinfos it kept, and this test no longer shows the case it is about\n%s", p, tail(log, 20))
		}
	}
}
