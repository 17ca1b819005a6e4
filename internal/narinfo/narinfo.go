package narinfo

import (
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"
)

// MaxSize is the largest narinfo Parse reads. Real ones are well under 100 KiB even with
// thousands of references; the limit bounds what an uploader can make us hold and index.
const MaxSize = 1 << 20

// NarInfo is the metadata of one store path in a binary cache.
type NarInfo struct {
	StorePath   string   // "/nix/store/<hash>-<name>"
	URL         string   // where the NAR is, relative to the cache root: "nar/<filehash>.nar.xz"
	Compression string   // as written; "" if the line was missing (clients then assume bzip2)
	FileHash    Hash     // hash of the file at URL; zero if missing
	FileSize    uint64   // size of the file at URL; 0 if missing
	NarHash     Hash     // sha256 of the uncompressed NAR
	NarSize     uint64   // size of the uncompressed NAR, > 0
	References  []string // basenames "<hash>-<name>", as written
	Deriver     string   // basename, "" if missing
	System      string
	Sigs        []string // "keyname:base64", as written
	CA          string   // content address, "" if not content-addressed
}

// Parse reads a narinfo. It is strict where the Nix client is strict, so that nothing it accepts
// makes a client fail later: every line is "Key: value\n", StorePath, URL, NarHash and a
// non-zero NarSize are required, single-valued keys appear at most once, store paths, hashes,
// sizes, signatures and content addresses must be well formed. It is lenient where the client is
// lenient: unknown keys are ignored, so newer writers keep working.
//
// Errors name the field and the offending value, e.g.
// `narinfo: NarHash: invalid hash "sha256:xyz": ...`.
func Parse(data []byte) (*NarInfo, error) {
	if len(data) > MaxSize {
		return nil, fmt.Errorf("narinfo: larger than %d bytes", MaxSize)
	}
	// One conversion up front: the fields are substrings of it, not one allocation per line.
	rest := string(data)
	ni := &NarInfo{}
	var seen uint16 // one bit per single-valued key
	for lineNo := 1; len(rest) > 0; lineNo++ {
		eol := strings.IndexByte(rest, '\n')
		if eol < 0 {
			return nil, fmt.Errorf("narinfo: line %d: missing final newline", lineNo)
		}
		line := rest[:eol]
		rest = rest[eol+1:]

		// Nix takes the key up to the first ':' and skips exactly one character after it;
		// requiring that character to be a space keeps us from reading what Nix would misread.
		colon := strings.IndexByte(line, ':')
		switch {
		case strings.IndexByte(line, '\r') >= 0:
			return nil, fmt.Errorf("narinfo: line %d: carriage return (CRLF line endings?)", lineNo)
		case colon <= 0 || colon+1 >= len(line) || line[colon+1] != ' ':
			return nil, fmt.Errorf("narinfo: line %d: %s is not \"Key: value\"", lineNo, quote(line))
		}
		key, value := line[:colon], line[colon+2:]

		bit, known := keyBits[key]
		if !known {
			continue // unknown keys are for newer readers, never an error
		}
		if bit != 0 {
			if seen&bit != 0 {
				return nil, fmt.Errorf("narinfo: line %d: duplicate %s", lineNo, key)
			}
			seen |= bit
		}
		if err := ni.set(key, value); err != nil {
			return nil, fmt.Errorf("narinfo: %s: %w", key, err)
		}
	}

	switch {
	case ni.StorePath == "":
		return nil, errors.New("narinfo: StorePath missing")
	case ni.URL == "":
		return nil, errors.New("narinfo: URL missing")
	case ni.NarHash.IsZero():
		return nil, errors.New("narinfo: NarHash missing")
	case ni.NarSize == 0:
		return nil, errors.New("narinfo: NarSize missing or zero")
	}
	return ni, nil
}

// keyBits lists the keys Parse understands; single-valued ones have a bit to catch repeats.
var keyBits = map[string]uint16{
	"StorePath":   1 << 0,
	"URL":         1 << 1,
	"Compression": 1 << 2,
	"FileHash":    1 << 3,
	"FileSize":    1 << 4,
	"NarHash":     1 << 5,
	"NarSize":     1 << 6,
	"References":  1 << 7,
	"Deriver":     1 << 8,
	"System":      1 << 9,
	"CA":          1 << 10,
	"Sig":         0,
}

// set validates one value and stores it in its field.
func (ni *NarInfo) set(key, value string) error {
	switch key {
	case "StorePath":
		dir, _, _, err := ParseStorePath(value)
		if err != nil {
			return err
		}
		if dir != StoreDir {
			return fmt.Errorf("%s is not in %s", quote(value), StoreDir)
		}
		ni.StorePath = value
	case "URL":
		ni.URL = value
	case "Compression":
		ni.Compression = value
	case "FileHash":
		h, err := parseSHA256(value)
		if err != nil {
			return err
		}
		ni.FileHash = h
	case "FileSize":
		n, err := parseSize(value)
		if err != nil {
			return err
		}
		ni.FileSize = n
	case "NarHash":
		h, err := parseSHA256(value)
		if err != nil {
			return err
		}
		ni.NarHash = h
	case "NarSize":
		n, err := parseSize(value)
		if err != nil {
			return err
		}
		ni.NarSize = n
	case "References":
		// Nix splits on single spaces and drops empty tokens; an empty list is "References: ".
		refs := strings.Split(value, " ")
		ni.References = refs[:0]
		for _, r := range refs {
			if r == "" {
				continue
			}
			if _, _, err := ParseBaseName(r); err != nil {
				return err
			}
			ni.References = append(ni.References, r)
		}
	case "Deriver":
		// Old Nix wrote this placeholder; Nix still reads it as "no deriver".
		if value == "unknown-deriver" {
			return nil
		}
		if _, _, err := ParseBaseName(value); err != nil {
			return err
		}
		ni.Deriver = value
	case "System":
		ni.System = value
	case "Sig":
		if err := checkSig(value); err != nil {
			return err
		}
		ni.Sigs = append(ni.Sigs, value)
	case "CA":
		if err := checkCA(value); err != nil {
			return err
		}
		ni.CA = value
	}
	return nil
}

// parseSHA256 parses a FileHash or NarHash. Nix reads any algorithm there but asserts sha256
// when it writes a narinfo, and NARs are verified with sha256, so nothing else is usable.
func parseSHA256(s string) (Hash, error) {
	h, err := ParseHash(s)
	if err != nil {
		return Hash{}, err
	}
	if h.Algo != "sha256" {
		return Hash{}, fmt.Errorf("hash %s is %s, want sha256", quote(s), h.Algo)
	}
	return h, nil
}

func parseSize(s string) (uint64, error) {
	n, err := strconv.ParseUint(s, 10, 64)
	if err != nil {
		return 0, fmt.Errorf("invalid size %s", quote(s))
	}
	return n, nil
}

// checkSig checks a "keyname:base64" ed25519 signature; Nix ≥ 2.34 rejects narinfos with
// anything else.
func checkSig(s string) error {
	name, b64, ok := strings.Cut(s, ":")
	if !ok || name == "" {
		return fmt.Errorf("signature %s is not keyname:base64", quote(s))
	}
	sig, err := decodeBase64(b64, false)
	if err != nil || len(sig) != 64 {
		return fmt.Errorf("signature %s is not 64 bytes of base64", quote(s))
	}
	return nil
}

// checkCA checks a content address as Nix parses it: "text:sha256:<hash>" or
// "fixed:[r:|git:]<algo>:<hash>", the hash without SRI form. Nix treats an empty value as none.
func checkCA(s string) error {
	if s == "" {
		return nil
	}
	rest, ok := strings.CutPrefix(s, "text:")
	if ok {
		if !strings.HasPrefix(rest, "sha256:") {
			return fmt.Errorf("content address %s: text hashes must be sha256", quote(s))
		}
	} else if rest, ok = strings.CutPrefix(s, "fixed:"); ok {
		if r, ok := strings.CutPrefix(rest, "r:"); ok {
			rest = r
		} else if r, ok := strings.CutPrefix(rest, "git:"); ok {
			rest = r
		}
	} else {
		return fmt.Errorf("content address %s does not start with \"text:\" or \"fixed:\"", quote(s))
	}
	if !strings.Contains(rest, ":") {
		return fmt.Errorf("content address %s: hash is not <algo>:<hash>", quote(s))
	}
	if _, err := ParseHash(rest); err != nil {
		return fmt.Errorf("content address %s: %w", quote(s), err)
	}
	return nil
}

// Bytes formats ni as Nix's NarInfo::to_string does, so that a narinfo Nix wrote comes back
// byte for byte: keys in Nix's order, "\n" after every line, hashes as "<algo>:<nix32>".
// Optional fields are left out when empty; References is always written, as "References: "
// when empty (checked against Nix 2.8). References and Sigs come out sorted and without
// duplicates because Nix holds them in sets: that is the order Nix writes and signs.
func (ni *NarInfo) Bytes() []byte {
	refs := sortedSet(ni.References)
	sigs := sortedSet(ni.Sigs)

	n := 256 + len(ni.StorePath) + len(ni.URL) + len(ni.Compression) + len(ni.Deriver) +
		len(ni.System) + len(ni.CA)
	for _, r := range refs {
		n += len(r) + 1
	}
	for _, s := range sigs {
		n += len(s) + 6
	}
	b := make([]byte, 0, n)

	b = appendLine(b, "StorePath: ", ni.StorePath)
	b = appendLine(b, "URL: ", ni.URL)
	if ni.Compression != "" {
		b = appendLine(b, "Compression: ", ni.Compression)
	}
	if !ni.FileHash.IsZero() {
		b = append(b, "FileHash: "...)
		b = append(ni.FileHash.appendTo(b), '\n')
	}
	if ni.FileSize != 0 {
		b = append(b, "FileSize: "...)
		b = append(strconv.AppendUint(b, ni.FileSize, 10), '\n')
	}
	b = append(b, "NarHash: "...)
	b = append(ni.NarHash.appendTo(b), '\n')
	b = append(b, "NarSize: "...)
	b = append(strconv.AppendUint(b, ni.NarSize, 10), '\n')
	b = append(b, "References: "...)
	for i, r := range refs {
		if i > 0 {
			b = append(b, ' ')
		}
		b = append(b, r...)
	}
	b = append(b, '\n')
	if ni.Deriver != "" {
		b = appendLine(b, "Deriver: ", ni.Deriver)
	}
	if ni.System != "" {
		b = appendLine(b, "System: ", ni.System)
	}
	for _, s := range sigs {
		b = appendLine(b, "Sig: ", s)
	}
	if ni.CA != "" {
		b = appendLine(b, "CA: ", ni.CA)
	}
	return b
}

func appendLine(b []byte, key, value string) []byte {
	b = append(b, key...)
	b = append(b, value...)
	return append(b, '\n')
}

// sortedSet returns s sorted and without duplicates, without touching s. Nix sorts these by
// plain byte comparison, as slices.Sort does for strings.
func sortedSet(s []string) []string {
	if slices.IsSorted(s) && !hasAdjacentDup(s) {
		return s
	}
	s = slices.Clone(s)
	slices.Sort(s)
	return slices.Compact(s)
}

func hasAdjacentDup(s []string) bool {
	for i := 1; i < len(s); i++ {
		if s[i] == s[i-1] {
			return true
		}
	}
	return false
}

// HashPart returns the hash part of StorePath, the key the narinfo is stored under, or "" if
// StorePath is not a valid store path.
func (ni *NarInfo) HashPart() string {
	_, h, _, err := ParseStorePath(ni.StorePath)
	if err != nil {
		return ""
	}
	return h
}

// Fingerprint returns the string that a narinfo's signatures sign:
// "1;<StorePath>;<NarHash>;<NarSize>;<references as full store paths, joined by ','>".
// As in Nix, references are sorted and deduplicated first, so the order they were written in
// does not matter. URL, Compression, FileHash and FileSize are not covered: recompressing a NAR
// keeps its signatures valid.
func (ni *NarInfo) Fingerprint() string {
	dir := StoreDir
	if i := strings.LastIndexByte(ni.StorePath, '/'); i > 0 {
		dir = ni.StorePath[:i]
	}
	refs := sortedSet(ni.References)

	n := 32 + len(ni.StorePath) + 120
	for _, r := range refs {
		n += len(dir) + len(r) + 2
	}
	b := make([]byte, 0, n)
	b = append(b, "1;"...)
	b = append(b, ni.StorePath...)
	b = append(b, ';')
	b = ni.NarHash.appendTo(b)
	b = append(b, ';')
	b = strconv.AppendUint(b, ni.NarSize, 10)
	b = append(b, ';')
	for i, r := range refs {
		if i > 0 {
			b = append(b, ',')
		}
		b = append(b, dir...)
		b = append(b, '/')
		b = append(b, r...)
	}
	return string(b)
}
