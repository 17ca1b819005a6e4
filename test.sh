#!/usr/bin/env bash
# Runs every check and test of cached: gofmt, go vet, staticcheck, and `go test -race ./...`,
# which includes the end-to-end tests that drive the real nix client against the server.
# Installs what it needs when missing: Debian's nix-bin, chromium, bzip2, xz-utils, systemd, podman, runc
# and busybox-static, and from the Go module proxy staticcheck
# and versitygw (a real S3 server the S3 tests start themselves).
# Provisions a Debian 13 chroot with its nix-bin (Nix 2.26), the second client the end-to-end tests
# drive, in $CACHED_NIX2_ROOT (default /var/cache/cached-test/trixie), unless one works there.
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
command -v nginx >/dev/null 2>&1 || [ -x /usr/sbin/nginx ] || missing+=(nginx)   # the upstream of internal/e2e's pull-through test
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

# A second, newer nix client for internal/e2e: Debian 13's nix-bin (Nix 2.26) in a Debian 13 chroot.
# When it cannot be provisioned the tests that need it skip, or fail under CI=true.
CACHED_NIX2_ROOT=${CACHED_NIX2_ROOT:-/var/cache/cached-test/trixie}
export CACHED_NIX2_ROOT
nix2() { as_root chroot "$CACHED_NIX2_ROOT" /usr/bin/env -i PATH=/usr/bin:/bin HOME=/root "$@"; }
provision_nix2() {   # each step says "|| return": set -e does not apply in a function run with ||
  local root=$CACHED_NIX2_ROOT mirror
  if [ ! -x "$root/usr/bin/apt-get" ]; then
    [ ! -e "$root" ] || { echo "$root exists but holds no Debian root: remove it or set CACHED_NIX2_ROOT"; return 1; }
    echo "== provisioning Debian 13 with nix-bin in $root (second nix client, a few minutes)"
    command -v debootstrap >/dev/null 2>&1 || { as_root apt-get update -qq && as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq debootstrap >/dev/null; } || return
    mirror=$(sed -n 's/^URIs: *\([^ ]*\).*/\1/p' /etc/apt/sources.list.d/debian.sources 2>/dev/null | grep -v -- -security | head -n1)
    [ -n "$mirror" ] || { echo "no Debian mirror (URIs:) in /etc/apt/sources.list.d/debian.sources"; return 1; }
    as_root rm -rf "$root.partial" || return
    as_root debootstrap --variant=minbase trixie "$root.partial" "$mirror" >/dev/null || return
    as_root mv "$root.partial" "$root" || return
  fi
  # nix needs /proc, and /dev/pts to build; the mounts stay for later runs.
  mountpoint -q "$root/proc" || as_root mount -t proc proc "$root/proc" || return
  mountpoint -q "$root/dev" || as_root mount --bind /dev "$root/dev" || return
  mountpoint -q "$root/dev/pts" || as_root mount --bind /dev/pts "$root/dev/pts" || return
  if ! nix2 nix --version >/dev/null 2>&1; then
    as_root cp /etc/resolv.conf "$root/etc/resolv.conf" || return
    # nix-bin, not debootstrap --include: debootstrap cannot resolve its virtual dependency.
    nix2 sh -c 'apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq nix-bin >/dev/null' || return
  fi
}
if provision_nix2; then
  echo "== second nix client: $(nix2 nix --version) in $CACHED_NIX2_ROOT"
else
  echo "== no second nix client in $CACHED_NIX2_ROOT: the tests that need it skip (fail under CI=true)"
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
FUZZTIME=${FUZZTIME:-20s}
if [ "$FUZZTIME" != 0 ] && [ $# -eq 0 ]; then
  for target in ./internal/nar:FuzzWalk ./internal/nar:FuzzWriterRoundTrip \
                ./internal/narinfo:FuzzParse ./internal/narinfo:FuzzParseHash \
                ./internal/signing:FuzzParseKeys ./internal/cache:FuzzParseNarName ./internal/cache:FuzzParseStoreNarName \
                ./internal/server:FuzzPutNarInfo ./internal/server/fastpath:FuzzParseRequest ./internal/server:FuzzReadProgress \
                ./internal/logging:FuzzLogPlain ./internal/xzlimit:FuzzNewReader \
                ./cmd/cached:FuzzConfig ./internal/auth:FuzzParseFixed ./internal/netrc:FuzzParse \
                ./internal/server:FuzzSimplifyRange ./internal/cache:FuzzNewDecoder \
                ./internal/watch:FuzzNotifierParse \
                ./internal/server:FuzzParseExistsRequest \
                ./internal/upstream:FuzzCheck ./internal/upstream:FuzzRedactURL \
                ./internal/journal:FuzzParse; do
    pkg=${target%%:*}; name=${target##*:}
    echo "== fuzz $name ($pkg, $FUZZTIME)"
    go test -run '^$' -fuzz "^$name\$" -fuzztime "$FUZZTIME" "$pkg"
  done
fi
