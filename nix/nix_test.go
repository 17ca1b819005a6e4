// Package nix tests the Nix side of deployment (flake.nix, nix/module.nix, nix/package.nix)
// with what these machines have: Nix 2.8 and nixpkgs' lib, but not nixpkgs itself. The NixOS
// module is evaluated with lib.evalModules against stand-ins for the NixOS options it sets
// (testdata/standins.nix); building the package and running the VM test need nixpkgs
// (`nix flake check`).
package nix

import (
	"bytes"
	"encoding/json"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
)

// requireTool returns the path of a tool the test needs: missing, it fails the test under
// CI=true and skips it otherwise.
func requireTool(t *testing.T, name, install string) string {
	t.Helper()
	p, err := exec.LookPath(name)
	if err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatalf("%s is not installed (%s); CI=true makes this a failure", name, install)
		}
		t.Skipf("%s is not installed (%s); under CI=true this fails", name, install)
	}
	return p
}

func repoRoot(t *testing.T) string {
	t.Helper()
	root, err := filepath.Abs("..")
	if err != nil {
		t.Fatal(err)
	}
	return root
}

// nixpkgsLib is nixpkgs' lib directory: $NIXPKGS_LIB, else ../shared/nixpkgs-lib/lib next to
// the repository.
func nixpkgsLib(t *testing.T) string {
	t.Helper()
	dir := os.Getenv("NIXPKGS_LIB")
	if dir == "" {
		dir = filepath.Join(repoRoot(t), "..", "shared", "nixpkgs-lib", "lib")
	}
	dir, err := filepath.Abs(dir)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(dir, "default.nix")); err != nil {
		msg := "nixpkgs lib not found at " + dir + " (set NIXPKGS_LIB to nixpkgs' lib directory)"
		if os.Getenv("CI") == "true" {
			t.Fatal(msg + "; CI=true makes this a failure")
		}
		t.Skip(msg + "; under CI=true this fails")
	}
	return dir
}

// nixEval evaluates a Nix expression to JSON. --read-write-mode lets builtins.toFile write the
// rendered config file to the store, where the test reads it.
func nixEval(t *testing.T, expr string) ([]byte, error) {
	t.Helper()
	bin := requireTool(t, "nix-instantiate", "apt-get install -y nix-bin")
	cmd := exec.Command(bin, "--eval", "--strict", "--json", "--read-write-mode", "-E", expr)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		return nil, errors.New(stderr.String())
	}
	return stdout.Bytes(), nil
}

// nixString quotes s as a Nix string literal.
func nixString(s string) string {
	b, _ := json.Marshal(s)
	return strings.ReplaceAll(string(b), "${", `\${`)
}

// system is what the module produces for one services.cached definition.
type system struct {
	Services map[string]unit `json:"services"`
	Timers   map[string]unit `json:"timers"`
	Ports    []int           `json:"ports"`
	Packages []string        `json:"packages"`
}

type unit struct {
	WantedBy      []string       `json:"wantedBy"`
	After         []string       `json:"after"`
	ServiceConfig map[string]any `json:"serviceConfig"`
	TimerConfig   map[string]any `json:"timerConfig"`
}

// evalModule evaluates nix/module.nix with services.cached = cachedConfig (Nix text) and returns
// the units, or the evaluation error's message.
func evalModule(t *testing.T, cachedConfig string) (system, error) {
	t.Helper()
	root := repoRoot(t)
	expr := `let
  lib = import ` + nixString(nixpkgsLib(t)) + `;
  standins = import ` + nixString(filepath.Join(root, "nix/testdata/standins.nix")) + ` { inherit lib; };
  config = standins.evalNixOS [
    ` + nixString(filepath.Join(root, "nix/module.nix")) + `
    { services.cached = ` + cachedConfig + `; }
  ];
in {
  services = config.systemd.services;
  timers = config.systemd.timers;
  ports = config.networking.firewall.allowedTCPPorts;
  packages = map toString config.environment.systemPackages;
}`
	out, err := nixEval(t, expr)
	if err != nil {
		return system{}, err
	}
	var s system
	if err := json.Unmarshal(out, &s); err != nil {
		t.Fatalf("decode %s: %v", out, err)
	}
	return s, nil
}

func mustEvalModule(t *testing.T, cachedConfig string) system {
	t.Helper()
	s, err := evalModule(t, cachedConfig)
	if err != nil {
		t.Fatalf("evaluating services.cached = %s:\n%v", cachedConfig, err)
	}
	return s
}

// configFile is the --config file ExecStart names, and its contents.
func configFile(t *testing.T, execStart string) (string, string) {
	t.Helper()
	f := strings.Fields(execStart)
	if len(f) != 4 || f[1] != "serve" || f[2] != "--config" {
		t.Fatalf("ExecStart = %q, want BIN serve --config FILE", execStart)
	}
	b, err := os.ReadFile(f[3])
	if err != nil {
		t.Fatalf("config file of ExecStart %q: %v", execStart, err)
	}
	return f[3], string(b)
}

// TestNixFilesParse parses every .nix file of the repository.
func TestNixFilesParse(t *testing.T) {
	bin := requireTool(t, "nix-instantiate", "apt-get install -y nix-bin")
	root := repoRoot(t)
	var files []string
	if out, err := exec.Command("git", "-C", root, "ls-files", "--cached", "--others", "--exclude-standard", "*.nix").Output(); err == nil {
		files = strings.Fields(string(out))
	} else {
		err := filepath.WalkDir(root, func(p string, d os.DirEntry, err error) error {
			if err != nil {
				return err
			}
			if d.IsDir() && d.Name() == ".git" {
				return filepath.SkipDir
			}
			if !d.IsDir() && strings.HasSuffix(p, ".nix") {
				rel, _ := filepath.Rel(root, p)
				files = append(files, rel)
			}
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
	}
	for _, want := range []string{"flake.nix", "nix/module.nix", "nix/package.nix", "nix/vm-test.nix"} {
		if !slices.Contains(files, want) {
			t.Errorf("%s not found among the .nix files %v", want, files)
		}
	}
	for _, f := range files {
		if out, err := exec.Command(bin, "--parse", filepath.Join(root, f)).CombinedOutput(); err != nil {
			t.Errorf("nix-instantiate --parse %s: %v\n%s", f, err, out)
		}
	}
}

// hardening is what both units must carry, as the JSON the module's settings decode to.
var hardening = map[string]any{
	"DynamicUser":             true,
	"ProtectSystem":           "strict",
	"ProtectHome":             true,
	"PrivateTmp":              true,
	"PrivateDevices":          true,
	"PrivateMounts":           true,
	"NoNewPrivileges":         true,
	"ProtectKernelTunables":   true,
	"ProtectKernelModules":    true,
	"ProtectKernelLogs":       true,
	"ProtectControlGroups":    true,
	"ProtectClock":            true,
	"ProtectHostname":         true,
	"ProtectProc":             "invisible",
	"RestrictNamespaces":      true,
	"RestrictRealtime":        true,
	"RestrictSUIDSGID":        true,
	"LockPersonality":         true,
	"MemoryDenyWriteExecute":  true,
	"SystemCallArchitectures": "native",
	"UMask":                   "0077",
	"RestrictAddressFamilies": []any{"AF_INET", "AF_INET6", "AF_UNIX"},
	"SystemCallFilter":        []any{"@system-service", "~@privileged"},
	"CapabilityBoundingSet":   "",
	"AmbientCapabilities":     "",
}

func checkSettings(t *testing.T, unitName string, got, want map[string]any) {
	t.Helper()
	for k, w := range want {
		g, ok := got[k]
		if !ok {
			t.Errorf("%s: %s not set, want %v", unitName, k, w)
			continue
		}
		gj, _ := json.Marshal(g)
		wj, _ := json.Marshal(w)
		if !bytes.Equal(gj, wj) {
			t.Errorf("%s: %s = %s, want %s", unitName, k, gj, wj)
		}
	}
}

// TestModuleServeUnit checks the serve unit for a configuration with every secret given: the
// hardening, the credentials and the TOML that names them.
func TestModuleServeUnit(t *testing.T) {
	s := mustEvalModule(t, `{
    enable = true;
    openFirewall = true;
    settings = {
      listen = "0.0.0.0:5000";
      backend = "s3";
      s3-bucket = "nix-cache";
      s3-path-style = true;
      max-upload-size = "64GiB";
      zstd-level = 9;
      require-upload-sigs = [ "builder-1:AAAA" ];
    };
    secretKeyFile = [ "/run/keys/new.secret" "/run/keys/old.secret" ];
    uploadTokenFile = "/run/keys/upload-tokens";
    adminTokenFile = "/run/keys/admin-token";
    environmentFile = "/run/keys/cached.env";
  }`)
	serve, ok := s.Services["cached"]
	if !ok {
		t.Fatalf("no cached service in %v", s.Services)
	}
	if _, ok := s.Services["cached-gc"]; ok {
		t.Error("cached-gc service defined without gc.enable")
	}
	if len(s.Timers) != 0 {
		t.Errorf("timers without gc.enable: %v", s.Timers)
	}
	sc := serve.ServiceConfig
	checkSettings(t, "cached.service", sc, hardening)
	if v, ok := sc["ProcSubset"]; ok {
		t.Errorf("cached.service: ProcSubset = %v hides /proc/stat, where /metrics reads the boot time for process_start_time_seconds", v)
	}
	checkSettings(t, "cached.service", sc, map[string]any{
		"StateDirectory":  "cached",
		"Restart":         "on-failure",
		"LimitNOFILE":     65536,
		"PrivateUsers":    true,
		"EnvironmentFile": []any{"/run/keys/cached.env"},
		"LoadCredential": []any{
			"secret-key-0:/run/keys/new.secret",
			"secret-key-1:/run/keys/old.secret",
			"upload-tokens:/run/keys/upload-tokens",
			"admin-token:/run/keys/admin-token",
		},
	})
	if !slices.Contains(serve.WantedBy, "multi-user.target") {
		t.Errorf("cached.service wantedBy = %v, want multi-user.target", serve.WantedBy)
	}
	execStart, _ := sc["ExecStart"].(string)
	if !strings.HasPrefix(execStart, "/nix/store/00000000000000000000000000000000-cached/bin/cached serve --config /nix/store/") {
		t.Errorf("ExecStart = %q, want the package's bin/cached serve --config STOREPATH", execStart)
	}
	_, toml := configFile(t, execStart)
	for _, line := range []string{
		`listen = "0.0.0.0:5000"`,
		`data = "/var/lib/cached"`,
		`backend = "s3"`,
		`s3-bucket = "nix-cache"`,
		`s3-path-style = true`,
		`max-upload-size = "64GiB"`,
		`zstd-level = 9`,
		`require-upload-sigs = ["builder-1:AAAA"]`,
		`secret-key-file = ["/run/credentials/cached.service/secret-key-0", "/run/credentials/cached.service/secret-key-1"]`,
		`upload-token-file = "/run/credentials/cached.service/upload-tokens"`,
		`admin-token-file = "/run/credentials/cached.service/admin-token"`,
	} {
		if !slices.Contains(strings.Split(toml, "\n"), line) {
			t.Errorf("config file lacks the line %s:\n%s", line, toml)
		}
	}
	if strings.Contains(toml, "/run/keys") {
		t.Errorf("config file names a secret's source path instead of its credential:\n%s", toml)
	}
	if !slices.Equal(s.Ports, []int{5000}) {
		t.Errorf("firewall ports = %v, want [5000]", s.Ports)
	}
	if !slices.Contains(s.Packages, "/nix/store/00000000000000000000000000000000-cached") {
		t.Errorf("environment.systemPackages = %v, want the package (for cached token, pin, gc by hand)", s.Packages)
	}
}

// TestModuleDefaults checks that enable alone gives a loopback server with generated secrets:
// no credentials, no open port, and one key file coerced to a list.
func TestModuleDefaults(t *testing.T) {
	s := mustEvalModule(t, `{ enable = true; }`)
	sc := s.Services["cached"].ServiceConfig
	checkSettings(t, "cached.service", sc, hardening)
	checkSettings(t, "cached.service", sc, map[string]any{"LoadCredential": []any{}, "EnvironmentFile": []any{}})
	if len(s.Ports) != 0 {
		t.Errorf("firewall ports = %v without openFirewall", s.Ports)
	}
	_, toml := configFile(t, sc["ExecStart"].(string))
	if want := "backend = \"disk\"\ndata = \"/var/lib/cached\"\nlisten = \"127.0.0.1:5000\"\n"; toml != want {
		t.Errorf("config file = %q, want %q", toml, want)
	}

	s = mustEvalModule(t, `{ enable = true; secretKeyFile = "/run/keys/only.secret"; }`)
	sc = s.Services["cached"].ServiceConfig
	checkSettings(t, "cached.service", sc, map[string]any{"LoadCredential": []any{"secret-key-0:/run/keys/only.secret"}})
	_, toml = configFile(t, sc["ExecStart"].(string))
	if !strings.Contains(toml, `secret-key-file = ["/run/credentials/cached.service/secret-key-0"]`) {
		t.Errorf("one secretKeyFile is not a one-element secret-key-file list:\n%s", toml)
	}

	s = mustEvalModule(t, `{ enable = false; }`)
	if len(s.Services) != 0 {
		t.Errorf("services with enable = false: %v", s.Services)
	}
}

// TestModulePrivilegedPort: a port below 1024 gets CAP_NET_BIND_SERVICE, and no user
// namespace (which would keep the capability from applying).
func TestModulePrivilegedPort(t *testing.T) {
	s := mustEvalModule(t, `{ enable = true; openFirewall = true; settings.listen = ":80"; }`)
	checkSettings(t, "cached.service", s.Services["cached"].ServiceConfig, map[string]any{
		"CapabilityBoundingSet": []any{"CAP_NET_BIND_SERVICE"},
		"AmbientCapabilities":   []any{"CAP_NET_BIND_SERVICE"},
		"PrivateUsers":          false,
		"NoNewPrivileges":       true,
	})
	if !slices.Equal(s.Ports, []int{80}) {
		t.Errorf("firewall ports = %v, want [80]", s.Ports)
	}
}

// TestModuleGC checks the gc unit and timer: the URL derived from listen, the policy flags,
// and the admin token as a credential, from adminTokenFile or from the file the server writes.
func TestModuleGC(t *testing.T) {
	for _, tc := range []struct {
		name, config     string
		execStart, token string
	}{
		{
			name:      "generated admin token",
			config:    `{ enable = true; settings.listen = "[::]:5000"; gc = { enable = true; olderThan = "30d"; maxSize = "500 GiB"; extraArgs = [ "--keep-since" "2d" ]; }; }`,
			execStart: "/nix/store/00000000000000000000000000000000-cached/bin/cached gc --url 'http://[::1]:5000' --admin-token-file %d/admin-token --older-than 30d --max-size '500 GiB' --keep-since 2d",
			token:     "admin-token:/var/lib/cached/admin-token",
		},
		{
			name:      "admin token file",
			config:    `{ enable = true; settings.listen = "10.0.0.2:8080"; adminTokenFile = "/run/keys/admin"; gc = { enable = true; maxSize = "1TiB"; dates = "Sun 03:00"; }; }`,
			execStart: "/nix/store/00000000000000000000000000000000-cached/bin/cached gc --url http://10.0.0.2:8080 --admin-token-file %d/admin-token --max-size 1TiB",
			token:     "admin-token:/run/keys/admin",
		},
		{
			name:      "TLS",
			config:    `{ enable = true; settings = { listen = "0.0.0.0:443"; tls-cert = "/var/lib/cached/cert.pem"; }; gc = { enable = true; olderThan = "2w"; }; }`,
			execStart: "/nix/store/00000000000000000000000000000000-cached/bin/cached gc --url https://127.0.0.1:443 --admin-token-file %d/admin-token --older-than 2w",
			token:     "admin-token:/var/lib/cached/admin-token",
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := mustEvalModule(t, tc.config)
			gc, ok := s.Services["cached-gc"]
			if !ok {
				t.Fatalf("no cached-gc service in %v", s.Services)
			}
			checkSettings(t, "cached-gc.service", gc.ServiceConfig, hardening)
			checkSettings(t, "cached-gc.service", gc.ServiceConfig, map[string]any{
				"Type":           "oneshot",
				"ExecStart":      tc.execStart,
				"LoadCredential": []any{tc.token},
			})
			if !slices.Contains(gc.After, "cached.service") {
				t.Errorf("cached-gc.service after = %v, want cached.service", gc.After)
			}
			timer, ok := s.Timers["cached-gc"]
			if !ok {
				t.Fatalf("no cached-gc timer in %v", s.Timers)
			}
			want := "daily"
			if strings.Contains(tc.config, "Sun 03:00") {
				want = "Sun 03:00"
			}
			checkSettings(t, "cached-gc.timer", timer.TimerConfig, map[string]any{"OnCalendar": want, "Persistent": true})
			if !slices.Contains(timer.WantedBy, "timers.target") {
				t.Errorf("cached-gc.timer wantedBy = %v, want timers.target", timer.WantedBy)
			}
		})
	}
}

// TestModuleRejects checks that bad option values and failed assertions stop evaluation with a
// message that names the option.
func TestModuleRejects(t *testing.T) {
	for _, tc := range []struct {
		name, config string
		want         []string
	}{
		{"olderThan not a string", `{ enable = true; gc = { enable = true; olderThan = 5; }; }`,
			[]string{"services.cached.gc.olderThan", "is not of type"}},
		{"olderThan not a duration", `{ enable = true; gc = { enable = true; olderThan = "a month"; }; }`,
			[]string{"services.cached.gc.olderThan", "is not of type"}},
		{"maxSize not a size", `{ enable = true; gc = { enable = true; maxSize = "lots"; }; }`,
			[]string{"services.cached.gc.maxSize", "is not of type"}},
		{"listen not a string", `{ enable = true; settings.listen = 5000; }`,
			[]string{"services.cached.settings.listen", "is not of type"}},
		{"listen without a port", `{ enable = true; settings.listen = "localhost"; }`,
			[]string{"services.cached.settings.listen", "is not of type"}},
		{"unknown backend", `{ enable = true; settings.backend = "gcs"; }`,
			[]string{"services.cached.settings.backend", "is not of type"}},
		{"openFirewall not a bool", `{ enable = true; openFirewall = "yes"; }`,
			[]string{"services.cached.openFirewall", "is not of type"}},
		{"secret key as a Nix path, which would be copied to the store", `{ enable = true; secretKeyFile = /etc/cached/secret-key; }`,
			[]string{"services.cached.secretKeyFile", "is not of type"}},
		{"secret key in the store", `{ enable = true; secretKeyFile = "/nix/store/00000000000000000000000000000000-key"; }`,
			[]string{"services.cached.secretKeyFile", "is not of type"}},
		{"relative token file", `{ enable = true; uploadTokenFile = "tokens"; }`,
			[]string{"services.cached.uploadTokenFile", "is not of type"}},
		{"unknown option", `{ enable = true; secretKey = "/run/keys/k"; }`,
			[]string{"services.cached.secretKey", "does not exist"}},
		{"s3 without a bucket", `{ enable = true; settings.backend = "s3"; }`,
			[]string{"Failed assertions", `services.cached.settings.backend = "s3" needs services.cached.settings.s3-bucket`}},
		{"gc without a policy", `{ enable = true; gc.enable = true; }`,
			[]string{"Failed assertions", "services.cached.gc.enable needs a policy: set services.cached.gc.olderThan and/or services.cached.gc.maxSize"}},
		{"inline S3 secret", `{ enable = true; settings = { backend = "s3"; s3-bucket = "b"; s3-secret-key = "hunter2"; }; }`,
			[]string{"Failed assertions", "services.cached.settings.s3-secret-key would put a secret into the world-readable Nix store", "CACHED_S3_SECRET_KEY=... in services.cached.environmentFile"}},
		{"upstream password inline", `{ enable = true; settings.upstream = [ "https://cache.nixos.org" "https://ci:hunter2@cache.corp.example" ]; }`,
			[]string{"Failed assertions", "services.cached.settings.upstream has a URL with user:password@", "services.cached.upstreamNetrcFile"}},
		{"data outside the state directory", `{ enable = true; settings.data = "/srv/cache"; }`,
			[]string{"Failed assertions", "services.cached.settings.data = /srv/cache is outside /var/lib/cached"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := evalModule(t, tc.config)
			if err == nil {
				t.Fatalf("services.cached = %s evaluated; want an error", tc.config)
			}
			for _, w := range tc.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("services.cached = %s: error lacks %q:\n%v", tc.config, w, err)
				}
			}
		})
	}
}

// TestModuleConfigAccepted hands the TOML the module renders, and contrib/config.toml, to
// `cached config check`, so that a key the server does not know fails here. It skips while
// cached has no `config check` command.
func TestModuleConfigAccepted(t *testing.T) {
	s := mustEvalModule(t, `{
    enable = true;
    settings = { listen = "0.0.0.0:5000"; store-compression = "zstd"; max-upload-size = "1GiB"; };
    secretKeyFile = [ "/run/keys/a" "/run/keys/b" ];
    uploadTokenFile = "/run/keys/upload-tokens";
    adminTokenFile = "/run/keys/admin-token";
  }`)
	path, _ := configFile(t, s.Services["cached"].ServiceConfig["ExecStart"].(string))
	bin := cachedBinary(t)
	if out, err := exec.Command(bin, "config", "check", "--help").CombinedOutput(); err != nil {
		lines := strings.Split(strings.TrimSpace(string(out)), "\n")
		t.Skipf("cached has no `config check` command yet: %s", lines[len(lines)-1])
	}
	// contrib/config.toml, the example for the plain systemd unit, too.
	for _, p := range []string{path, filepath.Join(repoRoot(t), "contrib", "config.toml")} {
		if out, err := exec.Command(bin, "config", "check", "--config", p).CombinedOutput(); err != nil {
			t.Errorf("cached config check --config %s: %v\n%s", p, err, out)
		}
	}
}

// flakeOutputs is what testdata/eval-flake.nix returns.
type flakeOutputs struct {
	Packages         map[string][]string `json:"packages"`
	Checks           map[string][]string `json:"checks"`
	DevShellPackages []string            `json:"devShellPackages"`
	Package          struct {
		Pname, Version, VendorHash, MainProgram string
		Ldflags, SubPackages                    []string
		DoCheck                                 bool
	} `json:"package"`
	OverlayPackage string `json:"overlayPackage"`
	App            struct {
		Type, Program, Script string
	} `json:"app"`
	VMServer struct {
		ExecStart      string
		LoadCredential []string
		GCExecStart    string `json:"gcExecStart"`
		Ports          []int  `json:"ports"`
	} `json:"vmServer"`
	VMTest struct {
		Name, TestScript string
		Nodes            []string
	} `json:"vmTest"`
}

func evalFlake(t *testing.T) flakeOutputs {
	t.Helper()
	root := repoRoot(t)
	out, err := nixEval(t, `import `+nixString(filepath.Join(root, "nix/testdata/eval-flake.nix"))+` { lib = import `+nixString(nixpkgsLib(t))+`; root = `+nixString(root)+`; }`)
	if err != nil {
		t.Fatalf("evaluating flake.nix with stand-in nixpkgs: %v", err)
	}
	var f flakeOutputs
	if err := json.Unmarshal(out, &f); err != nil {
		t.Fatalf("decode %s: %v", out, err)
	}
	return f
}

// TestFlakeOutputs evaluates flake.nix's outputs against stand-in nixpkgs: the systems, what
// buildGoModule gets, the app, the checks, and the VM test's server node through the module.
func TestFlakeOutputs(t *testing.T) {
	f := evalFlake(t)
	for _, sys := range []string{"x86_64-linux", "aarch64-linux"} {
		if !slices.Contains(f.Packages[sys], "default") {
			t.Errorf("packages.%s = %v, want default", sys, f.Packages[sys])
		}
		if !slices.Equal(f.Checks[sys], []string{"package", "vm"}) {
			t.Errorf("checks.%s = %v, want [package vm]", sys, f.Checks[sys])
		}
	}
	if c := f.Checks["aarch64-darwin"]; !slices.Equal(c, []string{"package"}) {
		t.Errorf("checks.aarch64-darwin = %v, want [package] (no VM test off Linux)", c)
	}
	p := f.Package
	if p.Pname != "cached" || p.Version != "0.1.0" || p.MainProgram != "cached" {
		t.Errorf("package pname, version, mainProgram = %q %q %q", p.Pname, p.Version, p.MainProgram)
	}
	if !slices.Contains(p.Ldflags, "-X main.version=0.1.0") || !slices.Contains(p.Ldflags, "-X main.commit=abc1234") {
		t.Errorf("ldflags = %v, want -X main.version=0.1.0 and -X main.commit=<self.shortRev>", p.Ldflags)
	}
	if !slices.Equal(p.SubPackages, []string{"cmd/cached"}) || p.DoCheck {
		t.Errorf("subPackages = %v, doCheck = %v; want [cmd/cached], false", p.SubPackages, p.DoCheck)
	}
	if !regexp.MustCompile(`^sha256-[A-Za-z0-9+/]{43}=$`).MatchString(p.VendorHash) {
		t.Errorf("vendorHash = %q, want an SRI sha256", p.VendorHash)
	}
	if f.OverlayPackage != "cached-0.1.0" {
		t.Errorf("overlay's cached = %q, want cached-0.1.0", f.OverlayPackage)
	}
	if f.App.Type != "app" || !strings.Contains(f.App.Script, `exec /nix/store/00000000000000000000000000000000-cached-0.1.0/bin/cached serve "$@"`) {
		t.Errorf("apps.default = %+v, want a program that execs cached serve", f.App)
	}
	for _, want := range []string{"go", "go-tools", "nix"} {
		if !slices.Contains(f.DevShellPackages, want) {
			t.Errorf("devShell packages = %v, want %s", f.DevShellPackages, want)
		}
	}
	// nixosModules.default brings the flake's package, without an overlay.
	if !strings.HasPrefix(f.VMServer.ExecStart, "/nix/store/00000000000000000000000000000000-cached-0.1.0/bin/cached serve --config ") {
		t.Errorf("VM server ExecStart = %q, want the flake's package", f.VMServer.ExecStart)
	}
	if !slices.Equal(f.VMServer.LoadCredential, []string{"secret-key-0:/etc/cached/secret-key", "upload-tokens:/etc/cached/upload-tokens"}) {
		t.Errorf("VM server LoadCredential = %v", f.VMServer.LoadCredential)
	}
	if !strings.Contains(f.VMServer.GCExecStart, "gc --url http://127.0.0.1:5000 --admin-token-file %d/admin-token --older-than 30d") {
		t.Errorf("VM server gc ExecStart = %q", f.VMServer.GCExecStart)
	}
	if !slices.Equal(f.VMServer.Ports, []int{5000}) {
		t.Errorf("VM server firewall ports = %v, want [5000]", f.VMServer.Ports)
	}
	if !slices.Equal(f.VMTest.Nodes, []string{"builder", "client", "server"}) {
		t.Errorf("VM test nodes = %v", f.VMTest.Nodes)
	}
	for _, want := range []string{`nix copy --to http://server:5000`, `nix-store --realise`, `systemctl start cached-gc.service`} {
		if !strings.Contains(f.VMTest.TestScript, want) {
			t.Errorf("VM test script lacks %q", want)
		}
	}
}

// TestPackageSource checks that the source nix/package.nix builds from (go.mod, go.sum, cmd/,
// internal/) holds every package cmd/cached imports from this module. (lib.fileset needs a
// newer Nix than 2.8 to evaluate, so the file set itself is checked only by a real build.)
func TestPackageSource(t *testing.T) {
	root := repoRoot(t)
	pkg, err := os.ReadFile(filepath.Join(root, "nix/package.nix"))
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range []string{"../go.mod", "../go.sum", "../cmd", "../internal"} {
		if !strings.Contains(string(pkg), p+"\n") {
			t.Errorf("nix/package.nix's file set lacks %s", p)
		}
	}
	cmd := exec.Command("go", "list", "-deps", "-f", "{{if .Module}}{{if .Module.Main}}{{.Dir}}{{end}}{{end}}", "./cmd/cached")
	cmd.Dir = root
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("go list -deps ./cmd/cached: %v", err)
	}
	for _, dir := range strings.Fields(string(out)) {
		rel, _ := filepath.Rel(root, dir)
		if !strings.HasPrefix(rel, "cmd/") && !strings.HasPrefix(rel, "internal/") {
			t.Errorf("cmd/cached imports %s, outside the package's source (cmd/, internal/)", rel)
		}
	}
}

// TestVendorHash recomputes buildGoModule's vendorHash, the NAR hash of the directory
// `go mod vendor` writes, and compares it with nix/package.nix's.
func TestVendorHash(t *testing.T) {
	nixBin := requireTool(t, "nix", "apt-get install -y nix-bin")
	root := repoRoot(t)
	pkg, err := os.ReadFile(filepath.Join(root, "nix/package.nix"))
	if err != nil {
		t.Fatal(err)
	}
	m := regexp.MustCompile(`(?m)^\s*vendorHash = "([^"]*)";`).FindSubmatch(pkg)
	if m == nil {
		t.Fatal(`nix/package.nix has no vendorHash = "..."; line`)
	}
	vendor := filepath.Join(t.TempDir(), "vendor")
	cmd := exec.Command("go", "mod", "vendor", "-o", vendor)
	cmd.Dir = root
	// As in buildGoModule's vendoring step: module mode, the local toolchain, no workspace.
	cmd.Env = append(os.Environ(), "GOFLAGS=", "GOWORK=off", "GO111MODULE=on", "GOTOOLCHAIN=local")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("go mod vendor: %v\n%s", err, out)
	}
	out, err := exec.Command(nixBin, "--extra-experimental-features", "nix-command", "hash", "path", vendor).Output()
	if err != nil {
		t.Fatalf("nix hash path %s: %v", vendor, err)
	}
	if got := strings.TrimSpace(string(out)); got != string(m[1]) {
		t.Errorf("nix/package.nix's vendorHash is stale: go.mod/go.sum vendor to %s; set\n\tvendorHash = %q;", got, got)
	}
}

// TestModuleUpstreamCredentials: a private upstream's netrc and token files are credentials,
// named in the config file by their credential path, never by their source.
func TestModuleUpstreamCredentials(t *testing.T) {
	s := mustEvalModule(t, `{
    enable = true;
    settings.upstream = [ "https://cache.corp.example" "https://bob@other.example" ];
    settings.upstream-key = [ "corp-1:AAAA" ];
    upstreamNetrcFile = "/run/keys/upstream-netrc";
    upstreamTokenFile = "/run/keys/upstream-token";
  }`)
	sc := s.Services["cached"].ServiceConfig
	checkSettings(t, "cached.service", sc, map[string]any{
		"LoadCredential": []any{"upstream-netrc:/run/keys/upstream-netrc", "upstream-token:/run/keys/upstream-token"},
	})
	execStart, _ := sc["ExecStart"].(string)
	_, toml := configFile(t, execStart)
	for _, line := range []string{
		`upstream-netrc-file = "/run/credentials/cached.service/upstream-netrc"`,
		`upstream-token-file = "/run/credentials/cached.service/upstream-token"`,
	} {
		if !slices.Contains(strings.Split(toml, "\n"), line) {
			t.Errorf("config file lacks the line %s:\n%s", line, toml)
		}
	}
	if strings.Contains(toml, "/run/keys") {
		t.Errorf("config file names a secret's source path:\n%s", toml)
	}
}
