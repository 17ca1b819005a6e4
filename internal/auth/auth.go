// Package auth holds the cache's access tokens and their scopes. Tokens are stored only as
// SHA-256 digests (in the index) and compared in constant time; a token's plaintext exists once,
// when it is created. It must never log or return a stored token.
package auth

import (
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/cached-dev/cached/internal/index"
)

// Scope is what a token allows. Each scope includes the ones below it: admin ⊇ write ⊇ read.
type Scope int

const (
	ScopeNone Scope = iota
	ScopeRead
	ScopeWrite
	ScopeAdmin
)

func (s Scope) String() string {
	switch s {
	case ScopeRead:
		return "read"
	case ScopeWrite:
		return "write"
	case ScopeAdmin:
		return "admin"
	}
	return "none"
}

// ParseScope parses "read", "write" or "admin".
func ParseScope(s string) (Scope, error) {
	switch strings.ToLower(strings.TrimSpace(s)) {
	case "read":
		return ScopeRead, nil
	case "write":
		return ScopeWrite, nil
	case "admin":
		return ScopeAdmin, nil
	}
	return ScopeNone, fmt.Errorf("scope %q: want read, write or admin", s)
}

// Token describes a stored token (never its secret).
type Token struct {
	ID      string    `json:"id"` // first 12 hex digits of the digest: names the token in lists
	Name    string    `json:"name"`
	Scope   string    `json:"scope"`
	Created time.Time `json:"created"`
	// Expires is when the token stops working; zero for a token that never expires. Tokens
	// stored before expiry existed have none.
	Expires time.Time `json:"expires,omitzero"`
}

// Expired reports whether tok has expired at now.
func (tok Token) Expired(now time.Time) bool {
	return !tok.Expires.IsZero() && !now.Before(tok.Expires)
}

// ExpiredError is what Check returns for a known token past its expiry: the caller answers 401
// and says why, so that the owner knows to ask for a new token rather than suspect a typo.
type ExpiredError struct {
	ID      string
	Name    string
	Expired time.Time
}

func (e *ExpiredError) Error() string {
	return fmt.Sprintf("token %s (%s) expired at %s", e.ID, e.Name, e.Expired.UTC().Format(time.RFC3339))
}

const prefix = "k/"

// ErrNotFound is returned for an unknown token id.
var ErrNotFound = errors.New("no such token")

// Store keeps tokens in the index, plus fixed tokens from files (upload-tokens, admin-token).
type Store struct {
	ix    *index.Index
	fixed []fixedToken
	now   func() time.Time // the clock expiry is checked against; tests move it
}

type fixedToken struct {
	digest [32]byte
	scope  Scope
}

// NewStore returns a store over ix (may be nil: fixed tokens only).
func NewStore(ix *index.Index) *Store { return &Store{ix: ix, now: time.Now} }

// AddFixed accepts token with scope without storing it (tokens from files). token is either the
// secret itself or its digest, "sha256:<64 hex digits>" (see ParseFixed). Blank tokens and
// malformed digests are ignored, so that they can never match: callers that read files check each
// line with ParseFixed first and report what is wrong with it.
func (s *Store) AddFixed(token string, scope Scope) {
	if d, err := ParseFixed(token); err == nil {
		s.fixed = append(s.fixed, fixedToken{d, scope})
	}
}

// DigestPrefix marks a line of a token file that holds a token's SHA-256 digest instead of the
// token, so that the file need not hold a secret.
const DigestPrefix = "sha256:"

// ParseFixed reads one token from a token file: "sha256:<64 hex digits>" is a digest, anything
// else the secret itself (surrounding whitespace trimmed). It returns the digest that presented
// tokens are compared with. A blank line is an error, and so is a digest that is not 64 hex
// digits: the error never quotes the line, which may be a secret.
func ParseFixed(line string) ([32]byte, error) {
	var d [32]byte
	line = strings.TrimSpace(line)
	if line == "" {
		return d, errors.New("empty token")
	}
	hexDigest, ok := strings.CutPrefix(line, DigestPrefix)
	if !ok {
		return sha256.Sum256([]byte(line)), nil
	}
	if len(hexDigest) != 2*len(d) {
		return d, fmt.Errorf("%s digest has %d characters, want %d hex digits", DigestPrefix, len(hexDigest), 2*len(d))
	}
	if _, err := hex.Decode(d[:], []byte(hexDigest)); err != nil {
		return d, fmt.Errorf("%s digest is not hexadecimal", DigestPrefix)
	}
	return d, nil
}

// HashToken returns the line that stands for token in a token file: "sha256:" and the hex
// SHA-256 digest of the token.
func HashToken(token string) string {
	d := sha256.Sum256([]byte(token))
	return DigestPrefix + hex.EncodeToString(d[:])
}

// Create makes a new token that never expires and returns its secret, shown once.
func (s *Store) Create(name string, scope Scope) (secret string, tok Token, err error) {
	return s.CreateExpiring(name, scope, time.Time{})
}

// CreateExpiring makes a new token that stops working at expires (zero: never) and returns its
// secret, shown once.
func (s *Store) CreateExpiring(name string, scope Scope, expires time.Time) (secret string, tok Token, err error) {
	if s.ix == nil {
		return "", Token{}, errors.New("no token store")
	}
	if scope == ScopeNone {
		return "", Token{}, errors.New("a token needs a scope")
	}
	now := s.now().UTC()
	if !expires.IsZero() && !expires.After(now) {
		return "", Token{}, fmt.Errorf("expiry %s is not in the future", expires.UTC().Format(time.RFC3339))
	}
	var b [24]byte
	if _, err := rand.Read(b[:]); err != nil {
		return "", Token{}, err
	}
	secret = "cached_" + hex.EncodeToString(b[:])
	d := sha256.Sum256([]byte(secret))
	key := hex.EncodeToString(d[:])
	tok = Token{ID: key[:12], Name: name, Scope: scope.String(), Created: now.Truncate(time.Second)}
	if !expires.IsZero() {
		tok.Expires = expires.UTC()
	}
	val, _ := json.Marshal(tok)
	if err := s.ix.PutRecord(prefix, key, val); err != nil {
		return "", Token{}, err
	}
	return secret, tok, nil
}

// Check returns the scope a presented token grants (ScopeNone if it is unknown). A stored token
// past its expiry grants nothing and comes with an *ExpiredError.
func (s *Store) Check(token string) (Scope, error) {
	d := sha256.Sum256([]byte(token))
	best := ScopeNone
	for _, f := range s.fixed {
		if subtle.ConstantTimeCompare(d[:], f.digest[:]) == 1 && f.scope > best {
			best = f.scope
		}
	}
	if best != ScopeNone || s.ix == nil {
		return best, nil
	}
	// The lookup key is the digest itself, so the index compares digests, never secrets.
	val, err := s.ix.Record(prefix, hex.EncodeToString(d[:]))
	if errors.Is(err, index.ErrNotFound) {
		return ScopeNone, nil
	}
	if err != nil {
		return ScopeNone, err
	}
	var tok Token
	if err := json.Unmarshal(val, &tok); err != nil {
		return ScopeNone, err
	}
	if tok.Expired(s.now()) {
		return ScopeNone, &ExpiredError{ID: tok.ID, Name: tok.Name, Expired: tok.Expires}
	}
	return ParseScope(tok.Scope)
}

// List returns the stored tokens, oldest first.
func (s *Store) List() ([]Token, error) {
	var out []Token
	if s.ix == nil {
		return out, nil
	}
	err := s.ix.Records(prefix, func(_ string, val []byte) error {
		var tok Token
		if err := json.Unmarshal(val, &tok); err != nil {
			return err
		}
		out = append(out, tok)
		return nil
	})
	slices.SortFunc(out, func(a, b Token) int { return a.Created.Compare(b.Created) })
	return out, err
}

// Revoke deletes the token with the given id (or unique id prefix of at least 6 digits).
func (s *Store) Revoke(id string) (Token, error) {
	if len(id) < 6 || s.ix == nil {
		return Token{}, fmt.Errorf("token id %q: %w", id, ErrNotFound)
	}
	var match []string
	var tok Token
	err := s.ix.Records(prefix, func(key string, val []byte) error {
		if strings.HasPrefix(key, id) {
			match = append(match, key)
			json.Unmarshal(val, &tok)
		}
		return nil
	})
	if err != nil {
		return Token{}, err
	}
	switch len(match) {
	case 0:
		return Token{}, fmt.Errorf("token id %q: %w", id, ErrNotFound)
	case 1:
		return tok, s.ix.DeleteRecord(prefix, match[0])
	}
	return Token{}, fmt.Errorf("token id %q matches %d tokens; give more digits", id, len(match))
}
