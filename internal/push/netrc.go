package push

import (
	"errors"
	"fmt"
	"net/url"
	"os"
	"strings"
)

// NetrcEntry is one machine (or the default) of a netrc file.
type NetrcEntry struct {
	Machine  string // "" for the default entry
	Login    string
	Password string
}

// ParseNetrc reads a netrc file as curl (and so nix, whose netrc-file it is) does: whitespace-
// separated tokens, "machine NAME" or "default" opening an entry, "login", "password" and
// "account" taking the next token as value, "macdef NAME" skipping up to the next empty line,
// and "#" starting a comment up to the end of its line. Values may be double-quoted, with
// backslash escapes. Unknown tokens are an error, as is a keyword without its value.
func ParseNetrc(data string) ([]NetrcEntry, error) {
	var (
		entries []NetrcEntry
		cur     *NetrcEntry
	)
	t := netrcTokens{s: data}
	for {
		tok, ok, err := t.next()
		if err != nil {
			return nil, err
		}
		if !ok {
			break
		}
		switch tok {
		case "machine":
			name, err := t.value(tok)
			if err != nil {
				return nil, err
			}
			entries = append(entries, NetrcEntry{Machine: name})
			cur = &entries[len(entries)-1]
		case "default":
			entries = append(entries, NetrcEntry{})
			cur = &entries[len(entries)-1]
		case "login", "password", "account":
			v, err := t.value(tok)
			if err != nil {
				return nil, err
			}
			if cur == nil {
				return nil, fmt.Errorf("netrc: %q before any machine or default", tok)
			}
			switch tok {
			case "login":
				cur.Login = v
			case "password":
				cur.Password = v
			}
		case "macdef":
			if _, err := t.value(tok); err != nil {
				return nil, err
			}
			t.skipMacro()
		default:
			return nil, fmt.Errorf("netrc: unknown keyword %q", truncate(tok, 40))
		}
	}
	return entries, nil
}

// netrcTokens splits a netrc file into tokens.
type netrcTokens struct {
	s   string
	pos int
}

func (t *netrcTokens) next() (string, bool, error) {
	for t.pos < len(t.s) {
		c := t.s[t.pos]
		switch {
		case c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\f' || c == '\v':
			t.pos++
		case c == '#':
			for t.pos < len(t.s) && t.s[t.pos] != '\n' {
				t.pos++
			}
		case c == '"':
			return t.quoted()
		default:
			start := t.pos
			for t.pos < len(t.s) && !strings.ContainsRune(" \t\n\r\f\v", rune(t.s[t.pos])) {
				t.pos++
			}
			return t.s[start:t.pos], true, nil
		}
	}
	return "", false, nil
}

func (t *netrcTokens) quoted() (string, bool, error) {
	var b strings.Builder
	t.pos++ // the opening quote
	for t.pos < len(t.s) {
		c := t.s[t.pos]
		t.pos++
		switch c {
		case '"':
			return b.String(), true, nil
		case '\\':
			if t.pos >= len(t.s) {
				return "", false, errors.New("netrc: unterminated quoted string")
			}
			switch e := t.s[t.pos]; e {
			case 'n':
				b.WriteByte('\n')
			case 'r':
				b.WriteByte('\r')
			case 't':
				b.WriteByte('\t')
			default:
				b.WriteByte(e)
			}
			t.pos++
		default:
			b.WriteByte(c)
		}
	}
	return "", false, errors.New("netrc: unterminated quoted string")
}

// value returns the token after keyword.
func (t *netrcTokens) value(keyword string) (string, error) {
	v, ok, err := t.next()
	if err != nil {
		return "", err
	}
	if !ok {
		return "", fmt.Errorf("netrc: %q at the end of the file, without its value", keyword)
	}
	return v, nil
}

// skipMacro skips a macro definition's body: the rest of its line and every line up to the
// first empty one.
func (t *netrcTokens) skipMacro() {
	i := strings.IndexByte(t.s[t.pos:], '\n')
	if i < 0 {
		t.pos = len(t.s)
		return
	}
	t.pos += i + 1
	for t.pos < len(t.s) {
		end := strings.IndexByte(t.s[t.pos:], '\n')
		line := t.s[t.pos:]
		if end >= 0 {
			line = line[:end]
		}
		if strings.TrimRight(line, "\r") == "" {
			return
		}
		if end < 0 {
			t.pos = len(t.s)
			return
		}
		t.pos += end + 1
	}
}

// looksLikeNetrc reports whether a token file is a netrc file: its first token is one of
// netrc's entry keywords. A token never is (cached's tokens are "cached_<hex>").
func looksLikeNetrc(data string) bool {
	t := netrcTokens{s: data}
	tok, ok, err := t.next()
	return err == nil && ok && (tok == "machine" || tok == "default" || tok == "macdef")
}

// NetrcPassword returns the password of the entry for host (the default entry if no machine
// matches), as curl picks it.
func NetrcPassword(entries []NetrcEntry, host string) (string, bool) {
	for _, e := range entries {
		if e.Machine != "" && strings.EqualFold(e.Machine, host) {
			return e.Password, true
		}
	}
	for _, e := range entries {
		if e.Machine == "" {
			return e.Password, true
		}
	}
	return "", false
}

// ReadToken reads the upload token for cacheURL from file: the file's content (surrounding
// whitespace trimmed), or, when the file is a netrc file (as nix's netrc-file), the password of
// the machine matching cacheURL's host. Errors name the file.
func ReadToken(file, cacheURL string) (string, error) {
	raw, err := os.ReadFile(file)
	if err != nil {
		return "", fmt.Errorf("token file: %w", err)
	}
	data := string(raw)
	if !looksLikeNetrc(data) {
		tok := strings.TrimSpace(data)
		if tok == "" {
			return "", fmt.Errorf("token file %s is empty", file)
		}
		if strings.ContainsAny(tok, " \t\r\n") {
			return "", fmt.Errorf("token file %s holds more than one word and is not a netrc file (want the token alone, or netrc lines \"machine HOST password TOKEN\")", file)
		}
		return tok, nil
	}
	entries, err := ParseNetrc(data)
	if err != nil {
		return "", fmt.Errorf("token file %s: %w", file, err)
	}
	u, err := url.Parse(cacheURL)
	if err != nil {
		return "", fmt.Errorf("cache URL %q: %w", cacheURL, err)
	}
	pw, ok := NetrcPassword(entries, u.Hostname())
	if !ok {
		return "", fmt.Errorf("token file %s is a netrc file without a \"machine %s\" (or default) entry", file, u.Hostname())
	}
	if pw == "" {
		return "", fmt.Errorf("token file %s: the netrc entry for %s has no password", file, u.Hostname())
	}
	return pw, nil
}

func truncate(s string, n int) string {
	if len(s) > n {
		return s[:n] + "..."
	}
	return s
}
