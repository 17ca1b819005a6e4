package narinfo

import (
	"errors"
	"fmt"
	"strings"

	"github.com/nix-community/go-nix/pkg/nixbase32"
)

const (
	// StoreDir is the only store directory a cache serves: clients refuse a cache whose
	// StoreDir differs from their own, and every client we serve uses /nix/store.
	StoreDir = "/nix/store"

	// HashPartLen is the length of the hash part of a store path (160 bits in nix32).
	HashPartLen = 32

	// maxNameLen is the longest name Nix allows after "<hash>-".
	maxNameLen = 211
)

// ValidHashPart reports whether s is a store path hash part: 32 characters of Nix's base-32
// alphabet. It is the lookup key for narinfos, so it must be checked before it reaches storage.
func ValidHashPart(s string) bool {
	if len(s) != HashPartLen {
		return false
	}
	for i := 0; i < len(s); i++ {
		if !nixbase32.Is(s[i]) {
			return false
		}
	}
	return true
}

// ParseStorePath splits "/nix/store/<hash>-<name>" into its store directory, hash part and
// name. Any absolute directory is accepted here (callers compare it with StoreDir), but it must
// be in the clean form Nix prints, since the path is signed as a string.
func ParseStorePath(p string) (dir, hashPart, name string, err error) {
	i := strings.LastIndexByte(p, '/')
	if i < 0 {
		return "", "", "", fmt.Errorf("store path %s is not absolute", quote(p))
	}
	dir = p[:i]
	if !cleanDir(dir) {
		return "", "", "", fmt.Errorf("store path %s: bad store directory", quote(p))
	}
	hashPart, name, err = ParseBaseName(p[i+1:])
	if err != nil {
		return "", "", "", fmt.Errorf("store path %s: %w", quote(p), err)
	}
	return dir, hashPart, name, nil
}

// cleanDir reports whether dir is absolute, has no trailing slash and no empty, "." or ".."
// element.
func cleanDir(dir string) bool {
	if len(dir) < 2 || dir[0] != '/' {
		return false
	}
	for _, elem := range strings.Split(dir[1:], "/") {
		if elem == "" || elem == "." || elem == ".." {
			return false
		}
	}
	return true
}

// ParseBaseName splits a store path's last element, "<hash>-<name>", as narinfos write
// References and Deriver.
func ParseBaseName(b string) (hashPart, name string, err error) {
	if len(b) < HashPartLen+2 || b[HashPartLen] != '-' {
		return "", "", fmt.Errorf("base name %s is not <hash>-<name>", quote(b))
	}
	hashPart, name = b[:HashPartLen], b[HashPartLen+1:]
	if !ValidHashPart(hashPart) {
		return "", "", fmt.Errorf("base name %s: hash part is not %d characters of nix32", quote(b), HashPartLen)
	}
	if err := checkName(name); err != nil {
		return "", "", fmt.Errorf("base name %s: %w", quote(b), err)
	}
	return hashPart, name, nil
}

func checkName(name string) error {
	switch {
	case name == "":
		return errors.New("empty name")
	case len(name) > maxNameLen:
		return fmt.Errorf("name longer than %d characters", maxNameLen)
	case name[0] == '.':
		// Newer Nix refuses these so that "." and ".." can never be store paths.
		return errors.New("name starts with '.'")
	}
	for i := 0; i < len(name); i++ {
		if !nameChar(name[i]) {
			return fmt.Errorf("illegal character %q in name", name[i])
		}
	}
	return nil
}

func nameChar(c byte) bool {
	switch {
	case 'a' <= c && c <= 'z', 'A' <= c && c <= 'Z', '0' <= c && c <= '9':
		return true
	}
	return strings.IndexByte("+-._?=", c) >= 0
}
