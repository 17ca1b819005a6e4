package server_test

import (
	"encoding/json"
	"fmt"
	"net/http"
	"slices"
	"strings"
	"testing"
)

// TestExists: POST /_cached/exists answers which hashes have a narinfo, in request order and
// each once; it needs the upload token; a bad body is a 400 naming what is wrong.
func TestExists(t *testing.T) {
	tc := newTestCache(t)
	a, b := newUpload(t, "exists-a", "zstd"), newUpload(t, "exists-b", "xz")
	a.store(t, tc)
	b.store(t, tc)
	absent := storeHash("exists-absent")
	ask := func(body string, opts ...reqOpt) *response {
		return tc.do(t, http.MethodPost, "/_cached/exists", []byte(body),
			append([]reqOpt{withBasicAuth("nix", testToken), withHeader("Content-Type", "application/json")}, opts...)...)
	}
	r := ask(fmt.Sprintf(`{"hashes": [%q, %q, %q, %q]}`, b.Hash, absent, a.Hash, b.Hash))
	mustStatus(t, "exists", r, http.StatusOK)
	var ans struct{ Present []string }
	if err := json.Unmarshal(r.Body, &ans); err != nil {
		t.Fatalf("answer %s: %v", r, err)
	}
	if want := []string{b.Hash, a.Hash}; !slices.Equal(ans.Present, want) {
		t.Fatalf("present: got %v, want %v", ans.Present, want)
	}
	r = ask(`{"hashes": []}`)
	mustStatus(t, "exists, no hashes", r, http.StatusOK)
	if strings.TrimSpace(string(r.Body)) != `{"present":[]}` {
		t.Fatalf("no hashes: got %s", r)
	}

	mustStatus(t, "exists without a token", ask(`{"hashes": []}`, withoutAuth()), http.StatusUnauthorized)
	mustStatus(t, "exists with a wrong token", ask(`{"hashes": []}`, withBasicAuth("nix", "nope")), http.StatusUnauthorized)
	mustStatus(t, "GET exists", tc.get(t, "/_cached/exists"), http.StatusMethodNotAllowed)

	many := make([]string, 10001)
	for i := range many {
		many[i] = `"` + a.Hash + `"`
	}
	for _, tc := range []struct{ name, body, want string }{
		{"not JSON", "hello", "body"},
		{"no hashes key", `{"paths": []}`, "hashes: missing"},
		{"not a hash", `{"hashes": ["../../etc/passwd"]}`, "../../etc/passwd"},
		{"wrong alphabet", `{"hashes": ["eeeeeeeeeeeeeeeeeeeeeeeeeeeeeeee"]}`, "eeeeeeeeeeeeeeeeeeeeeeeeeeeeeeee"},
		{"a store path, not its hash", fmt.Sprintf(`{"hashes": ["/nix/store/%s-x"]}`, a.Hash), "is not a store path hash"},
		{"too many", `{"hashes": [` + strings.Join(many, ",") + `]}`, "10001 hashes, at most 10000"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := ask(tc.body)
			mustStatus(t, tc.name, r, http.StatusBadRequest)
			if !strings.Contains(string(r.Body), tc.want) {
				t.Fatalf("got %s, want it to name %q", r, tc.want)
			}
		})
	}
	r = ask(`{"hashes": ["` + strings.Repeat("0", 2<<20) + `"]}`)
	mustStatus(t, "exists, body over 1 MiB", r, http.StatusRequestEntityTooLarge)
}
