package fastpath

import (
	"bytes"
	"net/http"
	"time"

	"github.com/cached-dev/cached/internal/cache"
)

// Request is what the fast path read of a request head: a GET or HEAD of a narinfo or of a
// whole NAR. Its byte slices point into the connection's read buffer and are valid until the
// answer has been sent (Handler.Sent returns).
type Request struct {
	Head        bool   // HEAD, else GET
	NAR         bool   // a NAR, else a narinfo
	NarPath     string // path of a NAR, as a string (its object name is NarPath[1:])
	Path        []byte // "/<hash>.narinfo" or "/nar/<file hash>.nar[.ext]"
	Hash        []byte // the store hash of a narinfo, the file hash of a NAR
	IfNoneMatch []byte // the one If-None-Match (never for a NAR); nil: none
	RequestID   []byte // the first X-Request-Id, as sent; nil: none
	Close       bool   // Connection: close
	Auth        bool   // an Authorization header
	Conditional bool   // a Range or an If-* header other than If-None-Match (never for a NAR)

	Remote string    // the client's address
	Start  time.Time // when the fast path began to answer it
}

// Method is GET or HEAD.
func (r *Request) Method() string {
	if r.Head {
		return http.MethodHead
	}
	return http.MethodGet
}

// narPathMax bounds the path of a NAR the fast path answers: "/nar/" + 52 + ".nar.zst".
const narPathMax = len("/nar/") + 52 + len(".nar.zst")

// parseRequest parses head (request line, header lines, blank line) into r, and reports
// whether the fast path may answer it. It is strict: anything it does not fully understand is
// false, and net/http, which knows every corner of HTTP/1.1, answers that request instead.
func parseRequest(head []byte, r *Request) bool {
	*r = Request{}
	line, rest, ok := cutLine(head)
	if !ok {
		return false
	}
	switch {
	case bytes.HasPrefix(line, []byte("GET ")):
		line = line[4:]
	case bytes.HasPrefix(line, []byte("HEAD ")):
		line, r.Head = line[5:], true
	default:
		return false
	}
	target, ok := bytes.CutSuffix(line, []byte(" HTTP/1.1"))
	if !ok || !parseTarget(target, r) {
		return false
	}
	hosts := 0
	for {
		line, rest, ok = cutLine(rest)
		if !ok {
			return false
		}
		if len(line) == 0 {
			return hosts == 1 && len(rest) == 0 && !(r.NAR && (r.Conditional || r.IfNoneMatch != nil))
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
			if r.IfNoneMatch != nil {
				return false
			}
			r.IfNoneMatch = value
		case asciiEqualFold(name, "authorization"):
			r.Auth = true
		case asciiEqualFold(name, "x-request-id"):
			if r.RequestID == nil { // the first, as the router's Header.Get
				r.RequestID = value
			}
		case asciiEqualFold(name, "connection"):
			for tok := range bytes.SplitSeq(value, []byte(",")) {
				tok = trimOWS(tok)
				switch {
				case asciiEqualFold(tok, "close"):
					r.Close = true
				case asciiEqualFold(tok, "keep-alive"):
				default:
					return false // upgrade, or a hop-by-hop header net/http should see
				}
			}
		case asciiEqualFold(name, "range"), len(name) >= 3 && asciiEqualFold(name[:3], "if-"):
			r.Conditional = true // http.ServeContent's business, for a NAR
		case asciiEqualFold(name, "content-length"), asciiEqualFold(name, "transfer-encoding"),
			asciiEqualFold(name, "expect"), asciiEqualFold(name, "upgrade"), asciiEqualFold(name, "http2-settings"):
			return false // a body, or something to negotiate: net/http's business
		}
	}
}

// parseTarget takes the request target: exactly /<store hash>.narinfo or
// /nar/<file hash>.nar[.xz|.zst|.bz2|.br], nothing escaped, no query.
func parseTarget(t []byte, r *Request) bool {
	const narInfoLen = 1 + 32 + len(".narinfo")
	if len(t) == narInfoLen && t[0] == '/' && bytes.Equal(t[33:], []byte(".narinfo")) {
		r.Path, r.Hash = t, t[1:33]
		return cache.ValidStoreHash(string(r.Hash)) // 32 bytes: converted on the stack
	}
	if len(t) > narPathMax || !bytes.HasPrefix(t, []byte("/nar/")) {
		return false
	}
	p := string(t)
	nn, err := cache.ParseNarName(p[1:])
	if err != nil {
		return false
	}
	r.Path, r.Hash, r.NAR, r.NarPath = t, t[5:5+len(nn.FileHash)], true, p
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
