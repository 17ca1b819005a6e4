package server

import (
	"testing"

	"github.com/cached-dev/cached/internal/cache"
)

func FuzzParseExistsRequest(f *testing.F) {
	f.Add([]byte(`{"hashes": ["0c9n8ga4xx2dbrkhpbq9x4lhvclm8c8r"]}`))
	f.Add([]byte(`{"hashes": []}`))
	f.Add([]byte(`{"hashes": null}`))
	f.Add([]byte(`{"hashes": ["a", 1]}`))
	f.Fuzz(func(t *testing.T, body []byte) {
		hashes, err := parseExistsRequest(body)
		if err != nil {
			return
		}
		if len(hashes) > maxExistsHashes {
			t.Fatalf("%d hashes accepted", len(hashes))
		}
		for _, h := range hashes {
			if !cache.ValidStoreHash(h) {
				t.Fatalf("accepted %q", h)
			}
		}
	})
}
