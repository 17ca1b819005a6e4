package server

import (
	"bytes"
	"net/http"

	"github.com/cached-dev/cached/internal/cache"
)

// What the fast path reads of a request (fastpath.go): a strict parser of the request heads it
// may answer. Fuzzed against net/http's own (FuzzParseFastRequest).

// fastRequest is what the fast path needs of a request head. Its byte slices point into the
// connection's read buffer and are valid until the head is discarded.
type fastRequest struct {
	head        bool   // HEAD, else GET
	nar         bool   // a NAR, else a narinfo
	narPath     string // path of a NAR, as a string (its object name is narPath[1:])
	path        []byte // "/<hash>.narinfo" or "/nar/<file hash>.nar[.ext]"
	hash        []byte // the store hash of a narinfo, the file hash of a NAR
	ifNoneMatch []byte
	requestID   []byte
	close       bool // Connection: close
	auth        bool // an Authorization header
	conditional bool // a Range or an If-* header other than If-None-Match
}

// id is the request's X-Request-Id when it is safe to repeat, else a new one (as the router's).
func (r *fastRequest) id() string {
	if id := string(r.requestID); validRequestID(id) {
		return id
	}
	return newRequestID()
}

func (r *fastRequest) method() string {
	if r.head {
		return http.MethodHead
	}
	return http.MethodGet
}

// narPathMax bounds the path of a NAR the fast path answers: "/nar/" + 52 + ".nar.zst".
const narPathMax = len("/nar/") + 52 + len(".nar.zst")

// parseFastRequest parses head (request line, header lines, blank line) into r, and reports
// whether the fast path may answer it. It is strict: anything it does not fully understand is
// false, and net/http, which knows every corner of HTTP/1.1, answers that request instead.
func parseFastRequest(head []byte, r *fastRequest) bool {
	*r = fastRequest{}
	line, rest, ok := cutLine(head)
	if !ok {
		return false
	}
	switch {
	case bytes.HasPrefix(line, []byte("GET ")):
		line = line[4:]
	case bytes.HasPrefix(line, []byte("HEAD ")):
		line, r.head = line[5:], true
	default:
		return false
	}
	target, ok := bytes.CutSuffix(line, []byte(" HTTP/1.1"))
	if !ok || !parseFastTarget(target, r) {
		return false
	}
	hosts := 0
	for {
		line, rest, ok = cutLine(rest)
		if !ok {
			return false
		}
		if len(line) == 0 {
			return hosts == 1 && len(rest) == 0 && !(r.nar && (r.conditional || r.ifNoneMatch != nil))
		}
		colon := bytes.IndexByte(line, ':')
		if colon <= 0 {
			return false
		}
		name, value := line[:colon], trimOWS(line[colon+1:])
		for _, c := range name {
			if !isTokenChar(c) {
				return false // includes obs-fold (a line starting with a space) and spaces before the colon
			}
		}
		for _, c := range value {
			if c < 0x20 && c != '\t' || c == 0x7f {
				return false
			}
		}
		switch {
		case asciiEqualFold(name, "host"):
			hosts++
			if len(value) == 0 {
				return false
			}
			for _, c := range value {
				if !isHostChar(c) {
					return false
				}
			}
		case asciiEqualFold(name, "if-none-match"):
			if r.ifNoneMatch != nil {
				return false
			}
			r.ifNoneMatch = value
		case asciiEqualFold(name, "authorization"):
			r.auth = true
		case asciiEqualFold(name, "x-request-id"):
			if r.requestID == nil { // the first, as the router's Header.Get
				r.requestID = value
			}
		case asciiEqualFold(name, "connection"):
			for tok := range bytes.SplitSeq(value, []byte(",")) {
				tok = trimOWS(tok)
				switch {
				case asciiEqualFold(tok, "close"):
					r.close = true
				case asciiEqualFold(tok, "keep-alive"):
				default:
					return false // upgrade, or a hop-by-hop header net/http should see
				}
			}
		case asciiEqualFold(name, "range"), len(name) >= 3 && asciiEqualFold(name[:3], "if-"):
			r.conditional = true // http.ServeContent's business, for a NAR
		case asciiEqualFold(name, "content-length"), asciiEqualFold(name, "transfer-encoding"),
			asciiEqualFold(name, "expect"), asciiEqualFold(name, "upgrade"), asciiEqualFold(name, "http2-settings"):
			return false // a body, or something to negotiate: net/http's business
		}
	}
}

// parseFastTarget takes the request target: exactly /<store hash>.narinfo or
// /nar/<file hash>.nar[.xz|.zst|.bz2|.br], nothing escaped, no query.
func parseFastTarget(t []byte, r *fastRequest) bool {
	const narInfoLen = 1 + 32 + len(".narinfo")
	if len(t) == narInfoLen && t[0] == '/' && bytes.Equal(t[33:], []byte(".narinfo")) {
		r.path, r.hash = t, t[1:33]
		return cache.ValidStoreHash(string(r.hash)) // 32 bytes: converted on the stack
	}
	if len(t) > narPathMax || !bytes.HasPrefix(t, []byte("/nar/")) {
		return false
	}
	p := string(t)
	nn, err := cache.ParseNarName(p[1:])
	if err != nil {
		return false
	}
	r.path, r.hash, r.nar, r.narPath = t, t[5:5+len(nn.FileHash)], true, p
	return true
}

// cutLine cuts one CRLF-terminated line off b; a bare LF or CR is not a line ending here.
func cutLine(b []byte) (line, rest []byte, ok bool) {
	i := bytes.IndexByte(b, '\n')
	if i < 1 || b[i-1] != '\r' {
		return nil, nil, false
	}
	line = b[:i-1]
	if bytes.IndexByte(line, '\r') >= 0 {
		return nil, nil, false
	}
	return line, b[i+1:], true
}

func trimOWS(b []byte) []byte {
	for len(b) > 0 && (b[0] == ' ' || b[0] == '\t') {
		b = b[1:]
	}
	for len(b) > 0 && (b[len(b)-1] == ' ' || b[len(b)-1] == '\t') {
		b = b[:len(b)-1]
	}
	return b
}

func asciiEqualFold(b []byte, lower string) bool {
	if len(b) != len(lower) {
		return false
	}
	for i := 0; i < len(b); i++ {
		c := b[i]
		if 'A' <= c && c <= 'Z' {
			c += 'a' - 'A'
		}
		if c != lower[i] {
			return false
		}
	}
	return true
}

// isTokenChar reports whether c may appear in a header name (RFC 9110 tchar).
func isTokenChar(c byte) bool {
	switch {
	case 'a' <= c && c <= 'z', 'A' <= c && c <= 'Z', '0' <= c && c <= '9':
		return true
	}
	return bytes.IndexByte([]byte("!#$%&'*+-.^_`|~"), c) >= 0
}

func isHostChar(c byte) bool {
	return 'a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || c == '.' || c == '-' || c == ':' || c == '[' || c == ']' || c == '_'
}
