#!/usr/bin/env bash
# bench/repush.sh — pushing a closure the cache already holds: how long `cached push` takes to
# find that there is nothing to send, against nix copy doing the same, in one run.
#
# Builds a closure of BENCH_REPUSH_PATHS small paths (default 1000: content-addressed files
# made at evaluation, and one derivation referring to them all), pushes it once to a fresh
# cached, then times each of these on the full cache (wall time, peak RSS of the uploader):
#   1. cached push                      (one POST /_cached/exists per 1,000 paths)
#   2. cached push --head-lookups       (a HEAD per path, as against a server without it)
#   3. nix copy --to http://cached      (Nix 2.8: a narinfo GET per path)
# and prints one line per run; the first push, and nix copy --to file:// of the same closure,
# come first for scale. `cached push` includes reading the closure from the local store
# (nix-store --check-validity, nix path-info --json -r), which is most of its time.
set -euo pipefail

BENCH_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
OUT=${BENCH_OUT:-$BENCH_DIR/out}
NPATHS=${BENCH_REPUSH_PATHS:-1000}
KEEP=${BENCH_KEEP:-0}
TS=$(date -u +%Y%m%dT%H%M%SZ)
WORK=$OUT/repush-$TS
LOG_TAG=repush
# shellcheck source=bench/lib.sh
. "$BENCH_DIR/lib.sh"

command -v nix >/dev/null || apt_install nix-bin
mkdir -p "$WORK"
build_bins
nix_env

log "building a closure of $NPATHS paths"
cat >"$WORK/closure.nix" <<NIX
let
  files = builtins.genList (i: builtins.toFile "repush-\${toString i}" "path \${toString i} of run $TS") $NPATHS;
in builtins.derivation {
  name = "repush-top"; system = builtins.currentSystem; builder = "/bin/sh";
  args = [ "-c" "echo \${toString files} > \$out" ];
}
NIX
TOP=$(nix-build --no-out-link "$WORK/closure.nix" 2>/dev/null)
COUNT=$(nix path-info -r "$TOP" | wc -l)
log "closure: $COUNT paths"

data=$WORK/srv-data
"$SERVER" serve --data "$data" --listen 127.0.0.1:0 >"$data.out" 2>"$data.err" &
PIDS+=($!)
for _ in $(seq 1 100); do
	port=$(sed -n 's/^cached is serving .* at http:\/\/127.0.0.1:\([0-9]*\)$/\1/p' "$data.out" 2>/dev/null || true)
	[ -n "$port" ] && break
	sleep 0.1
done
[ -n "${port:-}" ] || die "server did not start"
URL=http://127.0.0.1:$port
TOKEN_FILE=$data/upload-tokens
echo "machine 127.0.0.1 login x password $(head -1 "$TOKEN_FILE")" >"$NETRC"

measure() { # name command...
	local name=$1 f t0 rss
	shift
	f=$WORK/${name//[^a-zA-Z0-9]/_}
	t0=$(now)
	/usr/bin/time -f '%M' -o "$f.rss" "$@" >"$f.log" 2>&1 || {
		tail -5 "$f.log" >&2
		die "$name failed"
	}
	rss=$(tail -1 "$f.rss")
	printf '%-36s %8.3f s  peak RSS %6d KiB\n' "$name" "$(since "$t0")" "$rss"
}

# For scale, the first pushes: many small paths are the other end of bench/push.sh.
measure "nix copy file://?zstd (first)" nix copy --to "file://$WORK/filecache?compression=zstd" "$TOP"
measure "cached push (first: all missing)" "$SERVER" push --progress lines --url "$URL" --token-file "$TOKEN_FILE" "$TOP"
grep -q "pushed $COUNT paths" "$WORK/cached_push__first__all_missing_.log" || die "the first push did not push $COUNT paths"
for round in 1 2 3; do
	measure "cached push again #$round" "$SERVER" push --progress lines --url "$URL" --token-file "$TOKEN_FILE" "$TOP"
	grep -q "$COUNT already present" "$WORK/cached_push_again__$round.log" || die "push again did not find $COUNT paths present"
done
for round in 1 2 3; do
	measure "cached push again --head-lookups #$round" "$SERVER" push --progress lines --head-lookups --url "$URL" --token-file "$TOKEN_FILE" "$TOP"
done
for round in 1 2 3; do
	measure "nix copy --to http:// again #$round" nix copy --to "$URL?compression=zstd" "$TOP"
done
nix_time=$( { /usr/bin/time -f '%e' nix --extra-experimental-features nix-command path-info --json -r "$TOP" >/dev/null; } 2>&1 | tail -1)
log "of which reading the closure from the local store (nix path-info --json -r): ${nix_time} s"
