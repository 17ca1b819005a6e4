package e2e

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"syscall"
	"testing"
)

// The real clients the end-to-end tests drive: the host's nix (Debian 12's nix-bin, Nix 2.8) and
// Debian 13's nix-bin (Nix 2.26) in a Debian 13 chroot, which test.sh provisions and exports as
// CACHED_NIX2_ROOT. Both talk to the server on 127.0.0.1 (a chroot shares the network). Each
// has its own /nix/store: a path one built is compared with the other's copy through hostPath.

// nixVersion is one way to run nix, nix-store and nix-build.
type nixVersion struct {
	Name string // the subtest name
	root string // the chroot it runs in; empty for the host's nix
}

var (
	hostNix   = nixVersion{Name: "nix-2.8"}
	chrootNix = nixVersion{Name: "nix-2.26", root: nix2Root()}
)

// defaultNix2Root is where test.sh provisions the chroot unless CACHED_NIX2_ROOT says otherwise.
const defaultNix2Root = "/var/cache/cached-test/trixie"

func nix2Root() string {
	if r := os.Getenv("CACHED_NIX2_ROOT"); r != "" {
		return r
	}
	return defaultNix2Root
}

// nixVersions is every client, the host's first.
func nixVersions() []nixVersion { return []nixVersion{hostNix, chrootNix} }

// forEachNix runs f as a subtest per client. A client that is not installed skips its subtest,
// or fails it under CI=true.
func forEachNix(t *testing.T, f func(t *testing.T, v nixVersion)) {
	t.Helper()
	for _, v := range nixVersions() {
		t.Run(v.Name, func(t *testing.T) {
			v.require(t)
			f(t, v)
		})
	}
}

// require fails the test under CI=true when this client cannot run, and skips it otherwise.
func (v nixVersion) require(t *testing.T) {
	t.Helper()
	if v.root == "" {
		requireNix(t)
		return
	}
	if err := chrootReady(v.root); err != nil {
		msg := fmt.Sprintf("%s in the chroot %s: %v (./test.sh provisions it; CACHED_NIX2_ROOT moves it)", v.Name, v.root, err)
		if os.Getenv("CI") == "true" {
			t.Fatal(msg + "; CI=true makes this a failure")
		}
		t.Skip(msg + "; under CI=true this fails")
	}
}

var (
	chrootOnce sync.Once
	chrootErr  error
)

// chrootReady checks once that nix runs in root and can build there (a build needs /dev/pts).
func chrootReady(root string) error {
	chrootOnce.Do(func() {
		if os.Geteuid() != 0 {
			chrootErr = errors.New("running nix in a chroot needs root")
			return
		}
		if _, err := os.Stat(root + "/usr/bin/nix"); err != nil {
			chrootErr = fmt.Errorf("no nix there: %w", err)
			return
		}
		for _, p := range []string{"/proc/self", "/dev/null", "/dev/pts/ptmx"} {
			if _, err := os.Stat(root + p); err != nil {
				chrootErr = fmt.Errorf("%s is not mounted: %w", filepath.Dir(root+p), err)
				return
			}
		}
		out, err := exec.Command("chroot", root, "/usr/bin/env", "-i", "PATH=/usr/bin:/bin", "HOME=/root", "nix", "--version").CombinedOutput()
		if err != nil {
			chrootErr = fmt.Errorf("nix --version: %v: %s", err, strings.TrimSpace(string(out)))
		}
	})
	return chrootErr
}

// chrootEnv is the command prefix that runs a command in the chroot with a clean environment and
// the nix settings of env (NIX_CONFIG, cache directories, certificates; their paths are under the
// client's work directory, which the chroot shares).
func chrootEnv(env []string) []string {
	args := []string{"/usr/bin/env", "-i", "PATH=/usr/bin:/bin", "HOME=/root"}
	for _, e := range env {
		if strings.HasPrefix(e, "NIX_") || strings.HasPrefix(e, "XDG_") || strings.HasPrefix(e, "SSL_CERT_") {
			args = append(args, e)
		}
	}
	return args
}

// bindIntoChroot makes dir visible at the same path inside root until the end of t. Only the
// directories it creates for the mount point are removed again, and only when empty.
func bindIntoChroot(t *testing.T, root, dir string) {
	t.Helper()
	target := root + dir
	var created []string
	for p := target; p != root && p != "/"; p = filepath.Dir(p) {
		if _, err := os.Stat(p); err == nil {
			break
		}
		created = append(created, p)
	}
	if err := os.MkdirAll(target, 0o755); err != nil {
		t.Fatalf("mount point in the chroot: %v", err)
	}
	t.Cleanup(func() {
		for _, p := range created { // deepest first; rmdir never removes a non-empty directory
			os.Remove(p)
		}
	})
	if err := syscall.Mount(dir, target, "", syscall.MS_BIND, ""); err != nil {
		t.Fatalf("bind-mounting %s into the chroot at %s: %v", dir, target, err)
	}
	t.Cleanup(func() {
		if err := syscall.Unmount(target, 0); err != nil {
			// Busy (a nix process that outlived its test): detach it; it goes when unused.
			if err := syscall.Unmount(target, syscall.MNT_DETACH); err != nil {
				t.Errorf("unmounting %s: %v", target, err)
			}
		}
	})
}

// storeInfoArgs is the command that checks a store answers: "nix store ping" is "nix store info"
// since 2.19 (ping still works there, with a deprecation warning).
func storeInfoArgs(n *nixClient) []string {
	if n.root == "" {
		return []string{"nix", "store", "ping"}
	}
	return []string{"nix", "store", "info"}
}

// pathInfo is one path of `nix path-info --json` as both versions print it.
type pathInfo struct {
	Path        string   `json:"path"`
	NarSize     int64    `json:"narSize"`
	References  []string `json:"references"`
	Signatures  []string `json:"signatures"`
	URL         string   `json:"url"`
	Compression string   `json:"compression"`
}

// pathInfos runs `nix path-info --json` with args and decodes either shape: Nix 2.8 prints a
// list of objects with a "path" field, Nix ≥ 2.19 an object keyed by store path (null for a path
// the store does not have).
func pathInfos(t *testing.T, n *nixClient, args ...string) []pathInfo {
	t.Helper()
	out := n.run(append([]string{"nix", "path-info", "--json"}, args...)...)
	var infos []pathInfo
	trimmed := strings.TrimSpace(out)
	switch {
	case strings.HasPrefix(trimmed, "["):
		if err := json.Unmarshal([]byte(trimmed), &infos); err != nil {
			t.Fatalf("path-info json list: %v\n%s", err, out)
		}
	case strings.HasPrefix(trimmed, "{"):
		var byPath map[string]*pathInfo
		if err := json.Unmarshal([]byte(trimmed), &byPath); err != nil {
			t.Fatalf("path-info json object: %v\n%s", err, out)
		}
		for p, in := range byPath {
			if in == nil {
				t.Fatalf("path-info: %s is not valid in the store\n%s", p, out)
			}
			in.Path = p
			infos = append(infos, *in)
		}
		sort.Slice(infos, func(i, j int) bool { return infos[i].Path < infos[j].Path })
	default:
		t.Fatalf("path-info printed neither a JSON list nor an object:\n%s", out)
	}
	return infos
}
