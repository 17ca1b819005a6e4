#!/usr/bin/env bash
# bench/watch.sh — cached watch-store: how long after a build returns its path is served by the
# cache, and the same for paths built while the server was down (restarted mid-way).
#
# Builds into a store of its own (nix --store ROOT, a chroot store: other jobs' builds on the
# machine stay out of it), with `cached watch-store --store-root ROOT` running:
#   1. BENCH_WATCH_BUILDS paths (default 10), one at a time: from nix-build's return to the
#      narinfo answering 200;
#   2. the server stopped, BENCH_WATCH_BUILDS/2 paths built, the server started again on the same
#      port 2 s later: from its restart to each narinfo answering 200 (the watcher's backoff, at
#      its defaults, decides most of it);
#   3. the baseline, in the same run: `nix copy --to http://...?compression=zstd` of a fresh path
#      right after its build, the time a post-build hook pushing synchronously adds to a build.
# Prints the medians (and the worst).
set -euo pipefail

BENCH_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
OUT=${BENCH_OUT:-$BENCH_DIR/out}
N=${BENCH_WATCH_BUILDS:-10}
KEEP=${BENCH_KEEP:-0}
TS=$(date -u +%Y%m%dT%H%M%SZ)
WORK=$OUT/watch-$TS
LOG_TAG=watch
# shellcheck source=bench/lib.sh
. "$BENCH_DIR/lib.sh"

command -v nix >/dev/null || apt_install nix-bin
command -v curl >/dev/null || apt_install curl
mkdir -p "$WORK"
build_bins
nix_env
# The chroot store builds in a sandbox that sees only what it is given.
export NIX_CONFIG="$NIX_CONFIG
extra-sandbox-paths = /bin /usr /lib /lib64"
ROOT=$WORK/root
DATA=$WORK/srv-data

start_server() { # listen address
	"$SERVER" serve --data "$DATA" --listen "$1" >>"$DATA.out" 2>>"$DATA.err" &
	SERVER_PID=$!
	PIDS+=($!)
	for _ in $(seq 1 100); do
		port=$(sed -n 's/^cached is serving .* at http:\/\/127.0.0.1:\([0-9]*\)$/\1/p' "$DATA.out" 2>/dev/null | tail -1 || true)
		[ -n "$port" ] && curl -sf "http://127.0.0.1:$port/nix-cache-info" >/dev/null && return 0
		sleep 0.05
	done
	die "server did not start"
}

build() { # tag: prints the store path
	local f=$WORK/b-$1.nix
	cat >"$f" <<NIX
builtins.derivation { name = "watch-bench-$1"; system = builtins.currentSystem; builder = "/bin/sh";
  args = [ "-c" "/usr/bin/head -c 1000000 /dev/urandom > \$out; echo $1 $TS >> \$out" ]; }
NIX
	nix-build --no-out-link --store "$ROOT" "$f" 2>/dev/null
}

served_after() { # path t0: seconds from t0 until the narinfo answers 200
	local hash
	hash=$(basename "$1" | cut -c1-32)
	for _ in $(seq 1 6000); do
		if curl -sf -o /dev/null "$URL/$hash.narinfo"; then
			since "$2"
			echo
			return 0
		fi
		sleep 0.02
	done
	die "$1 not served within 120 s"
}

stats() { # label, then values on stdin: median and worst
	sort -n | awk -v l="$1" '{ a[NR] = $1 } END { printf "%-58s median %6.3f s  worst %6.3f s  (%d)\n", l, a[int((NR + 1) / 2)], a[NR], NR }'
}

mkdir -p "$DATA"
nix-store --store "$ROOT" --init 2>/dev/null || true
start_server 127.0.0.1:0
URL=http://127.0.0.1:$port
PORT=$port
"$SERVER" watch-store --url "$URL" --token-file "$DATA/upload-tokens" --queue-dir "$WORK/queue" \
	--store-root "$ROOT" >"$WORK/watch.out" 2>"$WORK/watch.err" &
PIDS+=($!)
for _ in $(seq 1 200); do grep -q "watching the store" "$WORK/watch.err" && break; sleep 0.05; done
grep -q "watching the store" "$WORK/watch.err" || die "watch-store did not start: $(tail -3 "$WORK/watch.err")"

log "1. $N builds, one at a time, with the server up"
for i in $(seq 1 "$N"); do
	p=$(build "up-$i")
	t0=$(now)
	served_after "$p" "$t0" >>"$WORK/up.txt"
done

log "2. $((N / 2)) builds with the server down, restarted 2 s after the last"
stop_pid "$SERVER_PID"
paths=()
for i in $(seq 1 $((N / 2))); do paths+=("$(build "down-$i")"); done
sleep 2
start_server "127.0.0.1:$PORT"
t0=$(now)
for p in "${paths[@]}"; do served_after "$p" "$t0"; done >>"$WORK/down.txt"

log "3. baseline: nix copy --to http:// right after each build"
echo "machine 127.0.0.1 login x password $(head -1 "$DATA/upload-tokens")" >"$NETRC"
for i in $(seq 1 "$N"); do
	p=$(build "copy-$i")
	t0=$(now)
	nix copy --store "$ROOT" --to "$URL?compression=zstd" "$p" 2>/dev/null
	{ since "$t0"; echo; } >>"$WORK/copy.txt"
done

stats "watch-store: build returned -> narinfo served" <"$WORK/up.txt"
stats "watch-store: server restarted -> narinfo served" <"$WORK/down.txt"
stats "baseline: nix copy --to http:// after the build (blocking)" <"$WORK/copy.txt"
