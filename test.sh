#!/usr/bin/env bash
# Runs every check and test of cached: gofmt, go vet, staticcheck, and `go test -race ./...`,
# which includes the end-to-end tests that drive the real nix client against the server.
# Installs what it needs when missing: Debian's nix-bin, chromium, bzip2, xz-utils, systemd, podman, runc
# and busybox-static, and from the Go module proxy staticcheck
# and versitygw (a real S3 server the S3 tests start themselves).
# Usage: ./test.sh [extra go test flags, e.g. -run TestNixRoundTrip -v]
set -euo pipefail
cd "$(dirname "$0")"

STATICCHECK_VERSION=v0.8.2
VERSITYGW_VERSION=v1.8.0   # the real S3 server the S3 tests start on 127.0.0.1

as_root() { if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi; }

missing=()
command -v nix >/dev/null 2>&1 || missing+=(nix-bin)
command -v chromium >/dev/null 2>&1 || command -v chromium-browser >/dev/null 2>&1 || missing+=(chromium)   # landing page test
command -v bzip2 >/dev/null 2>&1 || missing+=(bzip2)   # makes bzip2 test uploads
command -v xz >/dev/null 2>&1 || missing+=(xz-utils)   # makes the xz streams internal/xzlimit must accept
command -v systemd-analyze >/dev/null 2>&1 || missing+=(systemd)   # checks the unit files (nix/, contrib/)
# docker/: builds and runs the container image. runc, because crun fails on some cgroup setups;
# busybox-static is the shell of the stand-in Go image the test builds (no image registry needed).
command -v podman >/dev/null 2>&1 || missing+=(podman)
command -v runc >/dev/null 2>&1 || missing+=(runc)
command -v busybox >/dev/null 2>&1 || missing+=(busybox-static)
if [ ${#missing[@]} -gt 0 ]; then
  echo "== installing ${missing[*]}"
  as_root apt-get update -qq
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
fi

export PATH="$(go env GOPATH)/bin:$PATH"
if ! command -v staticcheck >/dev/null 2>&1; then
  echo "== installing staticcheck $STATICCHECK_VERSION"
  go install "honnef.co/go/tools/cmd/staticcheck@$STATICCHECK_VERSION"
fi

if ! command -v versitygw >/dev/null 2>&1; then
  echo "== installing versitygw $VERSITYGW_VERSION (S3 server for the tests)"
  go install "github.com/versity/versitygw/cmd/versitygw@$VERSITYGW_VERSION"
fi

echo "== gofmt"
unformatted=$(gofmt -l $(git ls-files '*.go' 2>/dev/null || find . -name '*.go'))
if [ -n "$unformatted" ]; then echo "gofmt would change: $unformatted"; exit 1; fi
echo "== go vet"
go vet ./...
echo "== staticcheck"
staticcheck ./...
echo "== go test -race"
go test -race -timeout 40m -count=1 "$@" ./...

# Every parser's fuzz target, for a bounded time each (FUZZTIME=0 skips; seeds ran above).
FUZZTIME=${FUZZTIME:-30s}
if [ "$FUZZTIME" != 0 ] && [ $# -eq 0 ]; then
  for target in ./internal/nar:FuzzWalk ./internal/nar:FuzzWriterRoundTrip \
                ./internal/narinfo:FuzzParse ./internal/narinfo:FuzzParseHash \
                ./internal/signing:FuzzParseKeys ./internal/cache:FuzzParseNarName \
                ./internal/server:FuzzPutNarInfo ./internal/server:FuzzParseFastRequest \
                ./internal/logging:FuzzLogPlain ./internal/xzlimit:FuzzNewReader; do
    pkg=${target%%:*}; name=${target##*:}
    echo "== fuzz $name ($pkg, $FUZZTIME)"
    go test -run '^$' -fuzz "^$name\$" -fuzztime "$FUZZTIME" "$pkg"
  done
fi
