package nar

import (
	"bufio"
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"math"
)

// readBufferSize is the read-ahead buffer. Contents are skipped through
// it too, so it is large enough to keep syscalls per GiB low.
const readBufferSize = 64 << 10

// Walk reads one complete NAR from r, validating it strictly, and calls fn
// (which may be nil) for every entry in NAR order, a directory before its
// children. A regular file is reported once its contents and padding have
// been read; a directory as soon as its type is known, so an error later in
// the stream can follow entries already reported. Contents are discarded
// through a fixed buffer, never held whole.
//
// Walk returns the number of bytes of the NAR it got through: on success all
// of r, on failure the offset it reached. Validation errors name the byte offset and path; truncation wraps
// io.ErrUnexpectedEOF. An error from fn is returned unchanged.
func Walk(r io.Reader, fn func(Entry) error) (int64, error) {
	d := newDecoder(r)
	if fn != nil {
		d.wantPath = true
		d.onNode = func(_ []byte, e Entry) error { return fn(e) }
	}
	err := d.run()
	return d.off, err
}

// Check validates one complete NAR from r; it is Walk with fn == nil.
func Check(r io.Reader) (int64, error) {
	return Walk(r, nil)
}

// decoder is a non-recursive NAR parser: the directory stack lives on the
// heap, not on the goroutine stack, and maxPathLen bounds its depth (2048
// levels of one-byte names) and the memory it takes.
type decoder struct {
	br  *bufio.Reader
	off int64 // bytes consumed from br

	tok  []byte     // scratch for the current token, reused
	path []byte     // path of the current node, reused
	dirs []dirFrame // open directories, innermost last; frames are reused

	// onNode gets each node; name is nil for the root and only valid
	// during the call. Entry goes by value so it does not escape.
	onNode func(name []byte, e Entry) error
	// onEndDir is called when a directory's last entry has been read.
	onEndDir func() error
	// wantPath makes Entry.Path available to onNode; it costs an
	// allocation per entry, so Check does without.
	wantPath bool
}

type dirFrame struct {
	pathLen int    // len(decoder.path) for this directory
	prev    []byte // previous entry name, for the ordering check
	hasPrev bool
}

func newDecoder(r io.Reader) *decoder {
	return &decoder{
		br:  bufio.NewReaderSize(r, readBufferSize),
		tok: make([]byte, 0, maxTargetLen+8),
	}
}

func (d *decoder) errAt(off int64, format string, args ...any) error {
	return fmt.Errorf("nar: offset %d: "+format, append([]any{off}, args...)...)
}

// readErr wraps a failed read; running out of input inside the archive is
// always truncation, whatever the reader calls it.
func (d *decoder) readErr(what string, err error) error {
	if errors.Is(err, io.EOF) {
		err = io.ErrUnexpectedEOF
		return d.errAt(d.off, "truncated reading %s at %s: %w", what, where(d.path), err)
	}
	return d.errAt(d.off, "reading %s at %s: %w", what, where(d.path), err)
}

func (d *decoder) readUint64(what string) (uint64, error) {
	b, err := d.br.Peek(8)
	if err != nil {
		return 0, d.readErr(what, err)
	}
	v := binary.LittleEndian.Uint64(b)
	_, _ = d.br.Discard(8) // cannot fail: the bytes are buffered
	d.off += 8
	return v, nil
}

// readString reads a length-prefixed, zero-padded string of at most max
// bytes into d.tok. The length is checked before anything is read, so a
// hostile prefix costs nothing.
func (d *decoder) readString(max int, what string) ([]byte, error) {
	start := d.off
	n, err := d.readUint64(what)
	if err != nil {
		return nil, err
	}
	if n > uint64(max) {
		return nil, d.errAt(start, "%s at %s is %d bytes long, more than the limit of %d", what, where(d.path), n, max)
	}
	padded := int(n) + padding(n)
	b, err := d.br.Peek(padded)
	if err != nil {
		return nil, d.readErr(what, err)
	}
	for _, c := range b[n:] {
		if c != 0 {
			return nil, d.errAt(d.off+int64(n), "nonzero padding after %s at %s", what, where(d.path))
		}
	}
	d.tok = append(d.tok[:0], b[:n]...)
	_, _ = d.br.Discard(padded)
	d.off += int64(padded)
	return d.tok, nil
}

// readKeyword reads a token where only a keyword may appear.
func (d *decoder) readKeyword() ([]byte, error) {
	return d.readString(maxKeywordLen, "keyword")
}

// expect reads a keyword that must be want; ctx says what it is for.
func (d *decoder) expect(want, ctx string) error {
	start := d.off
	tok, err := d.readKeyword()
	if err != nil {
		return err
	}
	if string(tok) != want {
		return d.errAt(start, "expected %q %s at %s, found %s", want, ctx, where(d.path), quote(tok))
	}
	return nil
}

func (d *decoder) run() error {
	start := d.off
	tok, err := d.readString(maxKeywordLen, "magic")
	if err != nil {
		return err
	}
	if string(tok) != magic {
		return d.errAt(start, "bad magic: expected %q, found %s", magic, quote(tok))
	}
	if err := d.node(nil); err != nil {
		return err
	}
	for len(d.dirs) > 0 {
		if err := d.dirStep(); err != nil {
			return err
		}
	}
	if _, err := d.br.Peek(1); err == nil {
		return d.errAt(d.off, "trailing data after the root node")
	} else if err != io.EOF {
		return d.errAt(d.off, "reading after the root node: %w", err)
	}
	return nil
}

// node parses a node up to its end, or, for a directory, up to its first
// entry, pushing a frame that dirStep continues from. name is the entry
// name, nil for the root.
func (d *decoder) node(name []byte) error {
	if err := d.expect(tokOpen, "to open a node"); err != nil {
		return err
	}
	if err := d.expect(tokType, "in node"); err != nil {
		return err
	}
	start := d.off
	tok, err := d.readKeyword()
	if err != nil {
		return err
	}
	switch string(tok) {
	case tokRegular:
		return d.regular(name)
	case tokSymlink:
		return d.symlink(name)
	case tokDirectory:
		d.pushDir()
		return d.emit(name, Entry{Type: TypeDirectory})
	default:
		return d.errAt(start, "unknown node type %s at %s", quote(tok), where(d.path))
	}
}

func (d *decoder) regular(name []byte) error {
	e := Entry{Type: TypeRegular}
	start := d.off
	tok, err := d.readKeyword()
	if err != nil {
		return err
	}
	if string(tok) == tokExecutable {
		e.Executable = true
		start = d.off
		if tok, err = d.readKeyword(); err != nil {
			return err
		}
		if len(tok) != 0 {
			return d.errAt(start, "expected empty string after \"executable\" at %s, found %s", where(d.path), quote(tok))
		}
		start = d.off
		if tok, err = d.readKeyword(); err != nil {
			return err
		}
	}
	if string(tok) != tokContents {
		return d.errAt(start, "expected \"contents\" in regular file at %s, found %s", where(d.path), quote(tok))
	}
	start = d.off
	n, err := d.readUint64("file size")
	if err != nil {
		return err
	}
	if n > math.MaxInt64-7 {
		return d.errAt(start, "file size %d of %s is impossible", n, where(d.path))
	}
	e.Size = int64(n)
	e.Offset = d.off
	if err := d.skipContents(n); err != nil {
		return err
	}
	if err := d.emit(name, e); err != nil {
		return err
	}
	return d.expect(tokClose, "to close regular file")
}

// skipContents discards n bytes of file contents and checks their padding.
func (d *decoder) skipContents(n uint64) error {
	for left := n; left > 0; {
		chunk := min(left, 1<<30) // int may be 32 bits
		k, err := d.br.Discard(int(chunk))
		d.off += int64(k)
		left -= uint64(k)
		if err != nil {
			return d.readErr("file contents", err)
		}
	}
	pad := padding(n)
	if pad == 0 {
		return nil
	}
	b, err := d.br.Peek(pad)
	if err != nil {
		return d.readErr("file contents padding", err)
	}
	for _, c := range b {
		if c != 0 {
			return d.errAt(d.off, "nonzero padding after contents of %s", where(d.path))
		}
	}
	_, _ = d.br.Discard(pad)
	d.off += int64(pad)
	return nil
}

func (d *decoder) symlink(name []byte) error {
	if err := d.expect(tokTarget, "in symlink"); err != nil {
		return err
	}
	start := d.off
	target, err := d.readString(maxTargetLen, "symlink target")
	if err != nil {
		return err
	}
	if p := targetProblem(target); p != "" {
		return d.errAt(start, "%s at %s", p, where(d.path))
	}
	e := Entry{Type: TypeSymlink}
	if d.onNode != nil {
		e.Target = string(target)
	}
	if err := d.emit(name, e); err != nil {
		return err
	}
	return d.expect(tokClose, "to close symlink")
}

func (d *decoder) emit(name []byte, e Entry) error {
	if d.onNode == nil {
		return nil
	}
	if d.wantPath {
		e.Path = string(d.path)
	}
	return d.onNode(name, e)
}

func (d *decoder) pushDir() {
	n := len(d.dirs)
	if n < cap(d.dirs) {
		d.dirs = d.dirs[:n+1]
	} else {
		d.dirs = append(d.dirs, dirFrame{})
	}
	f := &d.dirs[n]
	f.pathLen = len(d.path)
	f.prev = f.prev[:0]
	f.hasPrev = false
}

// dirStep reads one entry of the innermost open directory, or its end.
func (d *decoder) dirStep() error {
	f := &d.dirs[len(d.dirs)-1]
	start := d.off
	tok, err := d.readKeyword()
	if err != nil {
		return err
	}
	switch string(tok) {
	case tokClose:
		return d.endDir()
	case tokEntry:
	default:
		return d.errAt(start, "expected \"entry\" or \")\" in directory at %s, found %s", where(d.path), quote(tok))
	}
	if err := d.expect(tokOpen, "to open entry"); err != nil {
		return err
	}
	if err := d.expect(tokName, "in entry"); err != nil {
		return err
	}
	start = d.off
	name, err := d.readString(maxNameLen, "entry name")
	if err != nil {
		return err
	}
	if p := nameProblem(name); p != "" {
		return d.errAt(start, "invalid entry name %s in %s: %s", quote(name), where(d.path), p)
	}
	if f.hasPrev {
		switch c := bytes.Compare(f.prev, name); {
		case c == 0:
			return d.errAt(start, "duplicate entry %s in %s", quote(name), where(d.path))
		case c > 0:
			return d.errAt(start, "entry %s in %s not sorted after %s", quote(name), where(d.path), quote(f.prev))
		}
	}
	f.prev = append(f.prev[:0], name...)
	f.hasPrev = true
	if err := d.expect(tokNode, "in entry"); err != nil {
		return err
	}

	if len(d.path) > 0 {
		d.path = append(d.path, '/')
	}
	d.path = append(d.path, f.prev...) // not name: d.tok was reused by expect
	if len(d.path) > maxPathLen {
		return d.errAt(start, "path %s is %d bytes long, more than the limit of %d: no file system could unpack it", where(d.path), len(d.path), maxPathLen)
	}
	depth, parentLen := len(d.dirs), f.pathLen
	// f.prev rather than name, which aliased d.tok.
	if err := d.node(f.prev); err != nil {
		return err
	}
	if len(d.dirs) > depth {
		return nil // the child is a directory; its entries come next
	}
	return d.endEntry(parentLen)
}

// endDir finishes the innermost directory node.
func (d *decoder) endDir() error {
	if d.onEndDir != nil {
		if err := d.onEndDir(); err != nil {
			return err
		}
	}
	d.dirs = d.dirs[:len(d.dirs)-1]
	if len(d.dirs) == 0 {
		return nil // it was the root
	}
	return d.endEntry(d.dirs[len(d.dirs)-1].pathLen)
}

// endEntry reads the ")" closing a directory entry and returns to the
// parent directory's path.
func (d *decoder) endEntry(parentLen int) error {
	if err := d.expect(tokClose, "to close entry"); err != nil {
		return err
	}
	d.path = d.path[:parentLen]
	return nil
}
