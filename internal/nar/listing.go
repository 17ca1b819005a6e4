package nar

import (
	"io"
	"strconv"
)

// Listing reads one complete NAR from r, validating it like Walk, and
// returns the JSON `.ls` document binary caches serve next to it:
//
//	{"version":1,"root":NODE}
//
// where a directory is {"type":"directory","entries":{NAME:NODE,...}}, a
// regular file {"type":"regular","size":N,"narOffset":N} plus
// "executable":true when executable, and a symlink
// {"type":"symlink","target":"..."}. Names and targets that are not valid
// UTF-8 have the bad bytes replaced by U+FFFD, since JSON cannot carry them.
//
// The document is built as the NAR streams past, so memory grows with the
// number of entries, never with file sizes.
func Listing(r io.Reader) ([]byte, error) {
	d := newDecoder(r)
	buf := append(make([]byte, 0, 4096), `{"version":1,"root":`...)
	// firsts[i] says whether open directory i has had no entry yet.
	var firsts []bool
	d.onNode = func(name []byte, e Entry) error {
		if name != nil {
			if top := len(firsts) - 1; firsts[top] {
				firsts[top] = false
			} else {
				buf = append(buf, ',')
			}
			buf = appendJSONString(buf, string(name))
			buf = append(buf, ':')
		}
		switch e.Type {
		case TypeDirectory:
			buf = append(buf, `{"type":"directory","entries":{`...)
			firsts = append(firsts, true)
		case TypeRegular:
			buf = append(buf, `{"type":"regular","size":`...)
			buf = strconv.AppendInt(buf, e.Size, 10)
			buf = append(buf, `,"narOffset":`...)
			buf = strconv.AppendInt(buf, e.Offset, 10)
			if e.Executable {
				buf = append(buf, `,"executable":true`...)
			}
			buf = append(buf, '}')
		case TypeSymlink:
			buf = append(buf, `{"type":"symlink","target":`...)
			buf = appendJSONString(buf, e.Target)
			buf = append(buf, '}')
		}
		return nil
	}
	d.onEndDir = func() error {
		firsts = firsts[:len(firsts)-1]
		buf = append(buf, "}}"...)
		return nil
	}
	if err := d.run(); err != nil {
		return nil, err
	}
	return append(buf, '}'), nil
}
