// Package netrc reads netrc files (login and password by host) as curl, and so nix, reads them.
// It reads; it never writes nor logs a password.
package netrc

import (
	"errors"
	"fmt"
	"strings"
)

// Entry is one machine (or the default) of a netrc file.
type Entry struct {
	Machine  string // "" for the default entry
	Login    string
	Password string
}

// Parse reads a netrc file as curl (and so nix, whose netrc-file it is) does: whitespace-
// separated tokens, "machine NAME" or "default" opening an entry, "login", "password" and
// "account" taking the next token as value, "macdef NAME" skipping up to the next empty line,
// and "#" starting a comment up to the end of its line. Values may be double-quoted, with
// backslash escapes. Unknown tokens are an error, as is a keyword without its value.
func Parse(data string) ([]Entry, error) {
	var (
		entries []Entry
		cur     *Entry
	)
	t := tokens{s: data}
	afterSecret := false // the last token read was a password or account value
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
			entries = append(entries, Entry{Machine: name})
			cur = &entries[len(entries)-1]
		case "default":
			entries = append(entries, Entry{})
			cur = &entries[len(entries)-1]
		case "login", "password", "account":
			afterSecret = tok != "login"
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
			if afterSecret {
				// Most likely the rest of a password with a space: never quote it.
				return nil, errors.New("netrc: unknown keyword after a password or account (one with spaces must be double-quoted)")
			}
			return nil, fmt.Errorf("netrc: unknown keyword %q", truncate(tok, 40))
		}
		if tok != "login" && tok != "password" && tok != "account" {
			afterSecret = false
		}
	}
	return entries, nil
}

// tokens splits a netrc file into tokens.
type tokens struct {
	s   string
	pos int
}

func (t *tokens) next() (string, bool, error) {
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

func (t *tokens) quoted() (string, bool, error) {
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
func (t *tokens) value(keyword string) (string, error) {
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
func (t *tokens) skipMacro() {
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

// LooksLikeNetrc reports whether data is a netrc file rather than a bare secret: its first token
// is one of netrc's entry keywords. A token never is (cached's tokens are "cached_<hex>").
func LooksLikeNetrc(data string) bool {
	t := tokens{s: data}
	tok, ok, err := t.next()
	return err == nil && ok && (tok == "machine" || tok == "default" || tok == "macdef")
}

// Lookup returns the entry for host (a host name, without port): the first machine of that name
// (case-insensitive), else the default entry, as curl picks it.
func Lookup(entries []Entry, host string) (Entry, bool) {
	for _, e := range entries {
		if e.Machine != "" && strings.EqualFold(e.Machine, host) {
			return e, true
		}
	}
	for _, e := range entries {
		if e.Machine == "" {
			return e, true
		}
	}
	return Entry{}, false
}

func truncate(s string, n int) string {
	if len(s) > n {
		return s[:n] + "..."
	}
	return s
}
