package nar

import (
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
)

// Dump writes the NAR serialisation of the file, directory or symlink at
// path to w, like `nix-store --dump`: directory entries sorted bytewise,
// files executable when their owner-execute bit is set, contents streamed.
// Other file types (devices, sockets, FIFOs) are an error, as in Nix.
func Dump(w io.Writer, path string) error {
	nw := NewWriter(w)
	if err := dumpPath(nw, path); err != nil {
		return err
	}
	return nw.Close()
}

func dumpPath(nw *Writer, path string) error {
	fi, err := os.Lstat(path)
	if err != nil {
		return fmt.Errorf("nar: dump: %w", err)
	}
	switch mode := fi.Mode(); {
	case mode.IsRegular():
		return dumpFile(nw, path, fi)
	case mode&fs.ModeSymlink != 0:
		target, err := os.Readlink(path)
		if err != nil {
			return fmt.Errorf("nar: dump: %w", err)
		}
		if err := nw.Symlink(target); err != nil {
			return fmt.Errorf("%w (dumping %s)", err, path)
		}
		return nil
	case mode.IsDir():
		// os.ReadDir sorts by name with Go string comparison, which is
		// the bytewise order NAR requires.
		ents, err := os.ReadDir(path)
		if err != nil {
			return fmt.Errorf("nar: dump: %w", err)
		}
		if err := nw.StartDirectory(); err != nil {
			return err
		}
		for _, ent := range ents {
			if err := nw.Entry(ent.Name()); err != nil {
				return fmt.Errorf("%w (dumping %s)", err, path)
			}
			if err := dumpPath(nw, filepath.Join(path, ent.Name())); err != nil {
				return err
			}
		}
		return nw.EndDirectory()
	default:
		return fmt.Errorf("nar: dump: %s: unsupported file type %v", path, mode.Type())
	}
}

func dumpFile(nw *Writer, path string, fi fs.FileInfo) error {
	f, err := os.Open(path)
	if err != nil {
		return fmt.Errorf("nar: dump: %w", err)
	}
	defer f.Close()
	// The size comes from the Lstat: if the file changes while it is
	// read, File fails on a short read rather than writing a bad NAR.
	if err := nw.File(fi.Mode()&0o100 != 0, fi.Size(), f); err != nil {
		return fmt.Errorf("%w (dumping %s)", err, path)
	}
	return nil
}
