// Package journal lets servers that share a bucket (replicas) tell each other what they commit,
// so that a narinfo missing from a replica's index can be answered 404 from the index, without a
// request to the bucket.
//
// Each replica writes small immutable objects under journal/, named by the time they were
// written and by the writer, each holding a batch of records: "this narinfo was committed, here
// is its text" or "this narinfo was deleted". Every replica lists the recent ones once per poll
// interval (one LIST) and hands the other replicas' records to an Apply function. Old objects are
// expired, so the journal stays small.
//
// The package knows nothing of indexes or HTTP: what a record means for a cache is the caller's.
// The bucket stays the source of truth; the journal only says where to look, and a replica that
// cannot follow it must go back to asking the bucket.
package journal

import (
	"bytes"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/cached-dev/cached/internal/narinfo"
)

// Prefix is where journal objects live in the bucket. Plain nix never reads it.
const Prefix = "journal/"

// header starts every journal object; the number is the format's version.
const header = "cached-journal 1\n"

// MaxObjectSize bounds a journal object: a writer never writes a bigger one, and a follower
// reads no more of one.
const MaxObjectSize = 4 << 20

// maxNarInfoSize bounds one record's narinfo text (the bound the cache reads narinfos with).
const maxNarInfoSize = 1 << 20

// Op is what a record says happened to a narinfo.
type Op byte

const (
	Put    Op = '+' // committed; NarInfo holds the text stored in the bucket
	Delete Op = '-' // deleted from the bucket
)

// Record is one change to the bucket's narinfos.
type Record struct {
	Op      Op
	Hash    string // store path hash part
	NarInfo []byte // Put only: the narinfo as stored
}

// size is how many bytes rec takes in an object.
func (r Record) size() int { return 2 + len(r.Hash) + 1 + 20 + 1 + len(r.NarInfo) }

// Format returns the body of a journal object holding recs.
//
//	cached-journal 1
//	+ <hash> <length>
//	<length bytes of narinfo text>- <hash>
//	...
func Format(recs []Record) []byte {
	n := len(header)
	for _, r := range recs {
		n += r.size()
	}
	b := make([]byte, 0, n)
	b = append(b, header...)
	for _, r := range recs {
		b = append(b, byte(r.Op), ' ')
		b = append(b, r.Hash...)
		if r.Op == Put {
			b = append(b, ' ')
			b = strconv.AppendInt(b, int64(len(r.NarInfo)), 10)
			b = append(b, '\n')
			b = append(b, r.NarInfo...)
			continue
		}
		b = append(b, '\n')
	}
	return b
}

// Parse reads the records of a journal object. Anything that Format would not have written is an
// error naming the offending record; no record of such an object is returned.
func Parse(data []byte) ([]Record, error) {
	rest, ok := bytes.CutPrefix(data, []byte(header))
	if !ok {
		return nil, fmt.Errorf("journal object does not start with %q", strings.TrimSpace(header))
	}
	var recs []Record
	for len(rest) > 0 {
		nl := bytes.IndexByte(rest, '\n')
		if nl < 0 {
			return nil, fmt.Errorf("record %d: %q has no end of line", len(recs)+1, truncate(rest))
		}
		line := string(rest[:nl])
		rest = rest[nl+1:]
		if len(line) < 2 || line[1] != ' ' {
			return nil, fmt.Errorf("record %d: %q is not an operation", len(recs)+1, truncate([]byte(line)))
		}
		fields := strings.Split(line[2:], " ")
		switch Op(line[0]) {
		case Delete:
			if len(fields) != 1 || !narinfo.ValidHashPart(fields[0]) {
				return nil, fmt.Errorf("record %d: %q: want \"- <store hash>\"", len(recs)+1, truncate([]byte(line)))
			}
			recs = append(recs, Record{Op: Delete, Hash: fields[0]})
		case Put:
			if len(fields) != 2 || !narinfo.ValidHashPart(fields[0]) {
				return nil, fmt.Errorf("record %d: %q: want \"+ <store hash> <length>\"", len(recs)+1, truncate([]byte(line)))
			}
			n, err := strconv.Atoi(fields[1])
			if err != nil || n < 0 || n > maxNarInfoSize || fields[1] != strconv.Itoa(n) {
				return nil, fmt.Errorf("record %d: narinfo length %q: want 0..%d", len(recs)+1, truncate([]byte(fields[1])), maxNarInfoSize)
			}
			if n > len(rest) {
				return nil, fmt.Errorf("record %d: narinfo of %s is cut short: %d of %d bytes", len(recs)+1, fields[0], len(rest), n)
			}
			recs = append(recs, Record{Op: Put, Hash: fields[0], NarInfo: bytes.Clone(rest[:n])})
			rest = rest[n:]
		default:
			return nil, fmt.Errorf("record %d: operation %q: want + or -", len(recs)+1, line[:1])
		}
	}
	return recs, nil
}

func truncate(b []byte) string {
	if len(b) > 80 {
		return string(b[:80]) + "..."
	}
	return string(b)
}

// nameDigits is the width of the time in an object's name, so that names sort by time.
const nameDigits = 20

// ObjectName is the name of the journal object a writer writes at t.
func ObjectName(t time.Time, writer string) string {
	return fmt.Sprintf("%s%0*d-%s", Prefix, nameDigits, t.UnixNano(), writer)
}

// position is the name every object written at t or later sorts after.
func position(t time.Time) string {
	n := t.UnixNano() - 1
	if n < 0 {
		n = 0
	}
	return fmt.Sprintf("%s%0*d", Prefix, nameDigits, n)
}

// ParseObjectName returns when and by whom a journal object was written.
func ParseObjectName(name string) (time.Time, string, error) {
	rest, ok := strings.CutPrefix(name, Prefix)
	if !ok || len(rest) < nameDigits+2 || rest[nameDigits] != '-' {
		return time.Time{}, "", fmt.Errorf("journal object name %q: want %s<%d digits>-<writer>", name, Prefix, nameDigits)
	}
	n, err := strconv.ParseInt(rest[:nameDigits], 10, 64)
	if err != nil || n < 0 {
		return time.Time{}, "", fmt.Errorf("journal object name %q: bad time %q", name, rest[:nameDigits])
	}
	writer := rest[nameDigits+1:]
	if !validWriter(writer) {
		return time.Time{}, "", fmt.Errorf("journal object name %q: bad writer %q", name, writer)
	}
	return time.Unix(0, n), writer, nil
}

// validWriter reports whether id is a writer id: 1-64 characters of [0-9a-z].
func validWriter(id string) bool {
	if id == "" || len(id) > 64 {
		return false
	}
	for i := 0; i < len(id); i++ {
		c := id[i]
		if (c < '0' || c > '9') && (c < 'a' || c > 'z') {
			return false
		}
	}
	return true
}
