package nar

import (
	"bytes"
	"encoding/json"
	"path"
	"strings"
	"testing"
)

func fuzzSeeds(t testing.TB) [][]byte {
	seeds := [][]byte{
		buildNAR(t, sampleTreeSized(21)),
		buildNAR(t, file("")),
		buildNAR(t, execFile("abcdefghi")),
		buildNAR(t, symlink("../x")),
		buildNAR(t, dir()),
		buildNAR(t, dir(ent("a", dir(ent("b", dir(ent("c", file("deep")))))), ent("b", symlink("a/b/c")))),
		tokens("nix-archive-1", dirNode(entry("b", fileNode), entry("a", fileNode))),
		tokens("nix-archive-1", dirNode(entry("a", fileNode), entry("a", fileNode))),
		tokens("nix-archive-1", dirNode(entry("..", fileNode))),
		tokens("nix-archive-1", "(", "type", "regular", "contents", u64(1<<62)),
		tokens("nix-archive-1", "(", "type", "fifo", ")"),
		tokens("nix-archive-1", fileNode, "x"),
		[]byte("nix-archive-1"),
	}
	return seeds
}

// rebuild writes the tree Walk reported back out with Writer. Since only
// canonical NARs are accepted, the result must be the input again.
func rebuild(data []byte, entries []Entry) ([]byte, error) {
	var b bytes.Buffer
	w := NewWriter(&b)
	var open []string // paths of open directories
	for _, e := range entries {
		if e.Path != "" {
			for {
				top := open[len(open)-1]
				if top == "" || strings.HasPrefix(e.Path, top+"/") {
					break
				}
				if err := w.EndDirectory(); err != nil {
					return nil, err
				}
				open = open[:len(open)-1]
			}
			if err := w.Entry(path.Base(e.Path)); err != nil {
				return nil, err
			}
		}
		var err error
		switch e.Type {
		case TypeRegular:
			err = w.File(e.Executable, e.Size, bytes.NewReader(data[e.Offset:e.Offset+e.Size]))
		case TypeSymlink:
			err = w.Symlink(e.Target)
		case TypeDirectory:
			err = w.StartDirectory()
			open = append(open, e.Path)
		}
		if err != nil {
			return nil, err
		}
	}
	for range open {
		if err := w.EndDirectory(); err != nil {
			return nil, err
		}
	}
	err := w.Close()
	return b.Bytes(), err
}

func FuzzWalk(f *testing.F) {
	for _, s := range fuzzSeeds(f) {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		var entries []Entry
		n, err := Walk(bytes.NewReader(data), func(e Entry) error {
			entries = append(entries, e)
			return nil
		})
		if n < 0 || n > int64(len(data)) {
			t.Fatalf("Walk consumed %d of %d bytes", n, len(data))
		}
		ls, lerr := Listing(bytes.NewReader(data))
		if err != nil {
			if lerr == nil {
				t.Fatalf("Walk rejected (%v) but Listing accepted", err)
			}
			return
		}
		if n != int64(len(data)) {
			t.Fatalf("Walk accepted after %d of %d bytes", n, len(data))
		}
		if lerr != nil {
			t.Fatalf("Walk accepted but Listing failed: %v", lerr)
		}
		if !json.Valid(ls) {
			t.Fatalf("Listing produced invalid JSON: %s", ls)
		}
		again, err := rebuild(data, entries)
		if err != nil {
			t.Fatalf("Writer refused a tree Walk accepted: %v", err)
		}
		if !bytes.Equal(again, data) {
			t.Fatalf("accepted NAR is not canonical: rewriting it gives different bytes")
		}
	})
}

// FuzzWriterRoundTrip drives Writer with an arbitrary script of calls; if
// it completes without error, the NAR must be valid and Walk must report
// what was written.
func FuzzWriterRoundTrip(f *testing.F) {
	f.Add([]byte{2, 3, 1, 'a', 0, 1, 3, 'x', 'y', 'z', 4})
	f.Add([]byte{0, 0, 5, 'h', 'e', 'l', 'l', 'o'})
	f.Add([]byte{1, 3, '.', '.', '/'})
	f.Add([]byte{2, 3, 1, 'b', 2, 4, 3, 1, 'a', 1, 1, 'x', 4})
	f.Fuzz(func(t *testing.T, script []byte) {
		var b bytes.Buffer
		w := NewWriter(&b)
		next := func() byte {
			if len(script) == 0 {
				return 0
			}
			c := script[0]
			script = script[1:]
			return c
		}
		str := func() string {
			n := min(int(next()), len(script))
			s := string(script[:n])
			script = script[n:]
			return s
		}
		var want int // entries written
		for len(script) > 0 {
			var err error
			switch next() % 5 {
			case 0:
				exec := next()&1 == 1
				data := str()
				err = w.File(exec, int64(len(data)), strings.NewReader(data))
				want++
			case 1:
				err = w.Symlink(str())
				want++
			case 2:
				err = w.StartDirectory()
				want++
			case 3:
				err = w.Entry(str())
			case 4:
				err = w.EndDirectory()
			}
			if err != nil {
				return
			}
		}
		if w.Close() != nil {
			return
		}
		got := 0
		n, err := Walk(bytes.NewReader(b.Bytes()), func(Entry) error { got++; return nil })
		if err != nil {
			t.Fatalf("Writer produced an invalid NAR: %v", err)
		}
		if n != int64(b.Len()) || got != want {
			t.Fatalf("Walk read %d of %d bytes, %d of %d entries", n, b.Len(), got, want)
		}
	})
}
