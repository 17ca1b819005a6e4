package push

import (
	"fmt"
	"net/url"
	"os"
	"strings"

	"github.com/cached-dev/cached/internal/netrc"
)

// ReadToken reads the upload token for cacheURL from file: the file's content (surrounding
// whitespace trimmed), or, when the file is a netrc file (as nix's netrc-file), the password of
// the machine matching cacheURL's host. Errors name the file.
func ReadToken(file, cacheURL string) (string, error) {
	raw, err := os.ReadFile(file)
	if err != nil {
		return "", fmt.Errorf("token file: %w", err)
	}
	data := string(raw)
	if !netrc.LooksLikeNetrc(data) {
		tok := strings.TrimSpace(data)
		if tok == "" {
			return "", fmt.Errorf("token file %s is empty", file)
		}
		if strings.ContainsAny(tok, " \t\r\n") {
			return "", fmt.Errorf("token file %s holds more than one word and is not a netrc file (want the token alone, or netrc lines \"machine HOST password TOKEN\")", file)
		}
		return tok, nil
	}
	entries, err := netrc.Parse(data)
	if err != nil {
		return "", fmt.Errorf("token file %s: %w", file, err)
	}
	u, err := url.Parse(cacheURL)
	if err != nil {
		return "", fmt.Errorf("cache URL %q: %w", cacheURL, err)
	}
	e, ok := netrc.Lookup(entries, u.Hostname())
	pw := e.Password
	if !ok {
		return "", fmt.Errorf("token file %s is a netrc file without a \"machine %s\" (or default) entry", file, u.Hostname())
	}
	if pw == "" {
		return "", fmt.Errorf("token file %s: the netrc entry for %s has no password", file, u.Hostname())
	}
	return pw, nil
}
