package push

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"sort"
	"strings"

	"github.com/cached-dev/cached/internal/narinfo"
)

// PathInfo is what the local store knows of one store path.
type PathInfo struct {
	Path       string   // "/nix/store/<hash>-<name>"
	NarHash    string   // as the store gives it (SRI "sha256-..." on Nix 2.8)
	NarSize    uint64   //
	References []string // full store paths
	Deriver    string   // full store path, "" if unknown
	Signatures []string // "keyname:base64": the uploader's signatures, kept in the narinfo
	CA         string   // content address, "" if input-addressed
}

// hashPart is the path's lookup key in a binary cache.
func (p PathInfo) hashPart() string {
	_, h, _, _ := narinfo.ParseStorePath(p.Path)
	return h
}

// StorePathOf resolves a command-line argument to the store path it is, is inside of, or
// points to through symlinks (a ./result link, a profile): symlinks are followed one at a time
// until the path is inside storeDir, so that a link inside the store is not followed out of the
// path it belongs to. The store path need not be valid; PathInfos checks that.
func StorePathOf(arg, storeDir string) (string, error) {
	p, err := filepath.Abs(arg)
	if err != nil {
		return "", fmt.Errorf("%s: %w", arg, err)
	}
	for range 40 {
		if sp, ok := inStore(p, storeDir); ok {
			return sp, nil
		}
		if strings.HasPrefix(p, storeDir+"/") {
			return "", fmt.Errorf("%s: %s is in %s but is not a store path (<hash>-<name>)", arg, p, storeDir)
		}
		// The directory may itself be a symlink (or lie behind one); the last element is
		// followed one step at a time.
		dir, err := filepath.EvalSymlinks(filepath.Dir(p))
		if err != nil {
			return "", fmt.Errorf("%s: %w", arg, err)
		}
		p = filepath.Join(dir, filepath.Base(p))
		if sp, ok := inStore(p, storeDir); ok {
			return sp, nil
		}
		fi, err := os.Lstat(p)
		if err != nil {
			return "", fmt.Errorf("%s: %w", arg, err)
		}
		if fi.Mode()&os.ModeSymlink == 0 {
			return "", fmt.Errorf("%s is not in %s and is not a symlink to it (give a store path or a result link)", arg, storeDir)
		}
		target, err := os.Readlink(p)
		if err != nil {
			return "", fmt.Errorf("%s: %w", arg, err)
		}
		if !filepath.IsAbs(target) {
			target = filepath.Join(filepath.Dir(p), target)
		}
		p = filepath.Clean(target)
	}
	return "", fmt.Errorf("%s: too many levels of symlinks", arg)
}

// inStore returns the store path that p is or is inside of.
func inStore(p, storeDir string) (string, bool) {
	rest, ok := strings.CutPrefix(p, storeDir+"/")
	if !ok || rest == "" {
		return "", false
	}
	base, _, _ := strings.Cut(rest, "/")
	sp := storeDir + "/" + base
	if _, _, _, err := narinfo.ParseStorePath(sp); err != nil {
		return "", false
	}
	return sp, true
}

// Nix runs the nix CLI to read the local store.
type Nix struct {
	// Bin is the nix binary ("nix" from PATH if empty); nix-store is looked up beside it.
	Bin string
	// Store, if not "", is passed as --store to every command: a chroot store's root
	// directory, or a store URI.
	Store string
}

func (n Nix) bin() string {
	if n.Bin == "" {
		return "nix"
	}
	return n.Bin
}

func (n Nix) storeBin() string {
	if n.Bin == "" || !strings.ContainsRune(n.Bin, '/') {
		return "nix-store"
	}
	return filepath.Join(filepath.Dir(n.Bin), "nix-store")
}

// ErrInvalidPaths names store paths that are not valid in the local store.
type ErrInvalidPaths []string

func (e ErrInvalidPaths) Error() string {
	return fmt.Sprintf("not in the local store (or not valid): %s", strings.Join(e, ", "))
}

// Closure returns the path infos of the closures of paths (store paths), each path once, sorted
// by path. A path that is not valid in the local store is an ErrInvalidPaths: nix path-info
// would otherwise try to substitute or build it.
func (n Nix) Closure(ctx context.Context, paths []string) ([]PathInfo, error) {
	if len(paths) == 0 {
		return nil, nil
	}
	out, err := n.run(ctx, n.storeBin(), append([]string{"--check-validity", "--print-invalid"}, paths...)...)
	if err != nil {
		return nil, err
	}
	if invalid := strings.Fields(string(out)); len(invalid) > 0 {
		return nil, ErrInvalidPaths(invalid)
	}
	out, err = n.run(ctx, n.bin(), append([]string{"--extra-experimental-features", "nix-command", "path-info", "--json", "-r"}, paths...)...)
	if err != nil {
		return nil, err
	}
	return ParsePathInfoJSON(out)
}

func (n Nix) run(ctx context.Context, bin string, args ...string) ([]byte, error) {
	if n.Store != "" {
		args = append([]string{"--store", n.Store}, args...)
	}
	cmd := exec.CommandContext(ctx, bin, args...)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		msg := strings.TrimSpace(stderr.String())
		if len(msg) > 2000 {
			msg = msg[len(msg)-2000:]
		}
		return nil, fmt.Errorf("%s %s: %w: %s", bin, strings.Join(args[:min(len(args), 4)], " "), err, msg)
	}
	return out, nil
}

// pathInfoJSON is one path in `nix path-info --json` output.
type pathInfoJSON struct {
	Path       string   `json:"path"`
	NarHash    string   `json:"narHash"`
	NarSize    uint64   `json:"narSize"`
	References []string `json:"references"`
	Deriver    *string  `json:"deriver"`
	Signatures []string `json:"signatures"`
	CA         *string  `json:"ca"`
	Valid      *bool    `json:"valid"`
}

// ParsePathInfoJSON reads `nix path-info --json` output: a list of objects with "path" (Nix up
// to 2.18, 2.8 included), or an object keyed by store path (newer Nix), whose values are null
// for invalid paths. Every path must have a narHash, a narSize and well-formed store paths.
func ParsePathInfoJSON(data []byte) ([]PathInfo, error) {
	var list []pathInfoJSON
	trimmed := bytes.TrimSpace(data)
	switch {
	case bytes.HasPrefix(trimmed, []byte("[")):
		if err := json.Unmarshal(trimmed, &list); err != nil {
			return nil, fmt.Errorf("nix path-info --json: %w", err)
		}
	case bytes.HasPrefix(trimmed, []byte("{")):
		var m map[string]*pathInfoJSON
		if err := json.Unmarshal(trimmed, &m); err != nil {
			return nil, fmt.Errorf("nix path-info --json: %w", err)
		}
		for p, v := range m {
			if v == nil {
				return nil, ErrInvalidPaths{p}
			}
			v.Path = p
			list = append(list, *v)
		}
	default:
		return nil, errors.New("nix path-info --json: output is neither a JSON list nor an object")
	}
	infos := make([]PathInfo, 0, len(list))
	seen := map[string]bool{}
	var invalid ErrInvalidPaths
	for _, j := range list {
		if j.Valid != nil && !*j.Valid {
			invalid = append(invalid, j.Path)
			continue
		}
		if seen[j.Path] {
			continue
		}
		seen[j.Path] = true
		info, err := j.info()
		if err != nil {
			return nil, err
		}
		infos = append(infos, info)
	}
	if len(invalid) > 0 {
		return nil, invalid
	}
	sort.Slice(infos, func(i, j int) bool { return infos[i].Path < infos[j].Path })
	return infos, nil
}

func (j pathInfoJSON) info() (PathInfo, error) {
	if _, _, _, err := narinfo.ParseStorePath(j.Path); err != nil {
		return PathInfo{}, fmt.Errorf("nix path-info: path %q: %w", j.Path, err)
	}
	if _, err := narinfo.ParseHash(j.NarHash); err != nil {
		return PathInfo{}, fmt.Errorf("nix path-info: %s: narHash %q: %w", j.Path, j.NarHash, err)
	}
	if j.NarSize == 0 {
		return PathInfo{}, fmt.Errorf("nix path-info: %s: narSize is missing or 0", j.Path)
	}
	info := PathInfo{Path: j.Path, NarHash: j.NarHash, NarSize: j.NarSize, Signatures: j.Signatures}
	for _, r := range j.References {
		// Newer Nix may list references as basenames.
		if !strings.HasPrefix(r, "/") {
			r = filepath.Dir(j.Path) + "/" + r
		}
		if _, _, _, err := narinfo.ParseStorePath(r); err != nil {
			return PathInfo{}, fmt.Errorf("nix path-info: %s: reference %q: %w", j.Path, r, err)
		}
		info.References = append(info.References, r)
	}
	if j.Deriver != nil && *j.Deriver != "" {
		d := *j.Deriver
		if !strings.HasPrefix(d, "/") {
			d = filepath.Dir(j.Path) + "/" + d
		}
		info.Deriver = d
	}
	if j.CA != nil {
		info.CA = *j.CA
	}
	return info, nil
}

// AllValid lists every valid path of the store (nix path-info --all).
func (n Nix) AllValid(ctx context.Context) ([]string, error) {
	out, err := n.run(ctx, n.bin(), "--extra-experimental-features", "nix-command", "path-info", "--all")
	if err != nil {
		return nil, err
	}
	paths := strings.Fields(string(out))
	for _, p := range paths {
		if _, _, _, err := narinfo.ParseStorePath(p); err != nil {
			return nil, fmt.Errorf("nix path-info --all: %q: %w", p, err)
		}
	}
	return paths, nil
}

// Invalid returns those of paths (store paths) that are not valid in the store, in a few
// nix-store calls however many paths there are.
func (n Nix) Invalid(ctx context.Context, paths []string) ([]string, error) {
	var invalid []string
	for batch := range slices.Chunk(paths, 1000) {
		out, err := n.run(ctx, n.storeBin(), append([]string{"--check-validity", "--print-invalid"}, batch...)...)
		if err != nil {
			return nil, err
		}
		invalid = append(invalid, strings.Fields(string(out))...)
	}
	return invalid, nil
}

// Outputs lists the output paths of derivations (store paths ending in .drv).
func (n Nix) Outputs(ctx context.Context, drvs []string) ([]string, error) {
	if len(drvs) == 0 {
		return nil, nil
	}
	out, err := n.run(ctx, n.storeBin(), append([]string{"--query", "--outputs"}, drvs...)...)
	if err != nil {
		return nil, err
	}
	return strings.Fields(string(out)), nil
}
