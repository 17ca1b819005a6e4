#!/usr/bin/env bash
# bench/push.sh — `cached push` against `nix copy` of the same closure, in one run: wall time,
# CPU time and peak RSS (from /usr/bin/time) of the uploading process, and the CPU time of the
# server that received it (from /proc). On a shared machine wall times swing with the load of
# other jobs; CPU seconds do not, and the rounds are interleaved so that each sees the same load.
#
# Builds a closure of BENCH_PUSH_PATHS paths (default 20) of BENCH_PUSH_MIB MiB each (default 16,
# half random bytes, half base64 text: compressible as real binaries roughly are), then uploads it
#   1. nix copy --to 'file://DIR?compression=zstd'          (no network: the floor)
#   2. nix copy --to 'http://cached?compression=zstd'       (a fresh cached)
#   3. cached push --compression zstd                       (a fresh cached)
#   4. cached push --compression none                       (a fresh cached; it recompresses)
# BENCH_PUSH_ROUNDS times (default 3), each with fresh caches, and prints one line per upload
# and the medians.
#
#   bench/push.sh            BENCH_PUSH_PATHS=5 BENCH_PUSH_MIB=4 for a quick run
set -euo pipefail

BENCH_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
OUT=${BENCH_OUT:-$BENCH_DIR/out}
NPATHS=${BENCH_PUSH_PATHS:-20}
MIB=${BENCH_PUSH_MIB:-16}
ROUNDS=${BENCH_PUSH_ROUNDS:-3}
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

SERVER_PID=
start_server() { # name
	local data=$WORK/$1 port
	"$SERVER" serve --data "$data" --listen 127.0.0.1:0 >"$data.out" 2>"$data.err" &
	SERVER_PID=$!
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

# cpu_of pid: user+system CPU seconds the process has used so far.
cpu_of() { awk -v hz="$(getconf CLK_TCK)" '{ print ($14 + $15) / hz }' "/proc/$1/stat"; }

RESULTS=$WORK/results.txt
: >"$RESULTS"
measure() { # name command... (a server, if any, is $SERVER_PID)
	local name=$1 f t0 wall rss cpu srv0=0 srv=0
	shift
	f=$WORK/${name//[^a-zA-Z0-9]/_}
	[ -n "$SERVER_PID" ] && srv0=$(cpu_of "$SERVER_PID")
	t0=$(now)
	/usr/bin/time -f '%M %U %S' -o "$f.time" "$@" >"$f.log" 2>&1 || {
		tail -5 "$f.log" >&2
		die "$name failed"
	}
	wall=$(since "$t0")
	[ -n "$SERVER_PID" ] && srv=$(awk -v a="$srv0" -v b="$(cpu_of "$SERVER_PID")" 'BEGIN { print b - a }')
	read -r rss user sys < <(tail -1 "$f.time")
	cpu=$(awk -v u="$user" -v s="$sys" 'BEGIN { print u + s }')
	printf '%-34s %7.2f s  %6.1f MiB/s  CPU %5.2f s + server %5.2f s  peak RSS %6d KiB\n' "$name" "$wall" \
		"$(awk -v s="$SIZE" -v t="$wall" 'BEGIN { print s / 1048576 / t }')" "$cpu" "$srv" "$rss"
	printf '%s\t%s\t%s\t%s\t%s\n' "$name" "$wall" "$cpu" "$srv" "$rss" >>"$RESULTS"
}

for round in $(seq 1 "$ROUNDS"); do
	log "round $round of $ROUNDS"
	rm -rf "$WORK/filecache"
	SERVER_PID=
	measure "nix copy file://?zstd" nix copy --to "file://$WORK/filecache?compression=zstd" "$TOP"
	start_server "nixcopy-$round"
	measure "nix copy http://?zstd" nix copy --to "$URL?compression=zstd" "$TOP"
	stop_pid "$SERVER_PID"
	start_server "pushzstd-$round"
	measure "cached push --compression zstd" "$SERVER" push --progress lines --url "$URL" --token-file "$TOKEN_FILE" "$TOP"
	stop_pid "$SERVER_PID"
	start_server "pushnone-$round"
	measure "cached push --compression none" "$SERVER" push --progress lines --compression none --url "$URL" --token-file "$TOKEN_FILE" "$TOP"
	measure "cached push again (all present)" "$SERVER" push --progress lines --url "$URL" --token-file "$TOKEN_FILE" "$TOP"
	stop_pid "$SERVER_PID"
done

log "medians of $ROUNDS rounds (push speed = nix copy file:// time / its time)"
base=$(awk -F'\t' '$1 == "nix copy file://?zstd" { print $2 }' "$RESULTS" | sort -n | awk '{ a[NR] = $1 } END { print a[int((NR + 1) / 2)] }')
cut -f1 "$RESULTS" | awk '!seen[$0]++' | while read -r name; do
	awk -F'\t' -v n="$name" -v base="$base" '$1 == n { w[++k] = $2; c[k] = $3; s[k] = $4; r[k] = $5 }
		function med(a, k,   i, j, t) { for (i = 1; i <= k; i++) for (j = i + 1; j <= k; j++) if (a[j] < a[i]) { t = a[i]; a[i] = a[j]; a[j] = t }; return a[int((k + 1) / 2)] }
		END { wm = med(w, k); printf "%-34s %7.2f s  %5.2fx  CPU %5.2f s + server %5.2f s  peak RSS %6d KiB\n", n, wm, base / wm, med(c, k), med(s, k), med(r, k) }' "$RESULTS"
done
