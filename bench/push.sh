#!/usr/bin/env bash
# bench/push.sh — `cached push` against `nix copy` of the same closure, in one run: wall time and
# peak RSS (from /usr/bin/time) of the uploading process.
#
# Builds a closure of BENCH_PUSH_PATHS paths (default 20) of BENCH_PUSH_MIB MiB each (default 16,
# half random bytes, half base64 text: compressible as real binaries roughly are), then uploads it
#   1. nix copy --to 'file://DIR?compression=zstd'          (no network: the floor)
#   2. nix copy --to 'http://cached?compression=zstd'       (a fresh cached)
#   3. cached push --compression zstd                       (a fresh cached)
#   4. cached push --compression none                       (a fresh cached; it recompresses)
# and prints one line per run.
#
#   bench/push.sh            BENCH_PUSH_PATHS=5 BENCH_PUSH_MIB=4 for a quick run
set -euo pipefail

BENCH_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
OUT=${BENCH_OUT:-$BENCH_DIR/out}
NPATHS=${BENCH_PUSH_PATHS:-20}
MIB=${BENCH_PUSH_MIB:-16}
KEEP=${BENCH_KEEP:-0}
TS=$(date -u +%Y%m%dT%H%M%SZ)
WORK=$OUT/push-$TS
LOG_TAG=push
# shellcheck source=bench/lib.sh
. "$BENCH_DIR/lib.sh"

command -v nix >/dev/null || apt_install nix-bin
mkdir -p "$WORK"
build_bins
nix_env

log "building a closure of $NPATHS paths of $MIB MiB"
cat >"$WORK/closure.nix" <<NIX
let
  mk = i: deps: builtins.derivation {
    name = "push-bench-\${toString i}"; system = builtins.currentSystem; builder = "/bin/sh";
    args = [ "-c" ''
      /bin/mkdir -p \$out
      /usr/bin/head -c $((MIB * 512 * 1024)) /dev/urandom > \$out/random
      /usr/bin/head -c $((MIB * 384 * 1024)) /dev/urandom | /usr/bin/base64 > \$out/text
      echo \${toString deps} $TS > \$out/deps
    '' ];
  };
  go = i: if i == 0 then [] else let rest = go (i - 1); in [ (mk i rest) ] ++ rest;
in builtins.head (go $NPATHS)
NIX
TOP=$(nix-build --no-out-link "$WORK/closure.nix" 2>/dev/null)
SIZE=$(nix path-info -rS "$TOP" | awk '{ s = $2 } END { print s }')
log "closure: $(nix path-info -r "$TOP" | wc -l) paths, $((SIZE / 1048576)) MiB of NAR"

start_server() { # name
	local data=$WORK/$1 port
	"$SERVER" serve --data "$data" --listen 127.0.0.1:0 >"$data.out" 2>"$data.err" &
	PIDS+=($!)
	for _ in $(seq 1 100); do
		port=$(sed -n 's/^cached is serving .* at http:\/\/127.0.0.1:\([0-9]*\)$/\1/p' "$data.out" 2>/dev/null || true)
		[ -n "$port" ] && break
		sleep 0.1
	done
	[ -n "$port" ] || die "server $1 did not start"
	URL=http://127.0.0.1:$port
	TOKEN_FILE=$data/upload-tokens
	echo "machine 127.0.0.1 login x password $(head -1 "$TOKEN_FILE")" >"$NETRC"
}

measure() { # name command...
	local name=$1 f
	shift
	f=$WORK/${name//[^a-zA-Z0-9]/_}
	local t0 rss
	t0=$(now)
	/usr/bin/time -f '%M' -o "$f.rss" "$@" >"$f.log" 2>&1 || {
		tail -5 "$f.log" >&2
		die "$name failed"
	}
	rss=$(tail -1 "$f.rss")
	printf '%-32s %8.2f s  %6.1f MiB/s  peak RSS %6d KiB\n' "$name" "$(since "$t0")" \
		"$(awk -v s="$SIZE" -v t="$(since "$t0")" 'BEGIN { print s / 1048576 / t }')" "$rss"
}

measure "nix copy file://?zstd" nix copy --to "file://$WORK/filecache?compression=zstd" "$TOP"
start_server nixcopy
measure "nix copy http://?zstd" nix copy --to "$URL?compression=zstd" "$TOP"
start_server pushzstd
measure "cached push --compression zstd" "$SERVER" push --progress lines --url "$URL" --token-file "$TOKEN_FILE" "$TOP"
start_server pushnone
measure "cached push --compression none" "$SERVER" push --progress lines --compression none --url "$URL" --token-file "$TOKEN_FILE" "$TOP"
measure "cached push again (all present)" "$SERVER" push --progress lines --url "$URL" --token-file "$TOKEN_FILE" "$TOP"
