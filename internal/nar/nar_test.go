package nar

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
	"time"
)

// nixDump runs the real `nix-store --dump`, the reference for Dump.
func nixDump(t *testing.T, p string) []byte {
	t.Helper()
	bin, err := exec.LookPath("nix-store")
	if err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatalf("nix-store not found (%v); it is required when CI=true", err)
		}
		t.Skipf("nix-store not found (%v); skipping the comparison with Nix (it fails instead when CI=true)", err)
	}
	var stderr bytes.Buffer
	cmd := exec.Command(bin, "--dump", p)
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("nix-store --dump %s: %v: %s", p, err, stderr.Bytes())
	}
	return out
}

func TestDumpMatchesNixStore(t *testing.T) {
	root := filepath.Join(t.TempDir(), "tree")
	tree := sampleTree()
	materialize(t, root, tree)

	for _, tc := range []struct {
		name string
		rel  string
		want *tnode
	}{
		{"tree", "", tree},
		{"nested", "aa", tree.children[4].node},
		{"file", "a", tree.children[1].node},
		{"empty file", "a-b", tree.children[2].node},
		{"executable", "a.b", tree.children[3].node},
		{"symlink", "link", tree.children[6].node},
		{"empty dir", "aa/empty", tree.children[4].node.children[0].node},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p := filepath.Join(root, tc.rel)
			var got bytes.Buffer
			if err := Dump(&got, p); err != nil {
				t.Fatal(err)
			}
			checkWalk(t, got.Bytes(), tc.want)
			if w := buildNAR(t, tc.want); !bytes.Equal(got.Bytes(), w) {
				t.Errorf("Writer and Dump disagree (%d vs %d bytes)", len(w), got.Len())
			}
			if want := nixDump(t, p); !bytes.Equal(got.Bytes(), want) {
				t.Errorf("Dump differs from nix-store --dump (%d vs %d bytes)", got.Len(), len(want))
			}
		})
	}
}

func TestDumpErrors(t *testing.T) {
	dir := t.TempDir()
	if err := Dump(io.Discard, filepath.Join(dir, "missing")); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("Dump(missing) = %v, want ErrNotExist", err)
	}
	if runtime.GOOS != "windows" {
		// A dangling-free FIFO: Nix refuses these and so must we.
		fifo := filepath.Join(dir, "fifo")
		if err := exec.Command("mkfifo", fifo).Run(); err == nil {
			if err := Dump(io.Discard, fifo); err == nil || !strings.Contains(err.Error(), "unsupported file type") {
				t.Errorf("Dump(fifo) = %v", err)
			}
		}
	}
}

func TestListing(t *testing.T) {
	nar := buildNAR(t, sampleTree())
	ls, err := Listing(bytes.NewReader(nar))
	if err != nil {
		t.Fatal(err)
	}
	var doc struct {
		Version int             `json:"version"`
		Root    json.RawMessage `json:"root"`
	}
	if err := json.Unmarshal(ls, &doc); err != nil {
		t.Fatalf("invalid JSON %s: %v", ls, err)
	}
	if doc.Version != 1 {
		t.Errorf("version = %d", doc.Version)
	}
	type node struct {
		Type       string           `json:"type"`
		Size       *int64           `json:"size"`
		NarOffset  *int64           `json:"narOffset"`
		Executable *bool            `json:"executable"`
		Target     *string          `json:"target"`
		Entries    map[string]*node `json:"entries"`
	}
	var root node
	if err := json.Unmarshal(doc.Root, &root); err != nil {
		t.Fatal(err)
	}
	if root.Type != "directory" || len(root.Entries) != 8 {
		t.Fatalf("root = %+v", root)
	}
	a := root.Entries["a"]
	if a == nil || a.Type != "regular" || a.Size == nil || *a.Size != 13 || a.Executable != nil || a.NarOffset == nil {
		t.Fatalf("a = %+v", a)
	}
	if got := string(nar[*a.NarOffset : *a.NarOffset+13]); got != "hello, world\n" {
		t.Errorf("narOffset of a points at %q", got)
	}
	if ab := root.Entries["a.b"]; ab == nil || ab.Executable == nil || !*ab.Executable || *ab.Size != 9 {
		t.Errorf("a.b = %+v", ab)
	}
	if e := root.Entries["a-b"]; e == nil || e.Type != "regular" || *e.Size != 0 {
		t.Errorf("a-b = %+v", e)
	}
	if l := root.Entries["link"]; l == nil || l.Type != "symlink" || l.Target == nil || *l.Target != "a" || l.Size != nil {
		t.Errorf("link = %+v", l)
	}
	if l := root.Entries["z\ufffd"]; l == nil || *l.Target != "/nix/store/\ufffd-dangling" {
		t.Errorf("non-UTF-8 names not mapped to U+FFFD: %s", ls)
	}
	if c := root.Entries["caf\u00e9"]; c == nil || c.Type != "regular" {
		t.Errorf("café = %+v", c)
	}
	aa := root.Entries["aa"]
	if aa == nil || aa.Type != "directory" || len(aa.Entries) != 2 {
		t.Fatalf("aa = %+v", aa)
	}
	if e := aa.Entries["empty"]; e == nil || e.Type != "directory" || e.Entries == nil || len(e.Entries) != 0 {
		t.Errorf("aa/empty = %+v (want an empty entries object)", e)
	}
	sub := aa.Entries["sub"]
	if sub == nil || len(sub.Entries) != 3 || *sub.Entries["link"].Target != "../../a" || *sub.Entries["eight"].Size != 8 {
		t.Errorf("aa/sub = %+v", sub)
	}

	// Roots that are not directories.
	for _, tc := range []struct {
		n    *tnode
		want string
	}{
		{execFile("x"), `{"version":1,"root":{"type":"regular","size":1,"narOffset":128,"executable":true}}`},
		{file(""), `{"version":1,"root":{"type":"regular","size":0,"narOffset":96}}`},
		{symlink(`q"\` + "\n"), `{"version":1,"root":{"type":"symlink","target":"q\"\\\u000a"}}`},
		{dir(), `{"version":1,"root":{"type":"directory","entries":{}}}`},
	} {
		ls, err := Listing(bytes.NewReader(buildNAR(t, tc.n)))
		if err != nil || string(ls) != tc.want {
			t.Errorf("Listing = %s, %v; want %s", ls, err, tc.want)
		}
	}
}

func TestWriterMatchesDump(t *testing.T) {
	root := filepath.Join(t.TempDir(), "tree")
	tree := sampleTree()
	materialize(t, root, tree)
	var dumped bytes.Buffer
	if err := Dump(&dumped, root); err != nil {
		t.Fatal(err)
	}
	if written := buildNAR(t, tree); !bytes.Equal(written, dumped.Bytes()) {
		t.Fatalf("Writer output (%d bytes) differs from Dump (%d bytes)", len(written), dumped.Len())
	}
}

func TestWalkSample(t *testing.T) {
	checkWalk(t, buildNAR(t, sampleTree()), sampleTree())
}

// Hand-assembled pieces for rejection tests.
var (
	fileNode = []any{"(", "type", "regular", "contents", "hello", ")"}
	linkNode = []any{"(", "type", "symlink", "target", "x", ")"}
)

func entry(name string, node []any) []any {
	return []any{"entry", "(", "name", name, "node", node, ")"}
}

func dirNode(entries ...[]any) []any {
	out := []any{"(", "type", "directory"}
	for _, e := range entries {
		out = append(out, e)
	}
	return append(out, ")")
}

func TestRejects(t *testing.T) {
	valid := tokens("nix-archive-1", dirNode(entry("a", fileNode), entry("b", linkNode)))
	if _, err := Check(bytes.NewReader(valid)); err != nil {
		t.Fatalf("the valid base case fails: %v", err)
	}
	badPad := func(b []byte, at int) []byte {
		b = bytes.Clone(b)
		b[at] = 1
		return b
	}
	// In a file root, "regular" (7 bytes) is at 64 and its padding byte at 71.
	fileRoot := tokens("nix-archive-1", fileNode)
	for _, tc := range []struct {
		name string
		in   []byte
		want string
	}{
		{"empty", nil, "truncated"},
		{"bad magic", tokens("nix-archive-2", fileNode), `bad magic: expected "nix-archive-1", found "nix-archive-2"`},
		{"not a nar", []byte("<html><body>hello</body></html>"), "magic at the root is"},
		{"trailing bytes", append(bytes.Clone(valid), 0, 0, 0, 0, 0, 0, 0, 0), fmt.Sprintf("offset %d: trailing data after the root node", len(valid))},
		{"trailing byte", append(bytes.Clone(fileRoot), 'x'), "trailing data"},
		{"second archive", append(bytes.Clone(fileRoot), fileRoot...), "trailing data"},
		{"unsorted", tokens("nix-archive-1", dirNode(entry("b", fileNode), entry("a", fileNode))), `entry "a" in the root not sorted after "b"`},
		{"unsorted nested", tokens("nix-archive-1", dirNode(entry("d", dirNode(entry("c", fileNode), entry("B", fileNode))))), `entry "B" in "d" not sorted after "c"`},
		{"unsorted after subdir", tokens("nix-archive-1", dirNode(entry("b", dirNode(entry("z", fileNode))), entry("a", fileNode))), `entry "a" in the root not sorted after "b"`},
		{"duplicate", tokens("nix-archive-1", dirNode(entry("a", fileNode), entry("a", linkNode))), `duplicate entry "a" in the root`},
		{"empty name", tokens("nix-archive-1", dirNode(entry("", fileNode))), `invalid entry name "" in the root: empty name`},
		{"dot", tokens("nix-archive-1", dirNode(entry(".", fileNode))), `invalid entry name "." in the root: reserved name`},
		{"dotdot", tokens("nix-archive-1", dirNode(entry("..", fileNode))), `invalid entry name ".." in the root: reserved name`},
		{"slash", tokens("nix-archive-1", dirNode(entry("a/b", fileNode))), `invalid entry name "a/b" in the root: name contains '/'`},
		{"nul", tokens("nix-archive-1", dirNode(entry("a\x00b", fileNode))), `invalid entry name "a\x00b" in the root: name contains NUL`},
		{"long name", tokens("nix-archive-1", dirNode(entry(strings.Repeat("n", 256), fileNode))), "entry name at the root is 256 bytes long, more than the limit of 255"},
		{"empty target", tokens("nix-archive-1", "(", "type", "symlink", "target", "", ")"), "empty symlink target"},
		{"long target", tokens("nix-archive-1", "(", "type", "symlink", "target", strings.Repeat("t", 4096), ")"), "more than the limit of 4095"},
		{"nul target", tokens("nix-archive-1", "(", "type", "symlink", "target", "a\x00", ")"), "symlink target contains NUL"},
		{"token padding", badPad(fileRoot, 8*8+7), `offset 71: nonzero padding after keyword`},
		{"name padding", tokens("nix-archive-1", "(", "type", "directory", "entry", "(", "name", u64(1), raw("a\x00\x00\x00\x00\x00\x00\x01")), "nonzero padding after entry name"},
		{"contents padding", badPad(fileRoot, len(fileRoot)-17), "nonzero padding after contents of the root"},
		{"unknown type", tokens("nix-archive-1", "(", "type", "fifo", ")"), `unknown node type "fifo" at the root`},
		{"unknown dir token", tokens("nix-archive-1", dirNode([]any{"entri"})), `expected "entry" or ")" in directory at the root, found "entri"`},
		{"unknown file token", tokens("nix-archive-1", "(", "type", "regular", "content", "x", ")"), `expected "contents" in regular file at the root, found "content"`},
		{"executable value", tokens("nix-archive-1", "(", "type", "regular", "executable", "yes", "contents", "", ")"), `expected empty string after "executable"`},
		{"executable twice", tokens("nix-archive-1", "(", "type", "regular", "executable", "", "executable", "", "contents", "", ")"), `found "executable"`},
		{"missing paren", tokens("nix-archive-1", "type", "regular"), `expected "(" to open a node at the root, found "type"`},
		{"missing close", tokens("nix-archive-1", "(", "type", "regular", "contents", "", "("), `expected ")" to close regular file`},
		{"no entry close", tokens("nix-archive-1", "(", "type", "directory", "entry", "(", "name", "a", "node", fileNode, "entry"), `expected ")" to close entry at "a"`},
		{"huge keyword", tokens("nix-archive-1", "(", u64(1<<62)), "keyword at the root is 4611686018427387904 bytes long"},
		{"huge name", tokens("nix-archive-1", "(", "type", "directory", "entry", "(", "name", u64(1<<62)), "limit of 255"},
		{"huge target", tokens("nix-archive-1", "(", "type", "symlink", "target", u64(1<<62)), "limit of 4095"},
		{"huge contents", tokens("nix-archive-1", "(", "type", "regular", "contents", u64(1<<62), raw("abc")), "truncated reading file contents"},
		{"impossible contents", tokens("nix-archive-1", "(", "type", "regular", "contents", u64(1<<64-1)), "file size 18446744073709551615 of the root is impossible"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			n, err := Check(bytes.NewReader(tc.in))
			if err == nil {
				t.Fatalf("Check accepted it (%d bytes)", n)
			}
			if !strings.Contains(err.Error(), tc.want) {
				t.Errorf("error %q does not contain %q", err, tc.want)
			}
			if !strings.HasPrefix(err.Error(), "nar: offset ") {
				t.Errorf("error %q does not start with the offset", err)
			}
			if n > int64(len(tc.in)) {
				t.Errorf("claims to have read %d of %d bytes", n, len(tc.in))
			}
			if _, lerr := Listing(bytes.NewReader(tc.in)); lerr == nil || lerr.Error() != err.Error() {
				t.Errorf("Listing error %v differs from Check error", lerr)
			}
		})
	}
}

func TestTruncated(t *testing.T) {
	for _, tree := range []*tnode{sampleTree(), file("x"), execFile(""), symlink("t"), dir()} {
		nar := buildNAR(t, tree)
		for cut := 0; cut < len(nar); cut++ {
			if cut > 1024 && cut < len(nar)-1024 && cut%97 != 0 {
				continue // the big file's middle adds nothing, sample it
			}
			_, err := Check(bytes.NewReader(nar[:cut]))
			if !errors.Is(err, io.ErrUnexpectedEOF) {
				t.Fatalf("prefix of %d/%d bytes: error %v, want io.ErrUnexpectedEOF", cut, len(nar), err)
			}
			if !strings.Contains(err.Error(), "truncated") {
				t.Fatalf("prefix of %d bytes: error %q does not say truncated", cut, err)
			}
		}
	}
}

func TestHugeLengthFailsFast(t *testing.T) {
	for _, in := range [][]byte{
		tokens(u64(1 << 62)),
		tokens("nix-archive-1", "(", "type", "regular", "contents", u64(1<<62), raw(make([]byte, 100))),
		tokens("nix-archive-1", "(", "type", "symlink", "target", u64(1<<62)),
	} {
		var before, after runtime.MemStats
		runtime.ReadMemStats(&before)
		start := time.Now()
		if _, err := Check(bytes.NewReader(in)); err == nil {
			t.Fatal("accepted")
		}
		elapsed := time.Since(start)
		runtime.ReadMemStats(&after)
		if alloc := after.TotalAlloc - before.TotalAlloc; alloc > 1<<20 {
			t.Errorf("allocated %d bytes", alloc)
		}
		if elapsed > time.Second {
			t.Errorf("took %v", elapsed)
		}
	}
}

type errReader struct{ err error }

func (r errReader) Read([]byte) (int, error) { return 0, r.err }

func TestReadErrorWrapped(t *testing.T) {
	boom := errors.New("boom")
	nar := buildNAR(t, sampleTree())
	_, err := Check(io.MultiReader(bytes.NewReader(nar[:200]), errReader{boom}))
	if !errors.Is(err, boom) || errors.Is(err, io.ErrUnexpectedEOF) {
		t.Errorf("error %v does not wrap the reader's error", err)
	}
}

func TestWalkCallbackError(t *testing.T) {
	stop := errors.New("stop")
	var seen []string
	_, err := Walk(bytes.NewReader(buildNAR(t, sampleTree())), func(e Entry) error {
		seen = append(seen, e.Path)
		if e.Path == "a" {
			return stop
		}
		return nil
	})
	if err != stop {
		t.Errorf("Walk = %v, want the callback's error unchanged", err)
	}
	if strings.Join(seen, ",") != ",B,a" {
		t.Errorf("visited %q", seen)
	}
}

// nested is a NAR of depth directories, each holding one entry called name, around a file.
func nested(t testing.TB, depth int, name string) []byte {
	t.Helper()
	var b bytes.Buffer
	w := NewWriter(&b)
	for range depth {
		if err := w.StartDirectory(); err != nil {
			t.Fatal(err)
		}
		if err := w.Entry(name); err != nil {
			t.Fatal(err)
		}
	}
	if err := w.File(false, 1, strings.NewReader("x")); err != nil {
		t.Fatal(err)
	}
	for range depth {
		if err := w.EndDirectory(); err != nil {
			t.Fatal(err)
		}
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	return b.Bytes()
}

// TestDeepNesting: nesting is taken as deep as a path can be (maxPathLen: 2048 one-byte names
// and their slashes), without recursion; one level more is refused.
func TestDeepNesting(t *testing.T) {
	ok := nested(t, 2048, "d")
	if n, err := Check(bytes.NewReader(ok)); err != nil || n != int64(len(ok)) {
		t.Fatalf("Check of a 4095-byte path = %d, %v", n, err)
	}
	_, err := Check(bytes.NewReader(nested(t, 2049, "d")))
	if err == nil || !strings.Contains(err.Error(), "4097 bytes long, more than the limit of 4095") {
		t.Fatalf("Check of a 4097-byte path: %v", err)
	}
}

// TestDeepNestingMemory: a deeply nested NAR of long names (a few KiB once compressed) is refused
// within the path limit, having taken a bounded amount of memory, not memory that grows with
// the nesting.
func TestDeepNestingMemory(t *testing.T) {
	file := nested(t, 20000, strings.Repeat("a", 255)) // a 5 MB path
	var before, after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	_, err := Check(bytes.NewReader(file))
	runtime.ReadMemStats(&after)
	if err == nil || !strings.Contains(err.Error(), "more than the limit") {
		t.Fatalf("Check: %v", err)
	}
	if grew := after.TotalAlloc - before.TotalAlloc; grew > 1<<20 {
		t.Errorf("Check allocated %d KiB for a NAR nested %d deep", grew>>10, 20000)
	}
}

func TestWriterRefuses(t *testing.T) {
	for _, tc := range []struct {
		name string
		do   func(w *Writer) error
		want string
	}{
		{"unsorted", func(w *Writer) error {
			_ = w.StartDirectory()
			_ = w.Entry("b")
			_ = w.Symlink("x")
			return w.Entry("a")
		}, `entry "a" not sorted after "b"`},
		{"duplicate", func(w *Writer) error {
			_ = w.StartDirectory()
			_ = w.Entry("a")
			_ = w.Symlink("x")
			return w.Entry("a")
		}, `duplicate entry "a"`},
		{"empty name", func(w *Writer) error { _ = w.StartDirectory(); return w.Entry("") }, "empty name"},
		{"dot", func(w *Writer) error { _ = w.StartDirectory(); return w.Entry(".") }, "reserved name"},
		{"dotdot", func(w *Writer) error { _ = w.StartDirectory(); return w.Entry("..") }, "reserved name"},
		{"slash", func(w *Writer) error { _ = w.StartDirectory(); return w.Entry("a/b") }, "contains '/'"},
		{"nul", func(w *Writer) error { _ = w.StartDirectory(); return w.Entry("a\x00") }, "contains NUL"},
		{"long", func(w *Writer) error { _ = w.StartDirectory(); return w.Entry(strings.Repeat("x", 256)) }, "longer than 255"},
		{"empty target", func(w *Writer) error { return w.Symlink("") }, "empty symlink target"},
		{"entry at root", func(w *Writer) error { _ = w.File(false, 0, nil); return w.Entry("a") }, "outside a directory"},
		{"entry without node", func(w *Writer) error { _ = w.StartDirectory(); _ = w.Entry("a"); return w.Entry("b") }, "before the previous entry's node"},
		{"node without entry", func(w *Writer) error { _ = w.StartDirectory(); return w.Symlink("x") }, "without Entry first"},
		{"second root", func(w *Writer) error { _ = w.Symlink("x"); return w.Symlink("y") }, "after the root node is complete"},
		{"end without dir", func(w *Writer) error { return w.EndDirectory() }, "outside a directory"},
		{"negative size", func(w *Writer) error { return w.File(false, -1, nil) }, "negative file size"},
		{"short contents", func(w *Writer) error { return w.File(false, 10, strings.NewReader("abc")) }, "3 of 10 bytes"},
		{"nil contents", func(w *Writer) error { return w.File(false, 1, nil) }, "nil contents"},
		{"incomplete", func(w *Writer) error { _ = w.StartDirectory(); return w.Close() }, "1 directories still open"},
		{"nothing", func(w *Writer) error { return w.Close() }, "no root node"},
		{"sticky", func(w *Writer) error { _ = w.Symlink(""); return w.Symlink("ok") }, "empty symlink target"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := tc.do(NewWriter(io.Discard))
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("error %v, want one containing %q", err, tc.want)
			}
		})
	}
	err := NewWriter(io.Discard).File(false, 10, strings.NewReader("abc"))
	if !errors.Is(err, io.ErrUnexpectedEOF) {
		t.Errorf("short contents error %v does not wrap io.ErrUnexpectedEOF", err)
	}
}

type failWriter struct{ err error }

func (f failWriter) Write([]byte) (int, error) { return 0, f.err }

func TestWriterWriteError(t *testing.T) {
	boom := errors.New("disk full")
	w := NewWriter(failWriter{boom})
	big := strings.Repeat("x", 1<<20) // larger than the buffer, so the write happens early
	if err := w.File(false, int64(len(big)), strings.NewReader(big)); !errors.Is(err, boom) {
		t.Errorf("File = %v, want the write error", err)
	}
	if err := w.Close(); !errors.Is(err, boom) {
		t.Errorf("Close = %v, want the write error", err)
	}
	w = NewWriter(failWriter{boom})
	_ = w.Symlink("x")
	if err := w.Close(); !errors.Is(err, boom) {
		t.Errorf("Close = %v, want the write error on flush", err)
	}
}
