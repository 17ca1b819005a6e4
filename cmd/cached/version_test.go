package main

import (
	"runtime/debug"
	"strings"
	"testing"
)

func TestReadBuild(t *testing.T) {
	stamped := func() (*debug.BuildInfo, bool) {
		return &debug.BuildInfo{
			GoVersion: "go1.99.1",
			Main:      debug.Module{Path: "github.com/cached-dev/cached", Version: "v0.4.0"},
			Settings: []debug.BuildSetting{
				{Key: "vcs.revision", Value: "0123456789abcdef"},
				{Key: "vcs.modified", Value: "true"},
			},
		}, true
	}
	devel := func() (*debug.BuildInfo, bool) {
		return &debug.BuildInfo{GoVersion: "go1.99.1", Main: debug.Module{Version: "(devel)"}}, true
	}
	none := func() (*debug.BuildInfo, bool) { return nil, false }
	for _, tc := range []struct {
		name              string
		ldVersion, ldHash string
		read              func() (*debug.BuildInfo, bool)
		want              []string
	}{
		{"ldflags win", "1.2.3", "feedface", stamped, []string{"cached 1.2.3\n", "commit: feedface\n", "go: go1.99.1 "}},
		{"build info", "", "", stamped, []string{"cached v0.4.0\n", "commit: 0123456789abcdef (modified)\n"}},
		{"devel checkout", "", "", devel, []string{"cached devel\n", "commit: unknown\n"}},
		{"no build info", "", "", none, []string{"cached devel\n", "commit: unknown\n", "go: go1."}},
	} {
		var b strings.Builder
		readBuild(tc.ldVersion, tc.ldHash, tc.read).write(&b)
		for _, w := range tc.want {
			if !strings.Contains(b.String(), w) {
				t.Errorf("%s: %q lacks %q", tc.name, b.String(), w)
			}
		}
	}
}

// `cached version` and `cached --version` print the same report, from main.version and
// main.commit when the build sets them.
func TestVersionCommand(t *testing.T) {
	cleanEnv(t)
	defer func(v, c string) { version, commit = v, c }(version, commit)
	version, commit = "9.8.7", "abc123"
	for _, args := range [][]string{{"version"}, {"--version"}, {"serve", "--version"}} {
		code, out, stderr := runCLI(t, args...)
		if code != 0 {
			t.Fatalf("%v: exit %d: %s", args, code, stderr)
		}
		if !strings.HasPrefix(out, "cached 9.8.7\ncommit: abc123\ngo: go1.") || strings.Count(out, "\n") != 3 {
			t.Errorf("%v: output %q", args, out)
		}
	}
}
