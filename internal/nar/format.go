package nar

import (
	"strconv"
	"unicode/utf8"
)

// Wire-format keywords.
const (
	magic = "nix-archive-1"

	tokOpen       = "("
	tokClose      = ")"
	tokType       = "type"
	tokRegular    = "regular"
	tokSymlink    = "symlink"
	tokDirectory  = "directory"
	tokExecutable = "executable"
	tokContents   = "contents"
	tokTarget     = "target"
	tokEntry      = "entry"
	tokName       = "name"
	tokNode       = "node"
)

// Limits. Names and targets follow the usual Linux NAME_MAX and PATH_MAX
// (minus the terminating NUL); anything longer could not be unpacked.
const (
	maxNameLen   = 255
	maxTargetLen = 4095
	// maxPathLen bounds the path of a node inside the NAR, entry names joined with "/": what a
	// file system call takes (PATH_MAX, NUL excluded), before the store path is even put in
	// front. It also bounds the memory the directory stack takes, which a deeply nested NAR
	// of a few KiB compressed could otherwise make gigabytes.
	maxPathLen = 4095
	// maxKeywordLen bounds tokens where only a keyword may appear, so a
	// hostile length prefix there is rejected before anything is read.
	// The longest keyword, the magic, is 13 bytes.
	maxKeywordLen = 16
)

// EntryType is the kind of a NAR node.
type EntryType int

// Node kinds.
const (
	TypeRegular EntryType = iota
	TypeDirectory
	TypeSymlink
)

// String returns the name the NAR format uses for t.
func (t EntryType) String() string {
	switch t {
	case TypeRegular:
		return tokRegular
	case TypeDirectory:
		return tokDirectory
	case TypeSymlink:
		return tokSymlink
	}
	return "EntryType(" + strconv.Itoa(int(t)) + ")"
}

// Entry describes one node of a NAR.
type Entry struct {
	Path       string // "" for the root, otherwise "a/b/c" (no leading slash)
	Type       EntryType
	Executable bool   // regular files only
	Size       int64  // regular files: content length
	Offset     int64  // regular files: byte offset of the contents within the NAR stream
	Target     string // symlinks
}

// nameProblem reports why name cannot be a directory entry name, or ""
// if it can. Such names would let an unpacked NAR escape its directory
// or could not exist on a real filesystem.
func nameProblem[T string | []byte](name T) string {
	switch {
	case len(name) == 0:
		return "empty name"
	case string(name) == "." || string(name) == "..":
		return "reserved name"
	case len(name) > maxNameLen:
		return "name longer than " + strconv.Itoa(maxNameLen) + " bytes"
	}
	for i := 0; i < len(name); i++ {
		switch name[i] {
		case '/':
			return "name contains '/'"
		case 0:
			return "name contains NUL"
		}
	}
	return ""
}

// targetProblem is nameProblem for symlink targets.
func targetProblem[T string | []byte](target T) string {
	switch {
	case len(target) == 0:
		return "empty symlink target"
	case len(target) > maxTargetLen:
		return "symlink target longer than " + strconv.Itoa(maxTargetLen) + " bytes"
	}
	for i := 0; i < len(target); i++ {
		if target[i] == 0 {
			return "symlink target contains NUL"
		}
	}
	return ""
}

// padding returns the number of zero bytes that follow n bytes of data.
func padding(n uint64) int { return int(-n & 7) }

// quote quotes a name for an error message; names are arbitrary bytes.
func quote[T string | []byte](s T) string {
	const max = 64
	if len(s) > max {
		return strconv.Quote(string(s[:max])) + "..."
	}
	return strconv.Quote(string(s))
}

// where describes a node path in error messages. Deep paths keep their
// end, which is the informative part.
func where[T string | []byte](path T) string {
	const max = 256
	switch {
	case len(path) == 0:
		return "the root"
	case len(path) > max:
		return "..." + strconv.Quote(string(path[len(path)-max:]))
	}
	return strconv.Quote(string(path))
}

// appendJSONString appends s as a JSON string. Names need not be valid
// UTF-8; invalid bytes become U+FFFD, as encoding/json does.
func appendJSONString(dst []byte, s string) []byte {
	const hex = "0123456789abcdef"
	dst = append(dst, '"')
	for i := 0; i < len(s); {
		c := s[i]
		if c < utf8.RuneSelf {
			switch {
			case c == '"' || c == '\\':
				dst = append(dst, '\\', c)
			case c < 0x20:
				dst = append(dst, '\\', 'u', '0', '0', hex[c>>4], hex[c&0xf])
			default:
				dst = append(dst, c)
			}
			i++
			continue
		}
		r, size := utf8.DecodeRuneInString(s[i:])
		if r == utf8.RuneError && size == 1 {
			dst = append(dst, `\ufffd`...)
		} else {
			dst = append(dst, s[i:i+size]...)
		}
		i += size
	}
	return append(dst, '"')
}
