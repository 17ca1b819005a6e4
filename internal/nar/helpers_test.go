package nar

import (
	"bytes"
	"encoding/binary"
	"os"
	"path"
	"path/filepath"
	"strings"
	"testing"
)

// writeString appends s in NAR string encoding: length, bytes, zero padding.
func writeString(b *bytes.Buffer, s string) {
	writeUint64(b, uint64(len(s)))
	b.WriteString(s)
	b.Write(make([]byte, padding(uint64(len(s)))))
}

func writeUint64(b *bytes.Buffer, v uint64) {
	var buf [8]byte
	binary.LittleEndian.PutUint64(buf[:], v)
	b.Write(buf[:])
}

// raw is appended verbatim by tokens; u64 as a bare little-endian uint64.
type (
	raw []byte
	u64 uint64
)

// tokens hand-assembles a (possibly invalid) NAR: strings are written with
// writeString, raw and u64 as they are.
func tokens(parts ...any) []byte {
	var b bytes.Buffer
	for _, p := range parts {
		switch p := p.(type) {
		case string:
			writeString(&b, p)
		case raw:
			b.Write(p)
		case u64:
			writeUint64(&b, uint64(p))
		case []any:
			b.Write(tokens(p...))
		default:
			panic("tokens: unsupported part")
		}
	}
	return b.Bytes()
}

// tnode is a test tree, materialised on disk, written with Writer, or
// turned into the entries Walk should report.
type tnode struct {
	typ      EntryType
	exec     bool
	data     string
	target   string
	children []tchild // sorted bytewise, as NAR requires
}

type tchild struct {
	name string
	node *tnode
}

func file(data string) *tnode       { return &tnode{typ: TypeRegular, data: data} }
func execFile(data string) *tnode   { return &tnode{typ: TypeRegular, exec: true, data: data} }
func symlink(target string) *tnode  { return &tnode{typ: TypeSymlink, target: target} }
func dir(children ...tchild) *tnode { return &tnode{typ: TypeDirectory, children: children} }
func ent(name string, n *tnode) tchild {
	return tchild{name, n}
}

// sampleTree has every node kind, nesting, empty file and directory, and
// names whose bytewise order differs from naive orders (case, '-', '.').
func sampleTree() *tnode {
	return sampleTreeSized(100<<10 + 3) // crosses read buffer boundaries
}

// sampleTreeSized is sampleTree with a big file of the given size; fuzz
// seeds keep it small so the fuzzer does not waste time minimising it.
func sampleTreeSized(bigSize int) *tnode {
	big := strings.Repeat("0123456789abcdef", bigSize/16+1)[:bigSize]
	return dir(
		ent("B", file("upper case sorts first\n")),
		ent("a", file("hello, world\n")),
		ent("a-b", file("")),
		ent("a.b", execFile("#!/bin/sh")),
		ent("aa", dir(
			ent("empty", dir()),
			ent("sub", dir(
				ent("big", file(big)),
				ent("eight", file("12345678")),
				ent("link", symlink("../../a")),
			)),
		)),
		ent("caf\u00e9", file("utf-8 name")),
		ent("link", symlink("a")),
		ent("z\xff", symlink("/nix/store/\xfe-dangling")),
	)
}

func materialize(t testing.TB, p string, n *tnode) {
	t.Helper()
	var err error
	switch n.typ {
	case TypeRegular:
		mode := os.FileMode(0o644)
		if n.exec {
			mode = 0o755
		}
		if err = os.WriteFile(p, []byte(n.data), mode); err == nil {
			err = os.Chmod(p, mode) // umask must not decide the executable bit
		}
	case TypeSymlink:
		err = os.Symlink(n.target, p)
	case TypeDirectory:
		if err = os.Mkdir(p, 0o755); err != nil {
			break
		}
		for _, c := range n.children {
			materialize(t, filepath.Join(p, c.name), c.node)
		}
	}
	if err != nil {
		t.Fatal(err)
	}
}

func writeTree(w *Writer, n *tnode) error {
	switch n.typ {
	case TypeRegular:
		return w.File(n.exec, int64(len(n.data)), strings.NewReader(n.data))
	case TypeSymlink:
		return w.Symlink(n.target)
	}
	if err := w.StartDirectory(); err != nil {
		return err
	}
	for _, c := range n.children {
		if err := w.Entry(c.name); err != nil {
			return err
		}
		if err := writeTree(w, c.node); err != nil {
			return err
		}
	}
	return w.EndDirectory()
}

func buildNAR(t testing.TB, n *tnode) []byte {
	t.Helper()
	var b bytes.Buffer
	w := NewWriter(&b)
	if err := writeTree(w, n); err != nil {
		t.Fatal(err)
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	return b.Bytes()
}

// expectedEntries lists n the way Walk should, minus offsets. data is kept
// in Target for regular files so callers can check contents.
func expectedEntries(p string, n *tnode) []Entry {
	e := Entry{Path: p, Type: n.typ, Executable: n.exec, Target: n.target}
	if n.typ == TypeRegular {
		e.Size = int64(len(n.data))
		e.Target = n.data
	}
	out := []Entry{e}
	for _, c := range n.children {
		out = append(out, expectedEntries(path.Join(p, c.name), c.node)...)
	}
	return out
}

// checkWalk walks nar and compares with the tree it should hold,
// including that the bytes at each Offset are the file's contents.
func checkWalk(t *testing.T, nar []byte, want *tnode) {
	t.Helper()
	var got []Entry
	n, err := Walk(bytes.NewReader(nar), func(e Entry) error {
		got = append(got, e)
		return nil
	})
	if err != nil {
		t.Fatalf("Walk: %v", err)
	}
	if n != int64(len(nar)) {
		t.Errorf("Walk read %d bytes, NAR is %d", n, len(nar))
	}
	exp := expectedEntries("", want)
	if len(got) != len(exp) {
		t.Fatalf("Walk reported %d entries, want %d: %+v", len(got), len(exp), got)
	}
	for i, g := range got {
		w := exp[i]
		if g.Path != w.Path || g.Type != w.Type || g.Executable != w.Executable {
			t.Errorf("entry %d = %q %v exec=%v, want %q %v exec=%v", i, g.Path, g.Type, g.Executable, w.Path, w.Type, w.Executable)
			continue
		}
		switch g.Type {
		case TypeRegular:
			if g.Size != w.Size {
				t.Errorf("%q: size %d, want %d", g.Path, g.Size, w.Size)
				continue
			}
			if g.Offset < 0 || g.Offset+g.Size > int64(len(nar)) {
				t.Errorf("%q: offset %d out of range", g.Path, g.Offset)
				continue
			}
			if c := string(nar[g.Offset : g.Offset+g.Size]); c != w.Target {
				t.Errorf("%q: bytes at offset %d are not the contents", g.Path, g.Offset)
			}
			if g.Target != "" {
				t.Errorf("%q: regular file has target %q", g.Path, g.Target)
			}
		case TypeSymlink:
			if g.Target != w.Target {
				t.Errorf("%q: target %q, want %q", g.Path, g.Target, w.Target)
			}
		}
	}
}
