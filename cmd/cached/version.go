package main

import (
	"fmt"
	"io"
	"runtime"
	"runtime/debug"

	"github.com/alecthomas/kong"
)

// Set at build time by the flake and the Dockerfile:
//
//	go build -ldflags "-X main.version=$VERSION -X main.commit=$COMMIT" ./cmd/cached
//
// Without them, the module version and VCS stamp Go records in the binary are used.
var (
	version string
	commit  string
)

// buildInfo is what `cached version` reports.
type buildInfo struct {
	Version  string
	Commit   string
	Modified bool // the working tree had uncommitted changes (from Go's VCS stamp)
	Go       string
	Platform string
}

func currentBuild() buildInfo {
	return readBuild(version, commit, debug.ReadBuildInfo)
}

func readBuild(ldVersion, ldCommit string, read func() (*debug.BuildInfo, bool)) buildInfo {
	b := buildInfo{Version: ldVersion, Commit: ldCommit, Go: runtime.Version(), Platform: runtime.GOOS + "/" + runtime.GOARCH}
	bi, ok := read()
	if !ok {
		return b.orUnknown()
	}
	if bi.GoVersion != "" {
		b.Go = bi.GoVersion
	}
	if b.Version == "" && bi.Main.Version != "" && bi.Main.Version != "(devel)" {
		b.Version = bi.Main.Version
	}
	if b.Commit == "" {
		for _, s := range bi.Settings {
			switch s.Key {
			case "vcs.revision":
				b.Commit = s.Value
			case "vcs.modified":
				b.Modified = s.Value == "true"
			}
		}
	}
	return b.orUnknown()
}

func (b buildInfo) orUnknown() buildInfo {
	if b.Version == "" {
		b.Version = "devel"
	}
	if b.Commit == "" {
		b.Commit = "unknown"
	}
	return b
}

func (b buildInfo) write(w io.Writer) {
	mod := ""
	if b.Modified {
		mod = " (modified)"
	}
	fmt.Fprintf(w, "cached %s\ncommit: %s%s\ngo: %s %s\n", b.Version, b.Commit, mod, b.Go, b.Platform)
}

type versionCmd struct{}

func (versionCmd) Run(out io.Writer) error {
	currentBuild().write(out)
	return nil
}

// versionFlag is --version: the same report as `cached version`, before anything else is parsed.
type versionFlag bool

func (versionFlag) BeforeReset(app *kong.Kong) error {
	currentBuild().write(app.Stdout)
	app.Exit(0)
	return nil
}
