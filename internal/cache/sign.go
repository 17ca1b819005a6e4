package cache

// Signing with one or more keys, and key rotation.
//
// Every narinfo the cache serves carries a signature by each current key. A narinfo is signed by
// all of them when it is committed. One committed before a key was added lacks that key's
// signature: signServed adds it on the fly to what is served (an ed25519 signature costs about
// 20µs, paid only by such narinfos), and Resign stores it, in the backend and the index, so that
// the cost goes away and plain nix reading the backend sees it too.
//
// Signatures by keys that are no longer configured are kept: they may be an uploader's (the
// server cannot tell an old key of its own from a builder's), and a client that does not trust
// a key ignores its signature. Resign with DropOthers removes every signature not made by a
// current key.

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"

	"github.com/cached-dev/cached/internal/index"
	"github.com/cached-dev/cached/internal/narinfo"
	"github.com/cached-dev/cached/internal/signing"
)

// signingKeys are the keys the cache signs with, the primary first.
type signingKeys struct {
	keys []signing.SecretKey
	// marks[i] is "\nSig: <name of keys[i]>:", which a narinfo signed by keys[i] contains:
	// finding them all is the whole cost of serving a narinfo that needs no new signature.
	marks [][]byte
	// signed remembers what signServed made, so that a narinfo lacking a signature pays for
	// parsing, signing and formatting (about 50µs) once rather than on every hit.
	signed *signedMemo
}

// signedMemo maps a store hash to the stored text it was made from and the text served. An entry
// is used only while the stored text is the same, so a path deleted or committed again needs no
// invalidation. Bounded like the index's memo: when full it is dropped whole.
type signedMemo struct {
	mu    sync.RWMutex
	m     map[string][2][]byte
	bytes int
}

const maxSignedMemo = 16 << 20

func (m *signedMemo) get(hash string, stored []byte) ([]byte, bool) {
	m.mu.RLock()
	e, ok := m.m[hash]
	m.mu.RUnlock()
	if ok && bytes.Equal(e[0], stored) {
		return e[1], true
	}
	return nil, false
}

func (m *signedMemo) put(hash string, stored, served []byte) {
	m.mu.Lock()
	defer m.mu.Unlock()
	n := len(stored) + len(served)
	if m.bytes+n > maxSignedMemo {
		m.m, m.bytes = map[string][2][]byte{}, 0
	}
	if old, ok := m.m[hash]; ok {
		m.bytes -= len(old[0]) + len(old[1])
	}
	m.m[hash] = [2][]byte{stored, served}
	m.bytes += n
}

// SetSigningKeys replaces the keys narinfos are signed with; the first is the primary key (the one
// PublicKey returns). Key names must differ: a narinfo holds one signature per key name. It must
// be called before the cache is used.
func (c *Cache) SetSigningKeys(keys []signing.SecretKey) error {
	if len(keys) == 0 {
		return errors.New("no signing key")
	}
	sk := signingKeys{signed: &signedMemo{m: map[string][2][]byte{}}}
	seen := map[string]bool{}
	for _, k := range keys {
		if k.Name == "" || len(k.Key) == 0 {
			return fmt.Errorf("signing key %q is empty", k.Name)
		}
		if seen[k.Name] {
			return fmt.Errorf("two signing keys are named %q: key names must differ", k.Name)
		}
		seen[k.Name] = true
		sk.keys = append(sk.keys, k)
		sk.marks = append(sk.marks, []byte("\nSig: "+k.Name+":"))
	}
	c.keys = sk
	return nil
}

// PublicKey is the primary key: the one shown first to clients.
func (c *Cache) PublicKey() signing.PublicKey { return c.keys.keys[0].Public() }

// PublicKeys are the public halves of every current key, the primary first: what clients may put
// in trusted-public-keys.
func (c *Cache) PublicKeys() []signing.PublicKey {
	out := make([]signing.PublicKey, len(c.keys.keys))
	for i, k := range c.keys.keys {
		out[i] = k.Public()
	}
	return out
}

// sign adds a signature by every current key, replacing earlier ones by the same key names and
// keeping all others (the uploader's).
func (c *Cache) sign(ni *narinfo.NarInfo) {
	fp := ni.Fingerprint()
	sigs := ni.Sigs[:0]
	for _, s := range ni.Sigs {
		if _, ok := c.keyNamed(sigName(s)); !ok {
			sigs = append(sigs, s)
		}
	}
	for _, k := range c.keys.keys {
		sigs = append(sigs, k.Sign(fp))
	}
	ni.Sigs = sigs
}

// keyNamed returns the current key called name.
func (c *Cache) keyNamed(name string) (signing.SecretKey, bool) {
	for _, k := range c.keys.keys {
		if k.Name == name {
			return k, true
		}
	}
	return signing.SecretKey{}, false
}

// sigName is the key name of a "<name>:<base64>" signature.
func sigName(sig string) string {
	name, _, _ := strings.Cut(sig, ":")
	return name
}

// signServed returns text, the stored narinfo of hash, with a signature added for every current
// key that has none in it (a key added since it was committed). text itself is never modified.
func (c *Cache) signServed(hash string, text []byte) []byte {
	complete := true
	for _, m := range c.keys.marks {
		if !bytes.Contains(text, m) {
			complete = false
			break
		}
	}
	if complete {
		return text
	}
	if out, ok := c.keys.signed.get(hash, text); ok {
		return out
	}
	ni, err := narinfo.Parse(text)
	if err != nil {
		// Indexed narinfos were parsed before; serve what is stored rather than nothing.
		c.log.Warn("stored narinfo does not parse; served unsigned by new keys", "hash", hash, "err", err)
		return text
	}
	var fp string
	added := false
	for _, k := range c.keys.keys {
		if hasSigBy(ni.Sigs, k.Name) {
			continue
		}
		if fp == "" {
			fp = ni.Fingerprint()
		}
		ni.Sigs = append(ni.Sigs, k.Sign(fp))
		added = true
	}
	if !added {
		return text
	}
	out := ni.Bytes()
	// text may be shared with the index's memo, which never modifies it either.
	c.keys.signed.put(hash, text, out)
	return out
}

func hasSigBy(sigs []string, name string) bool {
	for _, s := range sigs {
		if sigName(s) == name {
			return true
		}
	}
	return false
}

// ResignOptions say what Resign does besides adding missing signatures.
type ResignOptions struct {
	// DropOthers removes every signature not made by a current key: old keys of the server's
	// and uploaders' alike.
	DropOthers bool
	// DryRun counts what would change and writes nothing.
	DryRun bool
}

// ResignStats summarises a Resign.
type ResignStats struct {
	NarInfos    int // narinfos looked at
	Resigned    int // narinfos rewritten (or, in a dry run, that would be)
	SigsAdded   int // signatures by current keys added (missing, or not verifying)
	SigsDropped int // signatures removed with DropOthers
	Invalid     int // stored narinfos that do not parse (skipped, logged)
}

// Resign makes every stored narinfo carry a valid signature by each current key, rewriting it in
// the backend and then in the index. A signature by a current key's name that does not verify
// (the key was replaced under the same name) is replaced. It is safe while the cache serves:
// each narinfo is rewritten under its commit lock, so a commit or deletion of the same path
// waits, and reads go on. progress, if not nil, is called every 1000 narinfos.
func (c *Cache) Resign(ctx context.Context, opts ResignOptions, progress func(ResignStats)) (ResignStats, error) {
	var st ResignStats
	// Collect the hashes first: rewriting inside the index's iteration would hold its
	// transaction for the whole run.
	var hashes []string
	err := c.index.NarInfos(func(hash string, _ []byte) error {
		hashes = append(hashes, hash)
		return nil
	})
	if err != nil {
		return st, fmt.Errorf("resign: %w", err)
	}
	for _, hash := range hashes {
		if err := ctx.Err(); err != nil {
			return st, fmt.Errorf("resign: %w", err)
		}
		if err := c.resignOne(ctx, hash, opts, &st); err != nil {
			return st, fmt.Errorf("resign %s: %w", hash, err)
		}
		if progress != nil && st.NarInfos%1000 == 0 && st.NarInfos > 0 {
			progress(st)
		}
	}
	return st, nil
}

func (c *Cache) resignOne(ctx context.Context, hash string, opts ResignOptions, st *ResignStats) error {
	mu := &c.commitLocks[lockSlot(hash)]
	mu.Lock()
	defer mu.Unlock()
	text, err := c.index.NarInfo(hash)
	if errors.Is(err, index.ErrNotFound) {
		return nil // collected meanwhile
	}
	if err != nil {
		return err
	}
	st.NarInfos++
	ni, err := narinfo.Parse(text)
	if err != nil {
		st.Invalid++
		c.log.Warn("resign: skipping a stored narinfo that does not parse", "hash", hash, "err", err)
		return nil
	}
	fp := ni.Fingerprint()
	valid := make(map[string]bool, len(c.keys.keys))
	sigs := make([]string, 0, len(ni.Sigs)+len(c.keys.keys))
	changed := false
	for _, s := range ni.Sigs {
		k, current := c.keyNamed(sigName(s))
		switch {
		case current && k.Public().Verify(fp, s) && !valid[k.Name]:
			valid[k.Name] = true
			sigs = append(sigs, s)
		case current:
			changed = true // a stale signature under a current key's name: replaced below
		case opts.DropOthers:
			changed = true
			st.SigsDropped++
		default:
			sigs = append(sigs, s)
		}
	}
	for _, k := range c.keys.keys {
		if !valid[k.Name] {
			sigs = append(sigs, k.Sign(fp))
			st.SigsAdded++
			changed = true
		}
	}
	if !changed {
		return nil
	}
	st.Resigned++
	if opts.DryRun {
		return nil
	}
	ni.Sigs = sigs
	out := ni.Bytes()
	// The backend first: it is the source of truth, and an index entry ahead of it would be
	// lost by the next reindex anyway.
	if err := c.backend.Save(ctx, hash+".narinfo", bytes.NewReader(out)); err != nil {
		return err
	}
	return c.index.PutNarInfo(hash, out)
}
