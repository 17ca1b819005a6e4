package server_test

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/cached-dev/cached/internal/server"
)

// TestLandingPageInBrowser renders the landing page in headless Chromium and checks what a person
// sees: the DOM after the browser parsed it, not the bytes the server sent. ./test.sh installs
// Debian's chromium; with CI=true a missing browser fails the test instead of skipping it.
func TestLandingPageInBrowser(t *testing.T) {
	browser := ""
	for _, name := range []string{"chromium", "chromium-browser"} {
		if p, err := exec.LookPath(name); err == nil {
			browser = p
			break
		}
	}
	if browser == "" {
		if os.Getenv("CI") == "true" {
			t.Fatal("chromium is not installed (./test.sh installs Debian's chromium); CI=true, so this is a failure, not a skip")
		}
		t.Skip("chromium is not installed (./test.sh installs it); skipped outside CI, fails when CI=true")
	}

	tc := newTestCacheConfig(t, func(c *server.Config) { c.UploadTokens = []string{testToken, landingToken} })
	var narBytes uint64
	for _, name := range []string{"browser-a", "browser-b", "browser-c"} {
		u := newUpload(t, name, "zstd")
		u.store(t, tc)
		narBytes += tc.narinfoOf(t, u).FileSize
	}

	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	home := t.TempDir()
	cmd := exec.CommandContext(ctx, browser, "--headless", "--no-sandbox", "--disable-gpu",
		"--disable-background-networking", "--disable-component-update", "--disable-sync",
		"--no-first-run", "--disable-dev-shm-usage", "--user-data-dir="+t.TempDir(), "--dump-dom", tc.URL+"/")
	// Chromium writes crash reports and caches under HOME; keep them out of the real one.
	cmd.Env = append(os.Environ(), "HOME="+home, "XDG_CONFIG_HOME="+home, "XDG_CACHE_HOME="+home)
	var stderr strings.Builder
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("%s --dump-dom: %v\n%s", browser, err, stderr.String())
	}
	dom := string(out)
	for _, want := range []string{
		`<code id="public-key">` + tc.Pub.String() + `</code>`,
		"substituters = " + tc.URL + "\n",
		"trusted-public-keys = " + tc.Pub.String(),
		"machine 127.0.0.1 login cached password TOKEN",
		`<dd id="store-paths">3</dd>`,
		fmt.Sprintf(`data-bytes="%d"`, narBytes),
	} {
		if !strings.Contains(dom, want) {
			t.Errorf("the rendered page lacks %q:\n%s", want, dom)
		}
	}
	if strings.Contains(dom, landingToken) {
		t.Error("the rendered page shows an upload token")
	}
}
