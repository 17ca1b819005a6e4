package main

import (
	"context"
	"fmt"
	"net/url"
	"strings"
	"time"

	"github.com/cached-dev/cached/internal/backend"
	"github.com/cached-dev/cached/internal/backend/s3"
	"github.com/cached-dev/cached/internal/server"
)

// narRedirectFlags: NAR downloads answered with a redirect to the bucket or a CDN in front of it.
type narRedirectFlags struct {
	NarRedirect       string        `help:"Answer GETs of stored NARs with a 307 so that NAR bytes never pass through cached (--backend s3 only): 'presign' redirects to a presigned URL of the object, an http(s) base URL (https://cdn.example/) to that URL followed by the object's key. Narinfos are still served by cached, and so are NARs not yet stored. Off when empty." placeholder:"presign|URL"`
	NarRedirectExpiry time.Duration `help:"How long the presigned URLs of --nar-redirect presign stay valid (at most 168h)." default:"1h"`
}

// check refuses bad values before anything is opened.
func (f *narRedirectFlags) check(backendName string) error {
	switch {
	case f.NarRedirect == "":
		return nil
	case backendName != "s3":
		return fmt.Errorf("--nar-redirect %s: needs --backend s3 (the redirect points into the bucket)", f.NarRedirect)
	case f.NarRedirect == "presign":
		if f.NarRedirectExpiry <= 0 || f.NarRedirectExpiry > s3.MaxPresignExpiry {
			return fmt.Errorf("--nar-redirect-expiry %v: out of range (0, %v]", f.NarRedirectExpiry, s3.MaxPresignExpiry)
		}
		return nil
	}
	u, err := url.Parse(f.NarRedirect)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" || u.RawQuery != "" || u.Fragment != "" {
		return fmt.Errorf("--nar-redirect %q: want presign, or an http:// or https:// base URL without query", f.NarRedirect)
	}
	if u.User != nil {
		return fmt.Errorf("--nar-redirect: the base URL must not carry credentials")
	}
	return nil
}

// narRedirect checks the flags and builds the redirect; nil when off.
func (f *narRedirectFlags) narRedirect(backendName string, b backend.Redirector) (*server.NarRedirect, error) {
	if err := f.check(backendName); err != nil || f.NarRedirect == "" {
		return nil, err
	}
	if b == nil {
		return nil, fmt.Errorf("--nar-redirect %s: needs --backend s3 (the redirect points into the bucket)", f.NarRedirect)
	}
	if f.NarRedirect == "presign" {
		expiry := f.NarRedirectExpiry
		return &server.NarRedirect{
			URL: func(ctx context.Context, name string) (string, error) {
				return b.PresignGet(ctx, name, expiry)
			},
			CacheControl: "no-store", // the URL expires
		}, nil
	}
	base := strings.TrimSuffix(f.NarRedirect, "/") + "/"
	return &server.NarRedirect{
		URL: func(_ context.Context, name string) (string, error) {
			key, err := b.Key(name)
			if err != nil {
				return "", err
			}
			return base + key, nil
		},
	}, nil
}
