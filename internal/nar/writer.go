package nar

import (
	"bufio"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"strings"
)

// Writer builds a NAR. Its methods must be called in NAR order: one node
// for the root, where a node is File, Symlink, or StartDirectory followed
// by any number of Entry-then-node pairs and EndDirectory. It refuses
// anything that would not be a valid, canonical NAR (bad or unsorted names,
// calls out of order), so it cannot produce an archive Walk rejects.
//
// Output is buffered: Close must be called to flush it. After any error
// the Writer is unusable and every later call returns that error.
type Writer struct {
	bw       *bufio.Writer
	err      error
	started  bool // magic written
	done     bool // root node complete
	wantNode bool // a node must come next (the root, or after Entry)
	dirs     []string
	scratch  [8]byte
}

// NewWriter returns a Writer that writes a NAR to w.
func NewWriter(w io.Writer) *Writer {
	return &Writer{bw: bufio.NewWriterSize(w, 64<<10), wantNode: true}
}

func (w *Writer) fail(format string, args ...any) error {
	w.err = fmt.Errorf("nar: writer: "+format, args...)
	return w.err
}

func (w *Writer) writeUint64(v uint64) {
	binary.LittleEndian.PutUint64(w.scratch[:], v)
	_, _ = w.bw.Write(w.scratch[:]) // bufio.Writer errors are sticky; checked at the end of each call
}

func (w *Writer) writeString(s string) {
	w.writeUint64(uint64(len(s)))
	_, _ = w.bw.WriteString(s)
	w.writePadding(uint64(len(s)))
}

var zeros [8]byte

func (w *Writer) writePadding(n uint64) {
	_, _ = w.bw.Write(zeros[:padding(n)])
}

func (w *Writer) writeStrings(ss ...string) {
	for _, s := range ss {
		w.writeString(s)
	}
}

// flushErr reports a write error from the underlying writer, if any.
// bufio.Writer remembers the first one and returns it from every later
// call, so a zero-length write asks without doing anything.
func (w *Writer) flushErr() error {
	if _, err := w.bw.Write(nil); err != nil {
		w.err = fmt.Errorf("nar: writer: %w", err)
		return w.err
	}
	return nil
}

// beginNode checks that a node may come next and writes the magic first.
func (w *Writer) beginNode(kind string) error {
	if w.err != nil {
		return w.err
	}
	if !w.wantNode {
		if w.done {
			return w.fail("%s after the root node is complete", kind)
		}
		return w.fail("%s in a directory without Entry first", kind)
	}
	if !w.started {
		w.writeString(magic)
		w.started = true
	}
	w.writeStrings(tokOpen, tokType)
	return nil
}

// endNode closes the entry a finished node was in, or the archive.
func (w *Writer) endNode() error {
	if len(w.dirs) == 0 {
		w.done = true
	} else {
		w.writeString(tokClose)
	}
	w.wantNode = false
	return w.flushErr()
}

// File writes a regular-file node of exactly size bytes copied from
// contents; it fails if contents ends sooner. It does not read beyond size.
func (w *Writer) File(executable bool, size int64, contents io.Reader) error {
	if w.err == nil && size < 0 {
		return w.fail("negative file size %d", size)
	}
	if err := w.beginNode("File"); err != nil {
		return err
	}
	w.writeString(tokRegular)
	if executable {
		w.writeStrings(tokExecutable, "")
	}
	w.writeString(tokContents)
	w.writeUint64(uint64(size))
	if size > 0 {
		if contents == nil {
			return w.fail("file of %d bytes with nil contents", size)
		}
		n, err := io.CopyN(w.bw, contents, size)
		if err != nil {
			if errors.Is(err, io.EOF) {
				err = io.ErrUnexpectedEOF
			}
			return w.fail("copying file contents (%d of %d bytes): %w", n, size, err)
		}
	}
	w.writePadding(uint64(size))
	w.writeString(tokClose)
	return w.endNode()
}

// Symlink writes a symlink node.
func (w *Writer) Symlink(target string) error {
	if w.err == nil {
		if p := targetProblem(target); p != "" {
			return w.fail("%s: %s", p, quote(target))
		}
	}
	if err := w.beginNode("Symlink"); err != nil {
		return err
	}
	w.writeStrings(tokSymlink, tokTarget, target, tokClose)
	return w.endNode()
}

// StartDirectory begins a directory node; Entry and EndDirectory follow.
func (w *Writer) StartDirectory() error {
	if err := w.beginNode("StartDirectory"); err != nil {
		return err
	}
	w.writeString(tokDirectory)
	w.dirs = append(w.dirs, "")
	w.wantNode = false
	return w.flushErr()
}

// Entry begins the next entry of the current directory; the entry's node
// must follow. Names must be valid and strictly increasing bytewise.
func (w *Writer) Entry(name string) error {
	if w.err != nil {
		return w.err
	}
	if len(w.dirs) == 0 || w.wantNode {
		return w.fail("Entry(%s) outside a directory or before the previous entry's node", quote(name))
	}
	if p := nameProblem(name); p != "" {
		return w.fail("invalid entry name %s: %s", quote(name), p)
	}
	prev := &w.dirs[len(w.dirs)-1]
	if *prev != "" {
		switch c := strings.Compare(*prev, name); {
		case c == 0:
			return w.fail("duplicate entry %s", quote(name))
		case c > 0:
			return w.fail("entry %s not sorted after %s", quote(name), quote(*prev))
		}
	}
	*prev = name
	w.writeStrings(tokEntry, tokOpen, tokName, name, tokNode)
	w.wantNode = true
	return w.flushErr()
}

// EndDirectory ends the current directory node.
func (w *Writer) EndDirectory() error {
	if w.err != nil {
		return w.err
	}
	if len(w.dirs) == 0 || w.wantNode {
		return w.fail("EndDirectory outside a directory or before the previous entry's node")
	}
	w.dirs = w.dirs[:len(w.dirs)-1]
	w.writeString(tokClose)
	return w.endNode()
}

// Close flushes buffered output and reports an error if the archive is
// not complete. It does not close the underlying writer.
func (w *Writer) Close() error {
	if w.err != nil {
		return w.err
	}
	if err := w.bw.Flush(); err != nil {
		w.err = fmt.Errorf("nar: writer: %w", err)
		return w.err
	}
	if !w.done {
		if !w.started {
			return w.fail("archive incomplete: no root node")
		}
		return w.fail("archive incomplete: %d directories still open", len(w.dirs))
	}
	return nil
}
