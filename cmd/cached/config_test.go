package main

import (
	"bytes"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/alecthomas/kong"
)

// cleanEnv removes every CACHED_* variable for the test, so that the machine's environment
// cannot take part in precedence.
func cleanEnv(t *testing.T) {
	t.Helper()
	for _, kv := range os.Environ() {
		if k, _, _ := strings.Cut(kv, "="); strings.HasPrefix(k, "CACHED_") {
			t.Setenv(k, "")
			os.Unsetenv(k)
		}
	}
}

func writeConfig(t *testing.T, content string) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "cached.toml")
	if err := os.WriteFile(path, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

// parseArgs parses args with the parser main uses (kong, env, file), running no command.
func parseArgs(t *testing.T, args ...string) (*cli, *kong.Context, error) {
	t.Helper()
	var c cli
	var stderr bytes.Buffer
	p, err := newParser(&c, io.Discard, &stderr, func(code int) { t.Fatalf("exit %d: %s", code, stderr.String()) })
	if err != nil {
		t.Fatal(err)
	}
	kctx, err := p.Parse(args)
	return &c, kctx, err
}

type exitCalled int

// runCLI runs args as main does and returns the exit status, stdout and stderr.
func runCLI(t *testing.T, args ...string) (code int, stdout, stderr string) {
	t.Helper()
	var out, errb bytes.Buffer
	func() {
		defer func() {
			if r := recover(); r != nil {
				ec, ok := r.(exitCalled)
				if !ok {
					panic(r)
				}
				code = int(ec)
			}
		}()
		code = run(args, &out, &errb, func(c int) { panic(exitCalled(c)) })
	}()
	return code, out.String(), errb.String()
}

func TestConfigPrecedence(t *testing.T) {
	cleanEnv(t)
	path := writeConfig(t, `
listen = "10.0.0.1:1"           # also in env and on the command line: the command line wins
priority = 11                   # also in env: env wins
max-upload-size = "1GiB"        # only here: the file wins over the default
fast-path = false               # env says true
require-upload-sigs = ["k1:AAAA", "k2:BBBB"]
`)
	t.Setenv("CACHED_LISTEN", "10.0.0.2:2")
	t.Setenv("CACHED_PRIORITY", "22")
	t.Setenv("CACHED_FAST_PATH", "true")
	t.Setenv("CACHED_CONFIG", path)
	c, _, err := parseArgs(t, "serve", "--listen", "10.0.0.3:3")
	if err != nil {
		t.Fatal(err)
	}
	s := c.Serve
	checks := []struct {
		name      string
		got, want any
	}{
		{"listen: flag > env > file", s.Listen, "10.0.0.3:3"},
		{"priority: env > file", s.Priority, 22},
		{"fast-path: env > file", s.FastPath, true},
		{"max-upload-size: file > default", s.MaxUploadSize, byteSize(1 << 30)},
		{"require-upload-sigs: file array", fmt.Sprint(s.RequireUploadSigs), "[k1:AAAA k2:BBBB]"},
		{"shutdown-timeout: default", s.ShutdownTimeout, 60 * time.Second},
	}
	for _, ch := range checks {
		if ch.got != ch.want {
			t.Errorf("%s: got %v, want %v", ch.name, ch.got, ch.want)
		}
	}

	// Without the environment, the file wins over the defaults.
	os.Unsetenv("CACHED_PRIORITY")
	os.Unsetenv("CACHED_FAST_PATH")
	c, _, err = parseArgs(t, "serve")
	if err != nil {
		t.Fatal(err)
	}
	if c.Serve.Listen != "10.0.0.2:2" || c.Serve.Priority != 11 || c.Serve.FastPath {
		t.Errorf("env listen, file priority and fast-path: got %q %d %v", c.Serve.Listen, c.Serve.Priority, c.Serve.FastPath)
	}
}

func TestConfigFlagPositions(t *testing.T) {
	cleanEnv(t)
	path := writeConfig(t, "listen = \"10.0.0.1:1\"\nlog-level = \"debug\"\n")
	for _, args := range [][]string{
		{"--config", path, "serve"},
		{"serve", "--config", path},
		{"serve", "--config=" + path},
	} {
		c, _, err := parseArgs(t, args...)
		if err != nil {
			t.Fatalf("%v: %v", args, err)
		}
		if c.Serve.Listen != "10.0.0.1:1" || c.LogLevel != "debug" {
			t.Errorf("%v: listen %q, log-level %q", args, c.Serve.Listen, c.LogLevel)
		}
	}
}

func TestConfigListValues(t *testing.T) {
	cleanEnv(t)
	for _, tc := range []struct {
		file string
		want []string
	}{
		{`require-upload-sigs = ["a:1", "b:2"]`, []string{"a:1", "b:2"}},
		// An element holding the separator stays one element.
		{`require-upload-sigs = ["a:1,x", "b:2"]`, []string{"a:1,x", "b:2"}},
		// A string is split as the command line and the environment split it.
		{`require-upload-sigs = "a:1,b:2"`, []string{"a:1", "b:2"}},
		{`require-upload-sigs = []`, []string{}},
	} {
		c, _, err := parseArgs(t, "serve", "--config", writeConfig(t, tc.file))
		if err != nil {
			t.Fatalf("%s: %v", tc.file, err)
		}
		if fmt.Sprintf("%q", c.Serve.RequireUploadSigs) != fmt.Sprintf("%q", tc.want) {
			t.Errorf("%s: got %q, want %q", tc.file, c.Serve.RequireUploadSigs, tc.want)
		}
	}
}

// Commands take the keys they have flags for; the rest of a serve file does not bother them.
func TestConfigOtherCommands(t *testing.T) {
	cleanEnv(t)
	path := writeConfig(t, `
listen = "0.0.0.0:5001"
data = "/srv/cached"
url = "http://cache.example:5001"
max-upload-size = "1GiB"
`)
	c, _, err := parseArgs(t, "gc", "--config", path, "--older-than", "30d")
	if err != nil {
		t.Fatal(err)
	}
	if c.Gc.URL != "http://cache.example:5001" {
		t.Errorf("gc --url from the file: got %q", c.Gc.URL)
	}
	c, _, err = parseArgs(t, "reindex", "--config", path)
	if err != nil {
		t.Fatal(err)
	}
	if c.Reindex.Data != "/srv/cached" {
		t.Errorf("reindex --data from the file: got %q", c.Reindex.Data)
	}
	c, _, err = parseArgs(t, "healthcheck", "--config", path)
	if err != nil {
		t.Fatal(err)
	}
	if c.Healthcheck.Listen != "0.0.0.0:5001" {
		t.Errorf("healthcheck --listen from the file: got %q", c.Healthcheck.Listen)
	}
}

func TestConfigErrors(t *testing.T) {
	cleanEnv(t)
	for _, tc := range []struct {
		name, file string
		want       []string // besides "cached: FILE:"
	}{
		{"unknown key", "# comment\nlisten = \"x:1\"\nlistn = \"0.0.0.0:5000\"\n",
			[]string{":3: ", `unknown key "listn"`, `did you mean "listen"?`}},
		{"unknown key, underscores", "\nmax_upload_size = \"1GiB\"\n",
			[]string{":2: ", `unknown key "max_upload_size"`, `did you mean "max-upload-size"?`}},
		{"unknown key, no suggestion", "frobnicate = 1\n", []string{":1: ", `unknown key "frobnicate"`}},
		{"table", "listen = \"x:1\"\n[serve]\nlisten = \"y:2\"\n", []string{":2: ", `unknown key "serve"`, "tables are not used"}},
		{"wrong type for a size", "\n\nmax-upload-size = true\n",
			[]string{":3: ", `key "max-upload-size"`, "expected a string or an integer", "got a boolean"}},
		{"wrong type for a bool", "private = \"yes\"\n", []string{":1: ", `key "private"`, "expected a boolean", "got a string"}},
		{"wrong type for an int", "priority = \"high\"\n", []string{":1: ", `key "priority"`, "expected an integer", "got a string"}},
		{"float for an int", "priority = 1.5\n", []string{":1: ", `key "priority"`, "expected an integer", "got a float"}},
		{"wrong type for a string", "listen = 5000\n", []string{":1: ", `key "listen"`, "expected a string", "got an integer"}},
		{"wrong type for a list", "require-upload-sigs = 5\n", []string{":1: ", `key "require-upload-sigs"`, "expected an array of strings", "got an integer"}},
		{"wrong type in a list", "require-upload-sigs = [\"a:1\", true]\n", []string{":1: ", "element 2", "expected a string", "got a boolean"}},
		{"bad enum", "store-compression = \"lz4\"\n", []string{":1: ", `key "store-compression"`, `"lz4" is not one of "zstd", "xz", "as-uploaded"`}},
		{"bad global enum", "\nlog-level = \"loud\"\n", []string{":2: ", `key "log-level"`, `"loud" is not one of`}},
		{"bad size", "max-upload-size = \"lots\"\n", []string{":1: ", `key "max-upload-size"`, `invalid size "lots"`}},
		{"bad duration", "shutdown-timeout = \"5 parsecs\"\n", []string{":1: ", `key "shutdown-timeout"`, `"5 parsecs"`}},
		{"duration as a number", "shutdown-timeout = 60\n", []string{":1: ", `key "shutdown-timeout"`, "expected a duration string", "got an integer"}},
		{"malformed", "listen = \"0.0.0.0:5000\"\npriority = \n", []string{":2: ", "column"}},
		{"unterminated string", "listen = \"0.0.0.0:5000\n", []string{":1: "}},
		{"duplicate key", "listen = \"a:1\"\nlisten = \"b:2\"\n", []string{":2: ", "listen"}},
		{"meta key", "config = \"/etc/other.toml\"\n", []string{":1: ", `key "config" cannot be set`}},
		{"secret not echoed", "s3-secret-key = 42\n", []string{":1: ", `key "s3-secret-key"`, "expected a string"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			path := writeConfig(t, tc.file)
			for _, cmd := range [][]string{{"serve"}, {"config", "check"}, {"gc"}} {
				code, stdout, stderr := runCLI(t, append(cmd, "--config", path)...)
				if code != 2 {
					t.Errorf("%v: exit %d, want 2; stderr %q", cmd, code, stderr)
				}
				if stdout != "" {
					t.Errorf("%v: stdout %q, want nothing (no usage text for a bad file)", cmd, stdout)
				}
				if lines := strings.Count(strings.TrimSpace(stderr), "\n") + 1; lines != 1 {
					t.Errorf("%v: %d lines of stderr, want 1: %q", cmd, lines, stderr)
				}
				want := append([]string{"cached: " + path + ":"}, tc.want...)
				for _, w := range want {
					if !strings.Contains(stderr, w) {
						t.Errorf("%v: stderr %q lacks %q", cmd, stderr, w)
					}
				}
			}
		})
	}
}

func TestConfigMissingFile(t *testing.T) {
	cleanEnv(t)
	missing := filepath.Join(t.TempDir(), "nope.toml")
	code, _, stderr := runCLI(t, "serve", "--config", missing)
	if code != 2 || !strings.Contains(stderr, missing) || !strings.Contains(stderr, "does not exist") {
		t.Errorf("exit %d, stderr %q: want 2 and a message naming %s", code, stderr, missing)
	}
	t.Setenv("CACHED_CONFIG", missing)
	code, _, stderr = runCLI(t, "config", "check")
	if code != 2 || !strings.Contains(stderr, missing) {
		t.Errorf("CACHED_CONFIG: exit %d, stderr %q: want 2 and a message naming %s", code, stderr, missing)
	}
}

func TestConfigCheck(t *testing.T) {
	cleanEnv(t)
	path := writeConfig(t, `
listen = "0.0.0.0:5001"
s3-access-key = "AKIAEXAMPLEACCESS"
s3-secret-key = "s3cr3t-from-file"
secret-key-file = "/run/secrets/cache-key"
require-upload-sigs = ["b1:AAAA", "b2:BB\"BB"]
max-upload-size = "1536KiB"
shutdown-timeout = "90s"
`)
	t.Setenv("CACHED_PRIORITY", "7")
	code, out, stderr := runCLI(t, "config", "check", "--config", path, "--zstd-level", "9")
	if code != 0 {
		t.Fatalf("exit %d: %s", code, stderr)
	}
	for _, secret := range []string{"AKIAEXAMPLEACCESS", "s3cr3t-from-file"} {
		if strings.Contains(out, secret) {
			t.Errorf("output shows the secret %q:\n%s", secret, out)
		}
	}
	for _, want := range []string{
		fmt.Sprintf(`listen = "0.0.0.0:5001"  # %s:2`, path),
		fmt.Sprintf(`s3-access-key = "<redacted>"  # %s:3`, path),
		fmt.Sprintf(`s3-secret-key = "<redacted>"  # %s:4`, path),
		fmt.Sprintf(`secret-key-file = ["/run/secrets/cache-key"]  # %s:5`, path),
		`priority = 7  # environment CACHED_PRIORITY`,
		`zstd-level = 9  # command line`,
		`store-compression = "zstd"  # default`,
		`log-level = "info"  # default`,
		`max-upload-size = "1536KiB"`,
	} {
		if !strings.Contains(squeeze(out), want) {
			t.Errorf("output lacks %q:\n%s", want, out)
		}
	}
	if strings.Contains(out, "\nconfig =") || strings.Contains(out, "\nhelp =") || strings.Contains(out, "\nversion =") {
		t.Errorf("output lists command-line-only flags:\n%s", out)
	}

	// The output is a configuration file: fed back (without the redacted secrets), it gives the
	// same settings.
	var again []string
	for _, line := range strings.Split(out, "\n") {
		if !strings.Contains(line, "<redacted>") {
			again = append(again, line)
		}
	}
	cleanEnv(t)
	path2 := writeConfig(t, strings.Join(again, "\n"))
	code, out2, stderr := runCLI(t, "config", "check", "--config", path2)
	if code != 0 {
		t.Fatalf("output as input: exit %d: %s", code, stderr)
	}
	for _, want := range []string{`require-upload-sigs = ["b1:AAAA", "b2:BB\"BB"]`, `priority = 7`, `zstd-level = 9`, `shutdown-timeout = "1m30s"`, `max-upload-size = "1536KiB"`} {
		if !strings.Contains(squeeze(out2), want) {
			t.Errorf("round trip lacks %q:\n%s", want, out2)
		}
	}
}

// A secret from the environment is redacted too.
func TestConfigCheckRedactsEnv(t *testing.T) {
	cleanEnv(t)
	t.Setenv("CACHED_S3_SECRET_KEY", "env-s3cr3t")
	code, out, stderr := runCLI(t, "config", "check")
	if code != 0 {
		t.Fatalf("exit %d: %s", code, stderr)
	}
	if strings.Contains(out, "env-s3cr3t") || !strings.Contains(squeeze(out), `s3-secret-key = "<redacted>"  # environment CACHED_S3_SECRET_KEY`) {
		t.Errorf("output:\n%s", out)
	}
	if !strings.Contains(out, "No configuration file") {
		t.Errorf("output does not say there is no file:\n%s", out)
	}
}

// squeeze collapses the alignment padding of config check's output to two spaces.
func squeeze(s string) string {
	var b strings.Builder
	for _, line := range strings.Split(s, "\n") {
		if i := strings.Index(line, "  # "); i >= 0 {
			line = strings.TrimRight(line[:i], " ") + "  # " + line[i+4:]
		}
		b.WriteString(line + "\n")
	}
	return b.String()
}

// FuzzConfig feeds arbitrary documents to the loader and the check against the real command
// model: any outcome but a panic is fine, and an accepted file must parse.
func FuzzConfig(f *testing.F) {
	for _, seed := range []string{
		"listen = \"0.0.0.0:5000\"\nmax-upload-size = \"64GiB\"\nrequire-upload-sigs = [\"a:1\", \"b:2\"]\nfast-path = false\nshutdown-timeout = \"60s\"\n",
		"max-upload-size = true", "store-compression = \"lz4\"", "[serve]\nx=1", "a.b.c = 1", "priority = 99999999999999999999",
		"max-upload-size = -5", "require-upload-sigs = [[1], {a=1}]", "listen = 1979-05-27T07:32:00Z", "zstd-level = 1e400",
		"'quoted key' = 1", "data = \"\\u0000\"",
	} {
		f.Add([]byte(seed))
	}
	var c cli
	p, err := newParser(&c, io.Discard, io.Discard, func(int) {})
	if err != nil {
		f.Fatal(err)
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		cf, err := parseConfig("fuzz.toml", data)
		if err != nil {
			if !strings.HasPrefix(err.Error(), "fuzz.toml") {
				t.Fatalf("error does not name the file: %v", err)
			}
			return
		}
		if err := cf.check(p.Model); err != nil {
			if !strings.HasPrefix(err.Error(), "fuzz.toml") {
				t.Fatalf("error does not name the file: %v", err)
			}
		}
	})
}

// A server's file names the keys it signs with; keygen's flag of the same name says where a new
// key is written, so the file must neither refuse keygen nor point it at the server's key.
func TestConfigNeverSetsKeygenOutputs(t *testing.T) {
	cleanEnv(t)
	path := writeConfig(t, `
secret-key-file = ["/run/secrets/key-1", "/run/secrets/key-2"]
`)
	c, _, err := parseArgs(t, "keygen", "cache-2", "--config", path)
	if err != nil {
		t.Fatal(err)
	}
	if c.Keygen.SecretKeyFile != "" {
		t.Errorf("keygen --secret-key-file taken from the file: %q", c.Keygen.SecretKeyFile)
	}
	c, _, err = parseArgs(t, "serve", "--config", path)
	if err != nil {
		t.Fatal(err)
	}
	if len(c.Serve.SecretKeyFile) != 2 {
		t.Errorf("serve --secret-key-file from the file: got %q", c.Serve.SecretKeyFile)
	}
}

// An upstream URL's password (user:password@) is redacted, the rest of the URL shown; a value
// with an "@" that is not a URL at all is hidden whole.
func TestConfigCheckRedactsUpstreamPassword(t *testing.T) {
	cleanEnv(t)
	path := writeConfig(t, `
upstream = ["https://alice:pa55w0rd@cache.corp.example/nix", "https://cache.nixos.org", "https://bob@other.example"]
`)
	code, out, stderr := runCLI(t, "config", "check", "--config", path, "--upstream", "http://carol:hunter2@[::1:bad")
	if code != 0 {
		t.Fatalf("exit %d: %s", code, stderr)
	}
	for _, secret := range []string{"pa55w0rd", "hunter2"} {
		if strings.Contains(out+stderr, secret) {
			t.Errorf("output shows the password %q:\n%s%s", secret, out, stderr)
		}
	}
	want := `upstream = ["<redacted>"]  # command line`
	if !strings.Contains(squeeze(out), want) {
		t.Errorf("output lacks %q:\n%s", want, out)
	}
	code, out, stderr = runCLI(t, "config", "check", "--config", path)
	if code != 0 {
		t.Fatalf("exit %d: %s", code, stderr)
	}
	want = fmt.Sprintf(`upstream = ["https://alice:<redacted>@cache.corp.example/nix", "https://cache.nixos.org", "https://bob@other.example"]  # %s:2`, path)
	if strings.Contains(out, "pa55w0rd") || !strings.Contains(squeeze(out), want) {
		t.Errorf("output lacks %q (or shows the password):\n%s", want, out)
	}
}

// TestSharedBucketOption: --shared-bucket is its own option; auto keeps what the backend implied
// (an S3 bucket shared, a disk directory not), and true or false overrides it either way.
func TestSharedBucketOption(t *testing.T) {
	for _, c := range []struct {
		opt, backend string
		want         bool
	}{
		{"auto", "s3", true}, {"auto", "disk", false},
		{"true", "disk", true}, {"false", "s3", false},
	} {
		cmd := serveCmd{SharedBucket: c.opt}
		cmd.Backend = c.backend
		if got := cmd.sharedBucket(); got != c.want {
			t.Errorf("--shared-bucket %s with --backend %s: shared %v, want %v", c.opt, c.backend, got, c.want)
		}
	}
}
