package watch

import (
	"context"
	"net/http"
	"strings"
	"sync"
	"time"

	"github.com/cached-dev/cached/internal/narinfo"
)

// upstreamClient asks upstream caches (cache.nixos.org) about paths: a path substituted from
// one of them need not be pushed again.
var upstreamClient = &http.Client{Timeout: 15 * time.Second}

// onUpstream returns those of paths that one of the caches at urls serves a narinfo for. A
// cache that cannot be asked counts as not having the path: such a path is pushed.
func onUpstream(ctx context.Context, urls, paths []string) map[string]string {
	found := map[string]string{}
	if len(urls) == 0 || len(paths) == 0 {
		return found
	}
	var mu sync.Mutex
	var wg sync.WaitGroup
	next := make(chan string)
	for range min(16, len(paths)) {
		wg.Go(func() {
			for p := range next {
				_, hash, _, err := narinfo.ParseStorePath(p)
				if err != nil {
					continue
				}
				for _, u := range urls {
					if has(ctx, strings.TrimRight(u, "/")+"/"+hash+".narinfo") {
						mu.Lock()
						found[p] = u
						mu.Unlock()
						break
					}
				}
			}
		})
	}
	for _, p := range paths {
		next <- p
	}
	close(next)
	wg.Wait()
	return found
}

func has(ctx context.Context, url string) bool {
	req, err := http.NewRequestWithContext(ctx, http.MethodHead, url, nil)
	if err != nil {
		return false
	}
	resp, err := upstreamClient.Do(req)
	if err != nil {
		return false
	}
	resp.Body.Close()
	return resp.StatusCode == http.StatusOK
}
