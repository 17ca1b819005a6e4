package cache

import (
	"fmt"
	"strings"

	"github.com/cached-dev/cached/internal/narinfo"
	"github.com/nix-community/go-nix/pkg/nixbase32"
)

// Compressions maps a narinfo Compression value to the file extension Nix gives the NAR
// ("nar/<filehash>.nar<ext>"), as libstore's binary cache store does.
var compressionExt = map[string]string{
	"none":  "",
	"xz":    ".xz",
	"zstd":  ".zst",
	"bzip2": ".bz2",
	"br":    ".br",
}

// NarName is a parsed NAR object name.
type NarName struct {
	Name        string // "nar/<filehash>.nar.xz"
	FileHash    string // nix32 sha256 of the file, as named
	Compression string // "xz", "zstd", "bzip2", "br" or "none"
}

// ParseNarName parses "nar/<52 nix32 chars>.nar[.xz|.zst|.bz2|.br]".
func ParseNarName(name string) (NarName, error) {
	rest, ok := strings.CutPrefix(name, "nar/")
	if !ok {
		return NarName{}, fmt.Errorf("NAR name %q does not start with nar/", truncate(name))
	}
	dot := strings.IndexByte(rest, '.')
	if dot < 0 {
		return NarName{}, fmt.Errorf("NAR name %q has no .nar extension", truncate(name))
	}
	hash, ext := rest[:dot], rest[dot:]
	if len(hash) != 52 || nixbase32.ValidateString(hash) != nil {
		return NarName{}, fmt.Errorf("NAR name %q: %q is not a sha256 hash in Nix base-32", truncate(name), truncate(hash))
	}
	ext, ok = strings.CutPrefix(ext, ".nar")
	if !ok {
		return NarName{}, fmt.Errorf("NAR name %q has no .nar extension", truncate(name))
	}
	for comp, e := range compressionExt {
		if e == ext {
			return NarName{Name: name, FileHash: hash, Compression: comp}, nil
		}
	}
	return NarName{}, fmt.Errorf("NAR name %q: unsupported compression extension %q", truncate(name), ext)
}

// NarObjectName is the object name of a NAR with the given file hash and compression.
func NarObjectName(fileHash narinfo.Hash, compression string) string {
	return "nar/" + nixbase32.EncodeToString(fileHash.Digest) + ".nar" + compressionExt[compression]
}

// ValidStoreHash reports whether s is the hash part of a store path (32 Nix base-32 characters).
func ValidStoreHash(s string) bool { return narinfo.ValidHashPart(s) }

func truncate(s string) string {
	if len(s) > 100 {
		return s[:100] + "..."
	}
	return s
}

// NarInfoCompression is the compression a narinfo declares: without a Compression line, Nix
// takes it for bzip2.
func NarInfoCompression(ni *narinfo.NarInfo) string {
	if ni.Compression == "" {
		return "bzip2"
	}
	return ni.Compression
}
