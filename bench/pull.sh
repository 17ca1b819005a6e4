#!/usr/bin/env bash
# bench/pull.sh — pull-through (cached serve --upstream) against substituting from the upstream
# directly, on this machine, in one run:
#
#   1. a closure (a chain of paths of random bytes, references between them) is written by
#      `nix copy --to file://` (zstd, signed) and served by nginx: the upstream;
#   2. direct: a fresh store substitutes it from nginx (trusting the upstream key);
#      cold: a fresh store substitutes it through a fresh cached --upstream nginx (trusting only
#      cached's key), every path pulled; warm: another fresh store, from what cached stored;
#      each row the median of BENCH_PULL_REPEAT rounds; the ratios are direct time / row time;
#   3. BENCH_PULL_CLIENTS (32) clients GET one cold NAR of BENCH_PULL_BIG_MIB (500) MiB at once
#      from a fresh cached: the upstream GETs of it (from nginx's access log, want 1), whether
#      every client got the same bytes with the narinfo's FileHash, and cached's peak RSS;
#   4. narinfo miss latency (p99 of 300) with a dead upstream whose breaker is open (port closed;
#      accepts and never answers), against a cache without --upstream.
#
# Environment: BENCH_PULL_PATHS (24), BENCH_PULL_PATH_KIB (4096), BENCH_PULL_BIG_MIB (500),
# BENCH_PULL_CLIENTS (32), BENCH_PULL_REPEAT (3), BENCH_OUT (bench/out), BENCH_KEEP=1.
# Needs root or a writable /nix/store (nix without a daemon, as bench/run.sh).
set -euo pipefail

BENCH_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
OUT=${BENCH_OUT:-$BENCH_DIR/out}
NPATHS=${BENCH_PULL_PATHS:-24}
PATH_KIB=${BENCH_PULL_PATH_KIB:-4096}
BIG_MIB=${BENCH_PULL_BIG_MIB:-500}
CLIENTS=${BENCH_PULL_CLIENTS:-32}
REPEAT=${BENCH_PULL_REPEAT:-3}
KEEP=${BENCH_KEEP:-0}
TS=$(date -u +%Y%m%dT%H%M%SZ)
WORK=$OUT/pull-$TS
LOG_TAG=pull
# shellcheck source=bench/lib.sh
. "$BENCH_DIR/lib.sh"

missing=()
[ -x /usr/sbin/nginx ] || command -v nginx >/dev/null || missing+=(nginx)
command -v nix >/dev/null || missing+=(nix-bin)
command -v curl >/dev/null || missing+=(curl)
if [ ${#missing[@]} -gt 0 ]; then apt_install "${missing[@]}"; fi
NGINX=$(command -v nginx || echo /usr/sbin/nginx)
mkdir -p "$OUT" "$WORK"
build_bins
nix_env

# 1. The closure and the upstream.
SEED=$TS
cat >"$WORK/closure.nix" <<EOF
let
  sh = "/bin/sh";
  mk = i: dep: builtins.derivation {
    name = "pull-bench-\${toString i}"; system = builtins.currentSystem; builder = sh;
    args = [ "-c" "/bin/mkdir \$out; echo \${dep} > \$out/dep; echo $SEED > \$out/seed; /usr/bin/head -c ${PATH_KIB}k /dev/urandom > \$out/data" ];
  };
  chain = n: if n == 0 then "none" else mk n (chain (n - 1));
  big = builtins.derivation {
    name = "pull-bench-big"; system = builtins.currentSystem; builder = sh;
    args = [ "-c" "echo $SEED > /dev/null; /usr/bin/head -c ${BIG_MIB}M /dev/urandom > \$out" ];
  };
in { top = chain $NPATHS; inherit big; }
EOF
log "building a chain of $NPATHS paths of $PATH_KIB KiB and a $BIG_MIB MiB path"
TOP=$(nix-build --no-out-link "$WORK/closure.nix" -A top 2>"$WORK/build.log")
BIG=$(nix-build --no-out-link "$WORK/closure.nix" -A big 2>>"$WORK/build.log")
mapfile -t CLOSURE < <(nix-store -qR "$TOP")
log "closure of $TOP: ${#CLOSURE[@]} paths"

nix-store --generate-binary-cache-key upstream.bench-1 "$WORK/up.sec" "$WORK/up.pub"
UP_KEY=$(cat "$WORK/up.pub")
FILE_CACHE=$WORK/upstream
nix copy --to "file://$FILE_CACHE?compression=zstd&secret-key=$WORK/up.sec" "$TOP" "$BIG" 2>>"$WORK/build.log"

NGX=$WORK/nginx
mkdir -p "$NGX/tmp"
PORT=$("$CLIENT" freeport)
user_line=""
[ "$(id -u)" = 0 ] && user_line="user root root;"
cat >"$NGX/nginx.conf" <<EOF
worker_processes 2;
daemon off;
pid $NGX/nginx.pid;
error_log $NGX/error.log warn;
$user_line
events { worker_connections 1024; }
http {
    sendfile on;
    tcp_nopush on;
    access_log $NGX/access.log;
    keepalive_timeout 300s;
    default_type application/octet-stream;
    client_body_temp_path $NGX/tmp/body;
    proxy_temp_path $NGX/tmp/proxy;
    fastcgi_temp_path $NGX/tmp/fastcgi;
    uwsgi_temp_path $NGX/tmp/uwsgi;
    scgi_temp_path $NGX/tmp/scgi;
    server { listen 127.0.0.1:$PORT; root $FILE_CACHE; }
}
EOF
"$NGINX" -p "$NGX" -c "$NGX/nginx.conf" -e "$NGX/error.log" &
PIDS+=($!)
UP_URL=http://127.0.0.1:$PORT
for _ in $(seq 1 100); do curl -sf "$UP_URL/nix-cache-info" >/dev/null && break; sleep 0.1; done
curl -sf "$UP_URL/nix-cache-info" >/dev/null || die "nginx does not serve $FILE_CACHE"

CACHED_PID=
CACHED_URL=
start_pull_cached() { # name: a fresh data directory each time
	local data=$WORK/srv-$1
	mkdir -p "$data"
	: >"$data.out"
	"$SERVER" serve --data "$data" --listen "127.0.0.1:$("$CLIENT" freeport)" --access-log errors \
		--upstream "$UP_URL" --upstream-key "$UP_KEY" >"$data.out" 2>"$data.log" &
	CACHED_PID=$!
	PIDS+=("$CACHED_PID")
	for _ in $(seq 1 600); do
		CACHED_URL=$(sed -n 's/^cached is serving .* at \(http[^ ]*\)$/\1/p' "$data.out" | head -n1)
		[ -n "$CACHED_URL" ] && break
		kill -0 "$CACHED_PID" 2>/dev/null || die "cached exited at start: $(tail -n 20 "$data.log")"
		sleep 0.1
	done
	[ -n "$CACHED_URL" ] || die "cached did not start"
	CACHED_KEY=$(cat "$data/public-key")
}

substitute() { # url key: seconds to substitute the closure into a fresh store
	local fresh t0
	fresh=$(mktemp -d "$WORK/store-XXXX")
	t0=$(now)
	nix-store --store "$fresh" --realise "$TOP" --option substituters "$1" \
		--option trusted-public-keys "$2" --option require-sigs true >/dev/null 2>"$fresh.err" ||
		die "substituting from $1 failed: $(tail -n 5 "$fresh.err")"
	since "$t0"
	chmod -R u+w "$fresh"
	rm -rf "$fresh"
}
vmhwm_kib() { awk '/^VmHWM:/ { print $2 }' "/proc/$1/status" 2>/dev/null || echo 0; }
median() { sort -g | awk '{ a[NR] = $1 } END { print a[int((NR + 1) / 2)] }'; }

# 2. Substitution: direct, cold, warm.
find "${CLOSURE[@]}" -type f -exec cat {} + >/dev/null
direct=() cold=() warm=()
for r in $(seq 1 "$REPEAT"); do
	direct+=("$(substitute "$UP_URL" "$UP_KEY")")
	start_pull_cached "round$r"
	cold+=("$(substitute "$CACHED_URL" "$CACHED_KEY")")
	warm+=("$(substitute "$CACHED_URL" "$CACHED_KEY")")
	stop_pid "$CACHED_PID"
	log "round $r: direct ${direct[-1]} s, cold ${cold[-1]} s, warm ${warm[-1]} s"
done
D=$(printf '%s\n' "${direct[@]}" | median)
C=$(printf '%s\n' "${cold[@]}" | median)
W=$(printf '%s\n' "${warm[@]}" | median)

# 3. Many clients, one cold NAR.
start_pull_cached herd
H=$(basename "$BIG" | cut -c1-32)
NI=$(curl -sf "$CACHED_URL/$H.narinfo") || die "narinfo of $BIG not served"
NAR_URL=$(printf '%s\n' "$NI" | sed -n 's/^URL: //p')
WANT=$(printf '%s\n' "$NI" | sed -n 's/^FileHash: sha256://p')
before=$(grep -c "GET /$NAR_URL " "$NGX/access.log" || true)
log "$CLIENTS clients GET $NAR_URL at once"
t0=$(now)
for i in $(seq 1 "$CLIENTS"); do
	(curl -sf "$CACHED_URL/$NAR_URL" | sha256sum | cut -d' ' -f1 >"$WORK/herd-$i.sum") &
done
wait_herd_ok=1
for job in $(jobs -p); do
	case " ${PIDS[*]} " in *" $job "*) continue ;; esac
	wait "$job" || wait_herd_ok=0
done
HERD_S=$(since "$t0")
after=$(grep -c "GET /$NAR_URL " "$NGX/access.log" || true)
UP_GETS=$((after - before))
want_hex=$(nix hash to-base16 --type sha256 "$WANT")
same=0
for i in $(seq 1 "$CLIENTS"); do [ "$(cat "$WORK/herd-$i.sum")" = "$want_hex" ] && same=$((same + 1)); done
RSS_KIB=$(vmhwm_kib "$CACHED_PID")
stop_pid "$CACHED_PID"

# 4. A dead upstream: miss latency once its breaker is open, against a cache without upstream.
miss_p99() { # url: p99 of 300 narinfo misses, in ms (each a new store hash)
	local i
	for i in $(seq 1 300); do
		curl -s -o /dev/null -w '%{time_total}\n' "$1/$(printf '%032d' "$i").narinfo"
	done | sort -g | awk '{ a[NR] = $1 } END { printf "%.2f", a[int(NR * 0.99)] * 1000 }'
}
dead_cached() { # name upstream-url: a cached whose upstream is dead, its breaker opened
	local data=$WORK/srv-$1
	mkdir -p "$data"
	: >"$data.out"
	"$SERVER" serve --data "$data" --listen "127.0.0.1:$("$CLIENT" freeport)" --access-log errors \
		--upstream "$2" --upstream-key "$UP_KEY" --upstream-first-byte-timeout 1s "${@:3}" >"$data.out" 2>"$data.log" &
	CACHED_PID=$!
	PIDS+=("$CACHED_PID")
	for _ in $(seq 1 600); do
		CACHED_URL=$(sed -n 's/^cached is serving .* at \(http[^ ]*\)$/\1/p' "$data.out" | head -n1)
		[ -n "$CACHED_URL" ] && break
		sleep 0.1
	done
	[ -n "$CACHED_URL" ] || die "cached did not start: $(tail -n 5 "$data.log")"
	for i in 1 2 3 4; do curl -s -o /dev/null "$CACHED_URL/$(printf '9%031d' "$i").narinfo"; done # opens the breaker
}
mkdir -p "$WORK/srv-none"
: >"$WORK/srv-none.out"
"$SERVER" serve --data "$WORK/srv-none" --listen "127.0.0.1:$("$CLIENT" freeport)" --access-log errors >"$WORK/srv-none.out" 2>"$WORK/srv-none.log" &
CACHED_PID=$!
PIDS+=("$CACHED_PID")
for _ in $(seq 1 600); do
	CACHED_URL=$(sed -n 's/^cached is serving .* at \(http[^ ]*\)$/\1/p' "$WORK/srv-none.out" | head -n1)
	[ -n "$CACHED_URL" ] && break
	sleep 0.1
done
MISS_BASE=$(miss_p99 "$CACHED_URL")
stop_pid "$CACHED_PID"
dead_cached closed "http://127.0.0.1:$("$CLIENT" freeport)"
MISS_CLOSED=$(miss_p99 "$CACHED_URL")
stop_pid "$CACHED_PID"
HOLE_PORT=$("$CLIENT" freeport)
"$CLIENT" blackhole -listen "127.0.0.1:$HOLE_PORT" >/dev/null &
PIDS+=($!)
dead_cached hangs "http://127.0.0.1:$HOLE_PORT"
MISS_HANGS=$(miss_p99 "$CACHED_URL")
stop_pid "$CACHED_PID"

ratio() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.2f", a / b }'; }
cat <<EOF

pull-through, ${#CLOSURE[@]} paths of $PATH_KIB KiB (zstd, from nginx on loopback), median of $REPEAT
| row | seconds | speed vs direct |
| --- | --- | --- |
| direct from the upstream (baseline) | $D | 1.00 |
| through cached, cold (every path pulled) | $C | $(ratio "$D" "$C") |
| through cached, warm (stored) | $W | $(ratio "$D" "$W") |

narinfo miss p99 over 300 misses (curl, one connection each), upstream breaker open
| upstream | p99 ms |
| --- | --- |
| none (baseline: no --upstream) | $MISS_BASE |
| port closed | $MISS_CLOSED |
| accepts and never answers | $MISS_HANGS |

$CLIENTS clients on one cold $BIG_MIB MiB NAR: $UP_GETS upstream GET(s), $same/$CLIENTS clients got
the narinfo's FileHash, $HERD_S s, cached peak RSS $((RSS_KIB / 1024)) MiB (herd ok: $wait_herd_ok)
EOF
