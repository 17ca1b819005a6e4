package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/url"
	"os"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/cached-dev/cached/internal/auth"
	"github.com/cached-dev/cached/internal/gc"
	"github.com/cached-dev/cached/internal/server"
	"github.com/dustin/go-humanize"
)

// adminFlags reach a running server's admin API.
type adminFlags struct {
	URL            string `help:"URL of the running cached server." default:"http://127.0.0.1:5000"`
	AdminTokenFile string `help:"File holding an admin token (the server writes DATA/admin-token on first start)." default:"./cached-data/admin-token" type:"path"`
}

func (a *adminFlags) do(method, path string, body io.Reader) (*http.Response, error) {
	raw, err := os.ReadFile(a.AdminTokenFile)
	if err != nil {
		return nil, fmt.Errorf("admin token: %w (give --admin-token-file)", err)
	}
	token := strings.TrimSpace(string(raw))
	if strings.HasPrefix(token, auth.DigestPrefix) {
		return nil, fmt.Errorf("--admin-token-file %s holds a token's digest, which only the server can use: give a file with the token itself", a.AdminTokenFile)
	}
	req, err := http.NewRequest(method, strings.TrimRight(a.URL, "/")+path, body)
	if err != nil {
		return nil, err
	}
	req.Header.Set("Authorization", "Bearer "+token)
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return nil, fmt.Errorf("cannot reach the server at %s: %w", a.URL, err)
	}
	if resp.StatusCode >= 300 {
		defer resp.Body.Close()
		msg, _ := io.ReadAll(io.LimitReader(resp.Body, 4096))
		return nil, fmt.Errorf("%s %s: %s: %s", method, path, resp.Status, strings.TrimSpace(string(msg)))
	}
	return resp, nil
}

type gcCmd struct {
	adminFlags
	OlderThan  string   `help:"Collect store paths not accessed (narinfo hit or download) for this long, e.g. 30d, 2w, 36h."`
	MaxSize    byteSize `help:"Then collect least recently used paths until stored NARs fit in this size, e.g. 500GiB."`
	KeepSince  string   `help:"Never collect paths uploaded less than this long ago, e.g. 1d."`
	Grace      string   `help:"A NAR is deleted only after it has had no narinfo for this long, so clients holding a cached narinfo can still download it." default:"1h"`
	DryRun     bool     `help:"Print what would be deleted and the bytes freed; delete nothing."`
	PulledOnly bool     `help:"Collect only paths pulled from an upstream (pull-through); uploaded paths and their closures stay. Alone, collects every pulled path no uploaded path references; with --older-than or --max-size, only pulled paths count as candidates."`
}

func (g *gcCmd) Run(log *slog.Logger) error {
	if g.OlderThan == "" && g.MaxSize == 0 && !g.PulledOnly {
		return fmt.Errorf("give --older-than and/or --max-size (or --pulled-only)")
	}
	q := url.Values{}
	if g.OlderThan != "" {
		q.Set("older-than", g.OlderThan)
	}
	if g.MaxSize > 0 {
		q.Set("max-size", strconv.FormatInt(int64(g.MaxSize), 10))
	}
	if g.KeepSince != "" {
		q.Set("keep-since", g.KeepSince)
	}
	q.Set("grace", g.Grace)
	if g.DryRun {
		q.Set("dry-run", "1")
	}
	if g.PulledOnly {
		q.Set("pulled-only", "1")
	}
	resp, err := g.do(http.MethodPost, "/_cached/gc?"+q.Encode(), nil)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	var report gc.Report
	if err := server.ReadProgress(resp.Body, printLine, &report); err != nil {
		return fmt.Errorf("the collection's output ended early (%v): it may still be running or have failed; see the server log", err)
	}
	switch {
	case report.Failures > 0:
		return fmt.Errorf("gc: %d failures", report.Failures)
	case report.Error != "":
		return fmt.Errorf("gc stopped: %s", report.Error)
	case report.DryRun:
		fmt.Printf("dry run: %d of %d paths would be deleted; nothing was\n", report.PathsDeleted, report.Paths)
	default:
		fmt.Printf("freed %s now, %s more after the grace period\n", humanize.IBytes(uint64(report.BytesFreed)), humanize.IBytes(uint64(report.BytesToFree)))
	}
	return nil
}

type pinCmd struct {
	Add pinAddCmd `cmd:"" help:"Pin a store path's closure (STOREPATH, its hash, or name:PREFIX for every path whose name starts with PREFIX)."`
	Rm  pinRmCmd  `cmd:"" help:"Remove a pin."`
	Ls  pinLsCmd  `cmd:"" help:"List pins."`
}

type pinAddCmd struct {
	adminFlags
	Paths []string `arg:"" help:"Store paths, hashes or name:PREFIX."`
}

// pinArg sends a store path as its base name: slashes have no place in one URL segment.
func pinArg(arg string) string {
	if strings.HasPrefix(arg, "/") {
		arg = arg[strings.LastIndexByte(arg, '/')+1:]
	}
	return url.PathEscape(arg)
}

func (p *pinAddCmd) Run(log *slog.Logger) error {
	for _, arg := range p.Paths {
		resp, err := p.do(http.MethodPut, "/_cached/pins/"+pinArg(arg), nil)
		if err != nil {
			return err
		}
		io.Copy(os.Stdout, resp.Body)
		resp.Body.Close()
	}
	return nil
}

type pinRmCmd struct {
	adminFlags
	Paths []string `arg:"" help:"Store paths, hashes or name:PREFIX."`
}

func (p *pinRmCmd) Run(log *slog.Logger) error {
	for _, arg := range p.Paths {
		resp, err := p.do(http.MethodDelete, "/_cached/pins/"+pinArg(arg), nil)
		if err != nil {
			return err
		}
		io.Copy(os.Stdout, resp.Body)
		resp.Body.Close()
	}
	return nil
}

type pinLsCmd struct{ adminFlags }

func (p *pinLsCmd) Run(log *slog.Logger) error {
	resp, err := p.do(http.MethodGet, "/_cached/pins", nil)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	var pins []struct {
		Pin       string    `json:"pin"`
		StorePath string    `json:"storePath"`
		Since     time.Time `json:"since"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&pins); err != nil {
		return err
	}
	tw := tabwriter.NewWriter(os.Stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "PIN\tSTORE PATH\tSINCE")
	for _, p := range pins {
		fmt.Fprintf(tw, "%s\t%s\t%s\n", p.Pin, p.StorePath, p.Since.Format(time.RFC3339))
	}
	return tw.Flush()
}

type tokenCmd struct {
	Create tokenCreateCmd `cmd:"" help:"Create a token; its secret is printed once."`
	List   tokenListCmd   `cmd:"" help:"List tokens (never their secrets)."`
	Revoke tokenRevokeCmd `cmd:"" help:"Revoke a token by id; it stops working at once."`
	Hash   tokenHashCmd   `cmd:"" help:"Read a token on stdin and print the sha256:<hex> line that may stand for it in --upload-token-file or --admin-token-file."`
}

type tokenCreateCmd struct {
	adminFlags
	Name    string `arg:"" help:"What the token is for, e.g. ci-uploader."`
	Scope   string `help:"read (download from a --private cache), write (upload; includes read) or admin (gc, pins, tokens; includes write)." default:"write" enum:"read,write,admin"`
	Expires string `help:"The token stops working this long after creation, e.g. 30d, 2w, 36h (default: never)." placeholder:"DURATION"`
}

func (t *tokenCreateCmd) Run(log *slog.Logger) error {
	if t.Expires != "" {
		// Checked here too, so that a typo is reported before the server is asked.
		if d, err := server.ParseDuration(t.Expires); err != nil || d <= 0 {
			return fmt.Errorf("--expires %q: want a duration longer than 0, e.g. 30d, 2w, 36h", t.Expires)
		}
	}
	body, _ := json.Marshal(map[string]string{"name": t.Name, "scope": t.Scope, "expires": t.Expires})
	resp, err := t.do(http.MethodPost, "/_cached/tokens", bytes.NewReader(body))
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	var tok struct {
		ID, Name, Scope, Secret string
		Expires                 time.Time
	}
	if err := json.NewDecoder(resp.Body).Decode(&tok); err != nil {
		return err
	}
	u, _ := url.Parse(t.URL)
	fmt.Printf("token %s (%s, scope %s, expires %s):\n%s\n\nnetrc line for nix (netrc-file in nix.conf):\nmachine %s login cached password %s\n",
		tok.ID, tok.Name, tok.Scope, expiryText(tok.Expires, time.Now()), tok.Secret, u.Hostname(), tok.Secret)
	return nil
}

// expiryText is how token create and token list show an expiry.
func expiryText(expires, now time.Time) string {
	switch {
	case expires.IsZero():
		return "never"
	case !now.Before(expires):
		return expires.UTC().Format(time.RFC3339) + " (expired)"
	}
	return expires.UTC().Format(time.RFC3339)
}

type tokenListCmd struct{ adminFlags }

func (t *tokenListCmd) Run(log *slog.Logger) error {
	resp, err := t.do(http.MethodGet, "/_cached/tokens", nil)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	var toks []struct {
		ID, Name, Scope  string
		Created, Expires time.Time
	}
	if err := json.NewDecoder(resp.Body).Decode(&toks); err != nil {
		return err
	}
	now := time.Now()
	tw := tabwriter.NewWriter(os.Stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "ID\tNAME\tSCOPE\tCREATED\tEXPIRES")
	for _, k := range toks {
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\n", k.ID, k.Name, k.Scope, k.Created.Format(time.RFC3339), expiryText(k.Expires, now))
	}
	return tw.Flush()
}

type tokenRevokeCmd struct {
	adminFlags
	ID string `arg:"" help:"Token id (from cached token list)."`
}

func (t *tokenRevokeCmd) Run(log *slog.Logger) error {
	resp, err := t.do(http.MethodDelete, "/_cached/tokens/"+url.PathEscape(t.ID), nil)
	if err != nil {
		return err
	}
	resp.Body.Close()
	fmt.Printf("revoked %s\n", t.ID)
	return nil
}

type tokenHashCmd struct{}

func (t *tokenHashCmd) Run(log *slog.Logger) error {
	raw, err := io.ReadAll(io.LimitReader(os.Stdin, 64<<10))
	if err != nil {
		return fmt.Errorf("reading the token on stdin: %w", err)
	}
	// The same trimming as token files get, so that echo's newline does not change the digest.
	token := strings.TrimSpace(string(raw))
	if token == "" {
		return fmt.Errorf("no token on stdin (e.g. cached token hash < token-file)")
	}
	if strings.HasPrefix(token, auth.DigestPrefix) {
		return fmt.Errorf("stdin holds a digest already, not a token")
	}
	fmt.Println(auth.HashToken(token))
	return nil
}

// printLine prints a progress line of an admin run (server.ReadProgress).
func printLine(line string) { fmt.Println(line) }
