package narinfo

import (
	"bytes"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"strconv"
	"strings"

	"github.com/nix-community/go-nix/pkg/nixbase32"
)

// Hash is a content hash, e.g. sha256.
type Hash struct {
	Algo   string // "md5", "sha1", "sha256" or "sha512"
	Digest []byte
}

// digestSize maps the algorithms Nix knows to their digest length in bytes.
func digestSize(algo string) int {
	switch algo {
	case "md5":
		return 16
	case "sha1":
		return 20
	case "sha256":
		return 32
	case "sha512":
		return 64
	}
	return 0
}

// ParseHash parses a hash with its algorithm prefix, in any form Nix reads: "<algo>:" followed by
// nix32, base16 or base64, or SRI "<algo>-<base64>". Like Nix, the form is told apart by its
// length, which is unambiguous for every algorithm. Errors name the offending value.
func ParseHash(s string) (Hash, error) {
	h, err := parseHash(s)
	if err != nil {
		return Hash{}, fmt.Errorf("invalid hash %s: %w", quote(s), err)
	}
	return h, nil
}

func parseHash(s string) (Hash, error) {
	algo, rest, sri := "", "", false
	if i := strings.IndexByte(s, ':'); i >= 0 {
		algo, rest = s[:i], s[i+1:]
	} else if i := strings.IndexByte(s, '-'); i >= 0 {
		algo, rest, sri = s[:i], s[i+1:], true
	} else {
		return Hash{}, errors.New("no algorithm prefix")
	}
	size := digestSize(algo)
	if size == 0 {
		return Hash{}, fmt.Errorf("unknown algorithm %s", quote(algo))
	}

	var (
		digest []byte
		err    error
	)
	switch {
	case sri:
		// SRI is always base64; Nix tolerates missing padding there.
		digest, err = decodeBase64(rest, true)
	case len(rest) == 2*size:
		// Nix accepts upper-case hex too, as encoding/hex does.
		digest, err = hex.DecodeString(rest)
	case len(rest) == nixbase32.EncodedLen(size):
		digest, err = nixbase32.DecodeString(rest)
	case len(rest) == base64.StdEncoding.EncodedLen(size):
		digest, err = decodeBase64(rest, false)
	default:
		return Hash{}, fmt.Errorf("wrong length %d for %s", len(rest), algo)
	}
	if err != nil {
		return Hash{}, err
	}
	if len(digest) != size {
		return Hash{}, fmt.Errorf("%s digest is %d bytes, want %d", algo, len(digest), size)
	}
	return Hash{Algo: algo, Digest: digest}, nil
}

// decodeBase64 decodes standard base64. encoding/base64 silently skips '\r' and '\n', which
// would let a value that is not one token pass; refuse them first.
func decodeBase64(s string, allowUnpadded bool) ([]byte, error) {
	if strings.ContainsAny(s, "\r\n") {
		return nil, errors.New("illegal newline in base64")
	}
	enc := base64.StdEncoding
	if allowUnpadded && len(s)%4 != 0 {
		enc = base64.RawStdEncoding
	}
	return enc.DecodeString(s)
}

// String formats h as Nix writes it in narinfos: "<algo>:<nix32>". The zero Hash is "".
func (h Hash) String() string {
	return string(h.appendTo(nil))
}

// appendTo appends h.String() to b without an intermediate string.
func (h Hash) appendTo(b []byte) []byte {
	if h.IsZero() {
		return b
	}
	var buf [128]byte // nix32 of a 64-byte sha512 digest is 103 characters
	n := nixbase32.EncodedLen(len(h.Digest))
	enc := buf[:]
	if n > len(enc) {
		enc = make([]byte, n)
	}
	nixbase32.Encode(enc[:n], h.Digest)
	b = append(b, h.Algo...)
	b = append(b, ':')
	return append(b, enc[:n]...)
}

// IsZero reports whether h is the zero Hash, i.e. no hash at all.
func (h Hash) IsZero() bool { return h.Algo == "" && len(h.Digest) == 0 }

// Equal reports whether h and o are the same algorithm and digest.
func (h Hash) Equal(o Hash) bool { return h.Algo == o.Algo && bytes.Equal(h.Digest, o.Digest) }

// quote quotes s for an error message, cut so that the quoted form stays around 100 bytes:
// hostile input must not make errors (and the logs and HTTP bodies they end up in) large.
func quote(s string) string {
	const max = 100
	q := strconv.Quote(s)
	if len(q) <= max {
		return q
	}
	// Escapes make the quoted form up to 4 times longer than the input; shrink until it fits.
	for n := min(len(s), max); ; n = n * 3 / 4 {
		if q = strconv.Quote(s[:n]); len(q) <= max {
			return q + "..."
		}
	}
}
