package main

import (
	"strings"
	"testing"
	"time"
)

func TestNarRedirectFlagsCheck(t *testing.T) {
	for _, tc := range []struct {
		f       narRedirectFlags
		backend string
		bad     string // "" when accepted, else a part of the error
	}{
		{narRedirectFlags{}, "disk", ""},
		{narRedirectFlags{NarRedirect: "presign", NarRedirectExpiry: time.Hour}, "s3", ""},
		{narRedirectFlags{NarRedirect: "https://cdn.example/nix/", NarRedirectExpiry: time.Hour}, "s3", ""},
		{narRedirectFlags{NarRedirect: "presign", NarRedirectExpiry: time.Hour}, "disk", "needs --backend s3"},
		{narRedirectFlags{NarRedirect: "presign", NarRedirectExpiry: 0}, "s3", "--nar-redirect-expiry 0s"},
		{narRedirectFlags{NarRedirect: "presign", NarRedirectExpiry: 8 * 24 * time.Hour}, "s3", "--nar-redirect-expiry 192h"},
		{narRedirectFlags{NarRedirect: "ftp://cdn.example/"}, "s3", `"ftp://cdn.example/"`},
		{narRedirectFlags{NarRedirect: "cdn.example"}, "s3", `"cdn.example"`},
		{narRedirectFlags{NarRedirect: "https://cdn.example/?a=b"}, "s3", `"https://cdn.example/?a=b"`},
		{narRedirectFlags{NarRedirect: "https://u:p@cdn.example/"}, "s3", "credentials"},
		{narRedirectFlags{NarRedirect: "https://"}, "s3", `"https://"`},
	} {
		err := tc.f.check(tc.backend)
		switch {
		case tc.bad == "" && err != nil:
			t.Errorf("%+v on %s: %v", tc.f, tc.backend, err)
		case tc.bad != "" && (err == nil || !strings.Contains(err.Error(), tc.bad)):
			t.Errorf("%+v on %s: %v, want an error with %q", tc.f, tc.backend, err, tc.bad)
		}
	}
}
