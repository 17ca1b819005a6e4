package server

import (
	"bytes"
	"encoding/json"
	"net/http"
	"regexp"
	"strings"

	"github.com/cached-dev/cached/internal/cache"
	"github.com/cached-dev/cached/internal/narinfo"
)

// Build logs, realisations (content-addressed derivations) and debuginfo links: small objects
// stored and served as they are, under the names nix uses.

var (
	outputName    = regexp.MustCompile(`^[A-Za-z0-9+\-_?=][A-Za-z0-9+\-._?=]{0,210}$`)
	realisationID = regexp.MustCompile(`^sha256:[0-9a-f]{64}![A-Za-z0-9+\-_?=][A-Za-z0-9+\-._?=]{0,210}\.doi$`)
	buildID       = regexp.MustCompile(`^[0-9a-f]{2,128}$`)
)

func validDrv(name string) bool {
	if !strings.HasSuffix(name, ".drv") {
		return false
	}
	_, _, err := narinfo.ParseBaseName(name)
	return err == nil
}

func (s *Server) getLog(w http.ResponseWriter, r *http.Request) {
	drv := urlParam(r, "drv")
	if !validDrv(drv) {
		s.writeError(w, r, &cache.InputError{Field: "path", Err: errorf("%q is not a derivation basename", drv)})
		return
	}
	s.serveObject(w, r, "log/"+drv, "text/plain; charset=utf-8", s.hdr.dayCache, "")
}

func (s *Server) putLog(w http.ResponseWriter, r *http.Request) {
	drv := urlParam(r, "drv")
	if !validDrv(drv) {
		s.writeError(w, r, &cache.InputError{Field: "path", Err: errorf("%q is not a derivation basename", drv)})
		return
	}
	s.putSmall(w, r, "log/"+drv, false)
}

func (s *Server) getRealisation(w http.ResponseWriter, r *http.Request) {
	id := urlParam(r, "id")
	if !realisationID.MatchString(id) {
		s.writeError(w, r, &cache.InputError{Field: "path", Err: errorf("%q is not sha256:<hex>!<output>.doi", id)})
		return
	}
	s.serveObject(w, r, "realisations/"+id, "application/json", s.hdr.dayCache, "")
}

func (s *Server) putRealisation(w http.ResponseWriter, r *http.Request) {
	id := urlParam(r, "id")
	if !realisationID.MatchString(id) {
		s.writeError(w, r, &cache.InputError{Field: "path", Err: errorf("%q is not sha256:<hex>!<output>.doi", id)})
		return
	}
	s.putSmall(w, r, "realisations/"+id, true)
}

func (s *Server) buildTraceName(r *http.Request) (string, error) {
	drv, out := urlParam(r, "drv"), urlParam(r, "output")
	o, ok := strings.CutSuffix(out, ".doi")
	if !validDrv(drv) || !ok || !outputName.MatchString(o) {
		return "", &cache.InputError{Field: "path", Err: errorf("%q/%q is not <drv>/<output>.doi", drv, out)}
	}
	return "build-trace-v2/" + drv + "/" + out, nil
}

func (s *Server) getBuildTrace(w http.ResponseWriter, r *http.Request) {
	name, err := s.buildTraceName(r)
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	s.serveObject(w, r, name, "application/json", s.hdr.dayCache, "")
}

func (s *Server) putBuildTrace(w http.ResponseWriter, r *http.Request) {
	name, err := s.buildTraceName(r)
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	s.putSmall(w, r, name, true)
}

func (s *Server) getDebugInfo(w http.ResponseWriter, r *http.Request) {
	id := urlParam(r, "id")
	if !buildID.MatchString(id) {
		s.writeError(w, r, &cache.InputError{Field: "path", Err: errorf("%q is not a build id", id)})
		return
	}
	s.serveObject(w, r, "debuginfo/"+id, "application/json", s.hdr.dayCache, "")
}

func (s *Server) putDebugInfo(w http.ResponseWriter, r *http.Request) {
	id := urlParam(r, "id")
	if !buildID.MatchString(id) {
		s.writeError(w, r, &cache.InputError{Field: "path", Err: errorf("%q is not a build id", id)})
		return
	}
	s.putSmall(w, r, "debuginfo/"+id, true)
}

// putSmall stores a decoded small body, checking it is JSON where the protocol says so.
func (s *Server) putSmall(w http.ResponseWriter, r *http.Request, name string, mustBeJSON bool) {
	body, err := s.readMeta(w, r)
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	if mustBeJSON && !json.Valid(body) {
		s.writeError(w, r, &cache.InputError{Field: "body", Err: errorf("%s: body is not valid JSON", name)})
		return
	}
	if err := s.cache.PutFile(r.Context(), name, bytes.NewReader(body)); err != nil {
		s.writeError(w, r, err)
		return
	}
	w.WriteHeader(http.StatusOK)
}
