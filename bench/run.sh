#!/usr/bin/env bash
# bench/run.sh — nginx serving a `nix copy --to file://` directory against cached, on this machine,
# end to end: build, corpus (real nix), upload (timed), serve, measure with one client for both,
# print a table and write bench/out/results-<timestamp>.json and bench/out/latest.json.
# See bench/README.md for what every row means.
#
# Environment:
#   BENCH_SMALL=1          quick corpus (~50 paths, ~200 MiB, 96 MiB big NAR) for development
#   BENCH_OUT=DIR          where the corpus manifest, work files and results go (bench/out)
#   BENCH_REPEAT=N         rounds per row (nginx then cached), the median is reported (3; small: 2)
#   BENCH_NAR_REPEAT=N     rounds of the NAR rows, which take about a second each and vary the
#                          most between rounds (7; small: 5)
#   BENCH_WRK_SECONDS=N    duration of each narinfo load test (10; small: 5)
#   BENCH_WRK_THREADS=N    wrk threads (2)
#   BENCH_WRK_REPEAT=N     runs per narinfo load test, the median is reported (BENCH_REPEAT)
#   BENCH_MAX_PATHS, BENCH_MAX_MIB, BENCH_BIG_MIB, BENCH_CHAIN   corpus size knobs
#   BENCH_QUIET_ROWS=0     skip the extra narinfo rows with cached's access log off
#   BENCH_KEEP=1           keep the work directory (both caches, logs) after the run
#   BENCH_ONLY=upload      only the upload rows (corpus, nix copy to file:// and to cached, with
#                          each nix), not the serving rows
#   BENCH_NIX2_ROOT=DIR    the Debian 13 chroot whose Nix 2.26 uploads too ($CACHED_NIX2_ROOT,
#                          else /var/cache/cached-test/trixie, as ./test.sh provisions it);
#                          BENCH_NIX2=0 skips it. Without it the 2.26 row is left out, saying so
#   BENCH_S3=0             skip the S3 rows: bench/s3.sh run after the serving rows (a 1 GiB NAR,
#                          BENCH_S3_MIB, through cached on versitygw against the same object
#                          straight from versitygw; about 3 minutes more); its knobs apply
set -euo pipefail

BENCH_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
OUT=${BENCH_OUT:-$BENCH_DIR/out}
SMALL=${BENCH_SMALL:-0}
if [ "$SMALL" = 1 ]; then
	CORPUS_NAME=small
	MAX_PATHS=${BENCH_MAX_PATHS:-45}
	MAX_MIB=${BENCH_MAX_MIB:-100}
	BIG_MIB=${BENCH_BIG_MIB:-96}
	CHAIN=${BENCH_CHAIN:-4}
	REPEAT=${BENCH_REPEAT:-2}
	NAR_REPEAT=${BENCH_NAR_REPEAT:-5}
	WRK_SECONDS=${BENCH_WRK_SECONDS:-5}
else
	CORPUS_NAME=full
	MAX_PATHS=${BENCH_MAX_PATHS:-2000}
	MAX_MIB=${BENCH_MAX_MIB:-4096}
	BIG_MIB=${BENCH_BIG_MIB:-1100}
	CHAIN=${BENCH_CHAIN:-12}
	REPEAT=${BENCH_REPEAT:-3}
	NAR_REPEAT=${BENCH_NAR_REPEAT:-7}
	WRK_SECONDS=${BENCH_WRK_SECONDS:-10}
fi
WRK_THREADS=${BENCH_WRK_THREADS:-2}
WRK_REPEAT=${BENCH_WRK_REPEAT:-$REPEAT}
WRK_CONNS=64
QUIET_ROWS=${BENCH_QUIET_ROWS:-1}
KEEP=${BENCH_KEEP:-0}
ONLY=${BENCH_ONLY:-}
case $ONLY in "" | upload) ;; *) echo "BENCH_ONLY=$ONLY: want upload or nothing" >&2; exit 2 ;; esac
NIX2_ROOT=${BENCH_NIX2_ROOT:-${CACHED_NIX2_ROOT:-/var/cache/cached-test/trixie}}
NIX2=${BENCH_NIX2:-1}
S3=${BENCH_S3:-1}

TS=$(date -u +%Y%m%dT%H%M%SZ)
WORK=$OUT/work-$TS
LOG_TAG=bench
# shellcheck source=bench/lib.sh
. "$BENCH_DIR/lib.sh"

# ---------------------------------------------------------------------------------------------
# a. Tools and binaries.
missing=()
[ -x /usr/sbin/nginx ] || command -v nginx >/dev/null || missing+=(nginx)
command -v wrk >/dev/null || missing+=(wrk)
command -v jq >/dev/null || missing+=(jq)
command -v nix >/dev/null || missing+=(nix-bin)
if [ ${#missing[@]} -gt 0 ]; then apt_install "${missing[@]}"; fi
NGINX=$(command -v nginx || echo /usr/sbin/nginx)
[ -x "$NGINX" ] || die "nginx not found after installing it"

mkdir -p "$OUT" "$WORK"
build_bins
nix_env

# ---------------------------------------------------------------------------------------------
# b. Corpus: real file trees added with nix-store --add, a chain of /bin/sh derivations with
# references, one big NAR. The manifest (the closure, one store path a line) is reused while
# every path in it is still valid.
MANIFEST=$OUT/corpus-$CORPUS_NAME.txt
GOROOT_DIR=$(go env GOROOT)

candidates() { # one real file tree a line: directories and regular files
	find /usr/lib/x86_64-linux-gnu -mindepth 1 -maxdepth 1 \( -type d -o -type f \) 2>/dev/null
	find /usr/share -mindepth 1 -maxdepth 1 -type d 2>/dev/null
	find "$GOROOT_DIR" -mindepth 1 -maxdepth 1 -type d ! -name src ! -name pkg 2>/dev/null
	find "$GOROOT_DIR/src" "$GOROOT_DIR/pkg" -mindepth 1 -maxdepth 1 -type d 2>/dev/null
}

build_corpus() {
	log "building the $CORPUS_NAME corpus (max $MAX_PATHS trees, $MAX_MIB MiB of trees, big NAR $BIG_MIB MiB)"
	local list=$WORK/candidates sel=$WORK/selected
	# Names nix accepts; no sockets, fifos or devices inside; a deterministic shuffle so a small
	# corpus still mixes libraries, data and Go sources.
	candidates | while IFS= read -r p; do
		b=$(basename "$p")
		[[ $b =~ ^[A-Za-z0-9+_?=-][A-Za-z0-9+._?=-]*$ ]] && [ ${#b} -le 200 ] || continue
		[ -r "$p" ] || continue
		if [ -d "$p" ] && [ -n "$(find "$p" ! -type f ! -type d ! -type l -print -quit 2>/dev/null)" ]; then
			continue
		fi
		printf '%s\n' "$p"
	done | shuf --random-source=<(yes) >"$list"
	local budget=$((MAX_MIB * 1048576)) total=0 count=0 size p
	: >"$sel"
	while IFS=$'\t' read -r size p; do
		[ "$count" -lt "$MAX_PATHS" ] || break
		[ $((total + size)) -le "$budget" ] || continue
		total=$((total + size))
		count=$((count + 1))
		printf '%s\n' "$p" >>"$sel"
	done < <(tr '\n' '\0' <"$list" | du -sbl --files0-from=- | awk -F'\t' '{ print $1 "\t" $2 }')
	log "adding $count real trees ($((total / 1048576)) MiB) with nix-store --add"
	local added=$WORK/added
	xargs -d '\n' -n 64 nix-store --add <"$sel" >"$added"
	[ "$(wc -l <"$added")" -eq "$count" ] || die "nix-store --add returned $(wc -l <"$added") paths for $count trees"
	log "building $CHAIN chained derivations and the big NAR (nix-build, builder /bin/sh)"
	local built
	built=$(nix-build --no-out-link "$BENCH_DIR/corpus.nix" \
		--argstr refsFile "$added" --arg bigMiB "$BIG_MIB" --arg chain "$CHAIN" --argstr tag "$CORPUS_NAME")
	# The closure of everything, dependencies first.
	# shellcheck disable=SC2086
	nix-store -qR $(cat "$added") $built >"$MANIFEST.tmp"
	mv "$MANIFEST.tmp" "$MANIFEST"
}

if [ -s "$MANIFEST" ] && xargs nix-store --check-validity <"$MANIFEST" 2>/dev/null; then
	log "reusing the corpus in $MANIFEST"
else
	build_corpus
fi
mapfile -t PATHS <"$MANIFEST"
NPATHS=${#PATHS[@]}
BIG_PATH=$(grep -- '-bench-big-nar$' "$MANIFEST" | head -n1)
[ -n "$BIG_PATH" ] || die "no bench-big-nar in $MANIFEST"
NAR_BYTES=$(nix-store -q --size "${PATHS[@]}" | awk '{ s += $1 } END { printf "%.0f", s }')
BIG_NAR_BYTES=$(nix-store -q --size "$BIG_PATH")
log "corpus: $NPATHS store paths, $((NAR_BYTES / 1048576)) MiB of NARs, big NAR $((BIG_NAR_BYTES / 1048576)) MiB"
[ "$SMALL" = 1 ] || [ "$NPATHS" -ge 300 ] || log "warning: fewer than 300 paths in the full corpus"

# ---------------------------------------------------------------------------------------------
# Servers.
CACHED_DATA=$WORK/srv-data
FILE_CACHE=$WORK/file-cache
CACHED_PID=
CACHED_URL=
# wait_url FILE SED-SCRIPT PID LOG: prints the URL a starting server writes to FILE (what
# SED-SCRIPT extracts), within 60 s; prints nothing if it exits or times out first.
wait_url() {
	local url
	for _ in $(seq 1 600); do
		url=$(sed -n "$2" "$1" | head -n1)
		[ -n "$url" ] && { echo "$url"; return 0; }
		kill -0 "$3" 2>/dev/null || return 0
		sleep 0.1
	done
}
start_cached() { # phase [extra args...]
	local phase=$1
	shift
	local outf=$WORK/cached-$phase.out
	"$SERVER" serve --data "$CACHED_DATA" --listen 127.0.0.1:0 "$@" >"$outf" 2>"$WORK/cached-$phase.log" &
	CACHED_PID=$!
	PIDS+=("$CACHED_PID")
	CACHED_URL=$(wait_url "$outf" 's/^cached is serving .* at \(http:[^ ]*\)$/\1/p' "$CACHED_PID" "$WORK/cached-$phase.log")
	[ -n "$CACHED_URL" ] || die "cached did not start within 60 s: $(tail -n 20 "$WORK/cached-$phase.log")"
	log "cached ($phase) pid $CACHED_PID at $CACHED_URL"
}
vmhwm_kib() { awk '/^VmHWM:/ { print $2 }' "/proc/$1/status" 2>/dev/null || echo 0; }

NGINX_PID=
NGINX_URL=
start_nginx() {
	local dir=$WORK/nginx port
	mkdir -p "$dir/tmp"
	port=$("$CLIENT" freeport)
	local user_line=""
	[ "$(id -u)" = 0 ] && user_line="user root root;" # workers must read the root-owned cache
	cat >"$dir/nginx.conf" <<EOF
worker_processes auto;
daemon off;
pid $dir/nginx.pid;
error_log $dir/error.log warn;
$user_line
events { worker_connections 4096; }
http {
    sendfile on;
    tcp_nopush on;
    access_log off;
    log_not_found off;
    keepalive_requests 100000;
    keepalive_timeout 300s;
    types {
        text/x-nix-narinfo narinfo;
        application/x-nix-nar nar xz zst bz2 br;
        application/json ls;
    }
    default_type application/octet-stream;
    client_body_temp_path $dir/tmp/body;
    proxy_temp_path $dir/tmp/proxy;
    fastcgi_temp_path $dir/tmp/fastcgi;
    uwsgi_temp_path $dir/tmp/uwsgi;
    scgi_temp_path $dir/tmp/scgi;
    server {
        listen 127.0.0.1:$port;
        root $FILE_CACHE;
        location / { }
    }
}
EOF
	"$NGINX" -p "$dir" -c "$dir/nginx.conf" -e "$dir/error.log" &
	NGINX_PID=$!
	PIDS+=("$NGINX_PID")
	NGINX_URL=http://127.0.0.1:$port
	for _ in $(seq 1 100); do
		(exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null && break
		kill -0 "$NGINX_PID" 2>/dev/null || die "nginx exited at start: $(tail -n 20 "$dir/error.log")"
		sleep 0.1
	done
	"$CLIENT" get -url "$NGINX_URL/nix-cache-info" >/dev/null || die "nginx does not serve $FILE_CACHE"
	log "nginx pid $NGINX_PID at $NGINX_URL"
}
nginx_vmhwm_kib() { # master and workers
	local total=0 pid
	for pid in $NGINX_PID $(pgrep -P "$NGINX_PID" || true); do
		total=$((total + $(vmhwm_kib "$pid")))
	done
	echo "$total"
}

# ---------------------------------------------------------------------------------------------
# c. Upload with nix copy, timed. The store paths are read once first so that neither upload
# pays for a cold page cache.
log "reading the corpus once to warm the page cache"
find "${PATHS[@]}" -type f -exec cat {} + >/dev/null

log "uploading to file://$FILE_CACHE (for nginx)"
t0=$(now)
nix copy --to "file://$FILE_CACHE?compression=zstd" "${PATHS[@]}"
UPLOAD_FILE_S=$(since "$t0")
log "file:// upload: $UPLOAD_FILE_S s"

start_cached upload
TOKEN=$(head -n1 "$CACHED_DATA/upload-tokens" | tr -d '[:space:]')
printf 'machine 127.0.0.1 login cached password %s\n' "$TOKEN" >"$NETRC"
log "uploading to $CACHED_URL (cached)"
t0=$(now)
c0=$(awk '{ print $14 + $15 }' "/proc/$CACHED_PID/stat")
nix copy --to "$CACHED_URL?compression=zstd" "${PATHS[@]}"
UPLOAD_HTTP_S=$(since "$t0")
UPLOAD_CPU_S=$(awk -v a="$c0" -v b="$(awk '{ print $14 + $15 }' "/proc/$CACHED_PID/stat")" -v hz="$(getconf CLK_TCK)" 'BEGIN { printf "%.2f", (b - a) / hz }')
UPLOAD_RSS_KIB=$(vmhwm_kib "$CACHED_PID")
log "http upload to cached: $UPLOAD_HTTP_S s, cached CPU $UPLOAD_CPU_S s (verifying, storing), VmHWM $((UPLOAD_RSS_KIB / 1024)) MiB"
stop_pid "$CACHED_PID"

# The same nix copy to a server that stores nothing (bench/client sink): what the nix client
# itself needs to upload over HTTP. No server can make `nix copy --to http://` faster than this.
SINK_OUT=$WORK/sink.out
"$CLIENT" sink -listen 127.0.0.1:0 >"$SINK_OUT" 2>"$WORK/sink.log" &
SINK_PID=$!
PIDS+=("$SINK_PID")
SINK_URL=$(wait_url "$SINK_OUT" 's/^sink listening at \(http:[^ ]*\)$/\1/p' "$SINK_PID" "$WORK/sink.log")
[ -n "$SINK_URL" ] || die "the store-nothing server did not start: $(cat "$WORK/sink.log")"
log "uploading to $SINK_URL (a server that stores nothing)"
t0=$(now)
nix copy --to "$SINK_URL?compression=zstd" "${PATHS[@]}"
UPLOAD_SINK_S=$(since "$t0")
log "http upload to the store-nothing server: $UPLOAD_SINK_S s"
stop_pid "$SINK_PID"

# The same two uploads with Nix 2.26 (Debian 13's nix-bin in its chroot, the second client of
# internal/e2e), which uploads paths in parallel. Its store is the chroot's: the corpus is
# imported there first from the file:// cache above (not timed), and the work directory is
# bind-mounted at the same path inside, so that both nix versions read the same netrc and write
# to the same places.
UPLOAD2_FILE_S=
UPLOAD2_HTTP_S=
UPLOAD2_CPU_S=0
UPLOAD2_SINK_S=0
NIX2_VERSION=
nix2() {
	chroot "$NIX2_ROOT" /usr/bin/env -i PATH=/usr/bin:/bin HOME=/root NIX_CONFIG="$NIX_CONFIG" \
		NIX_USER_CACHE_DIR="$NIX_USER_CACHE_DIR" XDG_CACHE_HOME="$XDG_CACHE_HOME" "$@"
}
if [ "$NIX2" = 0 ]; then
	log "BENCH_NIX2=0: no Nix 2.26 upload row"
elif [ "$(id -u)" != 0 ] || [ ! -e "$NIX2_ROOT/proc/self" ] || [ ! -e "$NIX2_ROOT/dev/null" ] ||
	! NIX2_VERSION=$(nix2 nix --version 2>/dev/null); then
	log "no working Nix 2.26 chroot in $NIX2_ROOT (root, its nix, its /proc and /dev mounted; ./test.sh provisions it): no Nix 2.26 upload row"
else
	bind_mount "$WORK" "$NIX2_ROOT$WORK"
	log "importing the corpus into the store of $NIX2_VERSION in $NIX2_ROOT (not timed)"
	nix2 nix copy --no-check-sigs --from "file://$FILE_CACHE" "${PATHS[@]}"
	find "${PATHS[@]/#/$NIX2_ROOT}" -type f -exec cat {} + >/dev/null

	log "uploading with $NIX2_VERSION to file://$WORK/file-cache-2 (then removed)"
	t0=$(now)
	nix2 nix copy --to "file://$WORK/file-cache-2?compression=zstd" "${PATHS[@]}"
	UPLOAD2_FILE_S=$(since "$t0")
	log "file:// upload, Nix 2.26: $UPLOAD2_FILE_S s"
	n2=$(find "$WORK/file-cache-2" -maxdepth 1 -name '*.narinfo' | wc -l)
	[ "$n2" -eq "$NPATHS" ] || die "Nix 2.26's file cache holds $n2 narinfos, want $NPATHS"
	rm -rf "$WORK/file-cache-2"

	serve_data=$CACHED_DATA
	CACHED_DATA=$WORK/srv-data-2
	start_cached upload-2
	TOKEN2=$(head -n1 "$CACHED_DATA/upload-tokens" | tr -d '[:space:]')
	printf 'machine 127.0.0.1 login cached password %s\n' "$TOKEN2" >"$NETRC"
	log "uploading with $NIX2_VERSION to $CACHED_URL (a fresh cached)"
	t0=$(now)
	c0=$(awk '{ print $14 + $15 }' "/proc/$CACHED_PID/stat")
	nix2 nix copy --to "$CACHED_URL?compression=zstd" "${PATHS[@]}"
	UPLOAD2_HTTP_S=$(since "$t0")
	UPLOAD2_CPU_S=$(awk -v a="$c0" -v b="$(awk '{ print $14 + $15 }' "/proc/$CACHED_PID/stat")" -v hz="$(getconf CLK_TCK)" 'BEGIN { printf "%.2f", (b - a) / hz }')
	log "http upload to cached, Nix 2.26: $UPLOAD2_HTTP_S s, cached CPU $UPLOAD2_CPU_S s"
	stop_pid "$CACHED_PID"
	n2=$(find "$CACHED_DATA/store" -maxdepth 1 -name '*.narinfo' | wc -l)
	[ "$n2" -eq "$NPATHS" ] || die "the cached Nix 2.26 uploaded to holds $n2 narinfos, want $NPATHS"
	rm -rf "$CACHED_DATA"
	CACHED_DATA=$serve_data
	printf 'machine 127.0.0.1 login cached password %s\n' "$TOKEN" >"$NETRC"

	"$CLIENT" sink -listen 127.0.0.1:0 >"$SINK_OUT.2" 2>"$WORK/sink-2.log" &
	SINK_PID=$!
	PIDS+=("$SINK_PID")
	SINK_URL=$(wait_url "$SINK_OUT.2" 's/^sink listening at \(http:[^ ]*\)$/\1/p' "$SINK_PID" "$WORK/sink-2.log")
	[ -n "$SINK_URL" ] || die "the store-nothing server did not start: $(cat "$WORK/sink-2.log")"
	log "uploading with $NIX2_VERSION to $SINK_URL (a server that stores nothing)"
	t0=$(now)
	nix2 nix copy --to "$SINK_URL?compression=zstd" "${PATHS[@]}"
	UPLOAD2_SINK_S=$(since "$t0")
	log "http upload to the store-nothing server, Nix 2.26: $UPLOAD2_SINK_S s"
	stop_pid "$SINK_PID"
	unmount_all
	# The chroot is the end-to-end tests' client: it does not keep gigabytes of corpus.
	nix2 nix-store --delete "${PATHS[@]}" >/dev/null 2>&1 || log "could not delete the corpus from the store in $NIX2_ROOT"
fi

n_file=$(find "$FILE_CACHE" -maxdepth 1 -name '*.narinfo' | wc -l)
n_cached=$(find "$CACHED_DATA/store" -maxdepth 1 -name '*.narinfo' | wc -l)
[ "$n_file" -eq "$NPATHS" ] || die "file cache holds $n_file narinfos, want $NPATHS"
[ "$n_cached" -eq "$NPATHS" ] || die "cached holds $n_cached narinfos, want $NPATHS"
FILE_CACHE_BYTES=$(du -sb "$FILE_CACHE" | cut -f1)
CACHED_STORE_BYTES=$(du -sb "$CACHED_DATA/store" | cut -f1)

ROWS=$WORK/rows.tsv # key, label, unit, better (lower|higher), nginx, cached
: >"$ROWS"
row() {
	[ -z "$NGINX_PID" ] || check_alive # once the servers are up
	printf '%s\t%s\t%s\t%s\t%s\t%s\n' "$@" >>"$ROWS"
}
SERVE_RSS_KIB=0
NGINX_RSS_KIB=0
RAW=$WORK/raw
mkdir -p "$RAW"
LOAD_START=$(cut -d' ' -f1-3 /proc/loadavg)
if [ "$ONLY" != upload ]; then # d. and e., to the upload rows below: not indented, to keep them readable

# d. Serve.
start_nginx
start_cached serve
SERVE_CACHED_PID=$CACHED_PID

# ---------------------------------------------------------------------------------------------
# e. Measure. Each row runs nginx, then cached, with the same client.
LOAD_START=$(cut -d' ' -f1-3 /proc/loadavg)
awk -v l="${LOAD_START%% *}" -v n="$(nproc)" 'BEGIN { exit !(l > n / 2) }' &&
	log "warning: load average $LOAD_START on $(nproc) CPUs before measuring: other jobs will add noise"
HASHES=$WORK/hashes.txt
printf '%s\n' "${PATHS[@]}" | sed 's|^/nix/store/||; s|-.*||' >"$HASHES"
HIT_PATHS=$WORK/hit-paths.txt
MISS_PATHS=$WORK/miss-paths.txt
sed 's|.*|/&.narinfo|' "$HASHES" >"$HIT_PATHS"
# Valid store hashes (nix32 alphabet) that are not in either cache.
awk 'BEGIN { srand(); a = "0123456789abcdfghijklmnpqrsvwxyz"
	for (i = 0; i < 1000; i++) { s = ""; for (j = 0; j < 32; j++) s = s substr(a, int(rand() * 32) + 1, 1); print s } }' |
	grep -vxFf "$HASHES" | sed 's|.*|/&.narinfo|' >"$MISS_PATHS"
BIG_HASH=$(basename "$BIG_PATH" | cut -c1-32)

url_of() { case $1 in nginx) echo "$NGINX_URL" ;; cached) echo "$CACHED_URL" ;; esac; }
# Both servers must live through every row: a restart would reset cached's RSS and warm caches.
check_alive() {
	kill -0 "$NGINX_PID" 2>/dev/null || die "nginx (pid $NGINX_PID) is gone; see $WORK/nginx/error.log"
	kill -0 "$CACHED_PID" 2>/dev/null ||
		die "cached (pid $CACHED_PID) is gone mid-run: $(grep -v 'msg=request' "$WORK"/cached-*.log | tail -n 3)"
}
# CPU time the server spent (user + system, all threads; nginx: master and workers), in clock
# ticks. Unlike req/s, CPU per request hardly depends on what else the machine is running.
CLK_TCK=$(getconf CLK_TCK)
cpu_ticks() {
	local pids pid total=0
	case $1 in
	nginx) pids="$NGINX_PID $(pgrep -P "$NGINX_PID" | tr '\n' ' ')" ;;
	cached) pids=$CACHED_PID ;;
	esac
	for pid in $pids; do
		total=$((total + $(awk '{ print $14 + $15 }' "/proc/$pid/stat" 2>/dev/null || echo 0)))
	done
	echo "$total"
}
# measured SERVER OUT-FILE COMMAND...: runs COMMAND (which prints one JSON object) and adds the
# server's CPU seconds during it as .server_cpu_s.
measured() {
	local s=$1 f=$2 t0 t1
	shift 2
	t0=$(cpu_ticks "$s")
	"$@" >"$f.tmp"
	t1=$(cpu_ticks "$s")
	jq --argjson cpu "$(awk -v a="$t0" -v b="$t1" -v hz="$CLK_TCK" 'BEGIN { print (b - a) / hz }')" \
		'. + {server_cpu_s: $cpu}' "$f.tmp" >"$f"
	rm -f "$f.tmp"
}
# median EXPR FILE...: the median over runs of a jq expression.
median() {
	local expr=$1
	shift
	jq -s "map($expr) | sort | if length % 2 == 1 then .[length / 2 | floor] else (.[length / 2 - 1] + .[length / 2]) / 2 end" "$@"
}
# Every row runs REPEAT rounds; each round measures nginx, then cached, so that a change in the
# machine's load (other jobs) hits both alike. The median round is reported.

log "row: every narinfo, sequentially (x$REPEAT)"
for r in $(seq 1 "$REPEAT"); do
	for s in nginx cached; do
		"$CLIENT" narinfos -base "$(url_of $s)" -hashes "$HASHES" -out "$WORK/nars-$s.tsv" >"$RAW/$s-narinfo-seq-$r.json"
	done
done
row narinfo_seq_s "all $NPATHS narinfos, one after another" s lower \
	"$(median .seconds "$RAW"/nginx-narinfo-seq-*.json)" "$(median .seconds "$RAW"/cached-narinfo-seq-*.json)"

log "warm-up: every NAR once from each server"
for s in nginx cached; do
	"$CLIENT" nars -base "$(url_of $s)" -list "$WORK/nars-$s.tsv" -c 4 >/dev/null
done
NARS_MIB=$(awk -F'\t' '{ s += $3 } END { printf "%.0f", s / 1048576 }' "$WORK/nars-cached.tsv")
for c in 1 4 16; do
	log "row: every NAR, $c stream(s) (x$NAR_REPEAT)"
	for r in $(seq 1 "$NAR_REPEAT"); do
		for s in nginx cached; do
			measured "$s" "$RAW/$s-nars-c$c-$r.json" "$CLIENT" nars -base "$(url_of $s)" -list "$WORK/nars-$s.tsv" -c "$c"
		done
	done
	row "nars_c${c}_s" "all NARs ($NARS_MIB MiB compressed), $c stream(s)" s lower \
		"$(median .seconds "$RAW"/nginx-nars-c$c-*.json)" "$(median .seconds "$RAW"/cached-nars-c$c-*.json)"
done
row nars_c1_cpu_s "server CPU time for all NARs, 1 stream" s lower \
	"$(median .server_cpu_s "$RAW"/nginx-nars-c1-*.json)" "$(median .server_cpu_s "$RAW"/cached-nars-c1-*.json)"

log "row: big NAR, one stream (x$NAR_REPEAT)"
for r in $(seq 1 "$NAR_REPEAT"); do
	for s in nginx cached; do
		big_url=$(awk -F'\t' -v h="$BIG_HASH" '$1 == h { print $2 }' "$WORK/nars-$s.tsv")
		[ -n "$big_url" ] || die "no NAR URL for the big NAR in $WORK/nars-$s.tsv"
		"$CLIENT" get -url "$(url_of $s)/$big_url" >"$RAW/$s-big-$r.json"
	done
done
BIG_FILE_MIB=$(jq '.bytes / 1048576 | round' "$RAW/cached-big-1.json")
row big_nar_gbps "big NAR download (${BIG_FILE_MIB} MiB file), 1 stream" GB/s higher \
	"$(median .gb_per_sec "$RAW"/nginx-big-*.json)" "$(median .gb_per_sec "$RAW"/cached-big-*.json)"

run_wrk() { # server kind(hit|miss) paths-file out-file
	local s=$1 kind=$2 paths=$3 f=$4 out errs t0 t1
	t0=$(cpu_ticks "$s")
	out=$(wrk -t"$WRK_THREADS" -c"$WRK_CONNS" -d"${WRK_SECONDS}s" --timeout 5s -s "$BENCH_DIR/narinfo.lua" "$(url_of "$s")" -- "$paths")
	t1=$(cpu_ticks "$s")
	printf '%s\n' "$out" | grep '^{' | tail -n1 >"$f.tmp"
	[ -s "$f.tmp" ] || die "wrk printed no summary for $s $kind: $out"
	jq --argjson cpu "$(awk -v a="$t0" -v b="$t1" -v hz="$CLK_TCK" 'BEGIN { print (b - a) / hz }')" \
		'. + {server_cpu_s: $cpu, server_cpu_us_per_req: ($cpu * 1e6 / .requests)}' "$f.tmp" >"$f"
	rm -f "$f.tmp"
	errs=$(jq '.errors_connect + .errors_read + .errors_write + .errors_timeout' "$f")
	[ "$errs" -eq 0 ] || log "warning: $s narinfo $kind: $errs socket errors ($(cat "$f"))"
	if [ "$kind" = hit ]; then
		[ "$(jq .errors_status "$f")" -eq 0 ] || die "$s answered non-200 to narinfo hits: $(cat "$f")"
	else
		[ "$(jq '.requests - .errors_status' "$f")" -eq 0 ] || die "$s answered 200 to narinfo misses: $(cat "$f")"
	fi
}
wrk_rows() { # kind label-suffix cached-tag
	local kind=$1 sfx=$2 tag=$3 n c
	n=("$RAW"/nginx-wrk-$kind$tag-*.json)
	c=("$RAW"/cached-wrk-$kind$tag-*.json)
	row "narinfo_${kind}${tag}_rps" "narinfo $kind req/s, $WRK_CONNS conns$sfx" req/s higher \
		"$(median .req_per_sec "${n[@]}")" "$(median .req_per_sec "${c[@]}")"
	row "narinfo_${kind}${tag}_p50_ms" "narinfo $kind p50 latency$sfx" ms lower \
		"$(median '.p50_us / 1000' "${n[@]}")" "$(median '.p50_us / 1000' "${c[@]}")"
	row "narinfo_${kind}${tag}_p99_ms" "narinfo $kind p99 latency$sfx" ms lower \
		"$(median '.p99_us / 1000' "${n[@]}")" "$(median '.p99_us / 1000' "${c[@]}")"
	row "narinfo_${kind}${tag}_cpu_us" "server CPU per narinfo $kind$sfx" us lower \
		"$(median .server_cpu_us_per_req "${n[@]}")" "$(median .server_cpu_us_per_req "${c[@]}")"
}
paths_of() { if [ "$1" = hit ]; then echo "$HIT_PATHS"; else echo "$MISS_PATHS"; fi; }
for kind in hit miss; do
	log "row: narinfo $kind, wrk $WRK_CONNS connections, ${WRK_SECONDS}s (x$WRK_REPEAT)"
	for s in nginx cached; do # warm-up
		wrk -t"$WRK_THREADS" -c"$WRK_CONNS" -d2s -s "$BENCH_DIR/narinfo.lua" "$(url_of "$s")" -- "$(paths_of $kind)" >/dev/null
	done
	for r in $(seq 1 "$WRK_REPEAT"); do
		for s in nginx cached; do run_wrk "$s" "$kind" "$(paths_of $kind)" "$RAW/$s-wrk-$kind-$r.json"; done
	done
	wrk_rows "$kind" "" ""
done

SERVE_RSS_KIB=$(vmhwm_kib "$SERVE_CACHED_PID")
NGINX_RSS_KIB=$(nginx_vmhwm_kib)
row peak_rss_serve_mib "peak RSS while serving (nginx: master+workers)" MiB lower \
	"$(awk -v k="$NGINX_RSS_KIB" 'BEGIN { printf "%.1f", k / 1024 }')" "$(awk -v k="$SERVE_RSS_KIB" 'BEGIN { printf "%.1f", k / 1024 }')"

if [ "$QUIET_ROWS" = 1 ]; then
	# cached writes one log line per request by default; nginx here has access_log off. These
	# rows show what that line costs: cached restarted without it (--access-log none, or
	# --log-level warn on versions without that flag), against nginx measured again beside it.
	if "$SERVER" serve --help 2>/dev/null | grep -q -- '--access-log'; then
		quiet_args=(--access-log none)
	else
		quiet_args=(--log-level warn)
	fi
	stop_pid "$SERVE_CACHED_PID"
	start_cached quiet "${quiet_args[@]}"
	for kind in hit miss; do
		log "row: narinfo $kind, cached ${quiet_args[*]} (x$WRK_REPEAT)"
		wrk -t"$WRK_THREADS" -c"$WRK_CONNS" -d2s -s "$BENCH_DIR/narinfo.lua" "$CACHED_URL" -- "$(paths_of $kind)" >/dev/null
		for r in $(seq 1 "$WRK_REPEAT"); do # nginx again, beside it: the machine drifts
			run_wrk nginx "$kind" "$(paths_of $kind)" "$RAW/nginx-wrk-${kind}_quiet-$r.json"
			run_wrk cached "$kind" "$(paths_of $kind)" "$RAW/cached-wrk-${kind}_quiet-$r.json"
		done
		wrk_rows "$kind" " (cached ${quiet_args[*]})" _quiet
	done
fi

fi # BENCH_ONLY=upload skipped d. and e. from here up

# S3: bench/s3.sh in its own process, its rows added here. The baseline column holds versitygw's
# time for the same object fetched straight from the bucket by the same client.
S3_NOTE=
if [ "$ONLY" = upload ]; then
	:
elif [ "$S3" = 0 ]; then
	S3_NOTE="BENCH_S3=0: no S3 rows"
	log "$S3_NOTE"
else
	log "S3 rows: bench/s3.sh (BENCH_S3=0 skips them), output in $WORK/s3.out"
	if BENCH_OUT=$OUT BENCH_REPEAT=$REPEAT BENCH_S3_RESULT=$RAW/s3.json bash "$BENCH_DIR/s3.sh" >"$WORK/s3.out" 2>&1; then
		s3() { jq -r "$1" "$RAW/s3.json"; }
		s3_row() { printf '%s\t%s\t%s\t%s\t%s\t%s\n' "$@" >>"$ROWS"; }
		s3_mib=$(s3 '.nar_bytes / 1048576 | round')
		s3_row s3_nar_s "S3: ${s3_mib} MiB NAR, 1 client (baseline: straight from versitygw)" s lower "$(s3 .one.versitygw_s)" "$(s3 .one.cached_s)"
		s3_row s3_nar_redirect_s "S3: the same, cached --nar-redirect presign" s lower "$(s3 .one.versitygw_s)" "$(s3 .one.redirect_s)"
		s3_row s3_nar_latency_s "S3 +$(s3 .latency.added_per_s3_request) per request: 1 client (baseline through the same proxy)" s lower "$(s3 .latency.versitygw_s)" "$(s3 .latency.cached_s)"
		s3_row s3_nar_concurrent_s "S3: $(s3 .concurrent.streams) concurrent clients, the same NAR" s lower "$(s3 .concurrent.versitygw_s)" "$(s3 .concurrent.cached_s)"
		S3_NOTE="S3: cached peak RSS $(s3 '.one.cached_peak_rss_kib / 1024 | round') MiB (1 client), $(s3 '.concurrent.cached_peak_rss_kib / 1024 | round') MiB ($(s3 .concurrent.streams) concurrent)"
	else
		S3_NOTE="S3 rows missing: bench/s3.sh failed ($(tail -n 1 "$WORK/s3.out")); see $WORK/s3.out"
		log "$S3_NOTE"
	fi
fi

LOAD_END=$(cut -d' ' -f1-3 /proc/loadavg)
row upload_s "upload, nix copy zstd (nginx: to file://)" s lower "$UPLOAD_FILE_S" "$UPLOAD_HTTP_S"
if [ -n "$UPLOAD2_HTTP_S" ]; then
	row upload_nix2_s "upload, Nix 2.26 nix copy zstd (nginx: to file://)" s lower "$UPLOAD2_FILE_S" "$UPLOAD2_HTTP_S"
fi

# ---------------------------------------------------------------------------------------------
# f. Table and JSON. ratio >= 1 means cached is as fast (as small) or better:
# nginx/cached for times, latencies and RSS; cached/nginx for rates.
RESULTS=$OUT/results-$TS.json
jq -R -s \
	--arg ts "$TS" --arg corpus "$CORPUS_NAME" \
	--argjson paths "$NPATHS" --argjson narBytes "$NAR_BYTES" --argjson bigNarBytes "$BIG_NAR_BYTES" \
	--argjson fileCacheBytes "$FILE_CACHE_BYTES" --argjson cachedStoreBytes "$CACHED_STORE_BYTES" \
	--argjson uploadRss "$UPLOAD_RSS_KIB" --argjson uploadCpu "$UPLOAD_CPU_S" --argjson uploadSink "$UPLOAD_SINK_S" \
	--arg nix2 "$NIX2_VERSION" --argjson upload2Cpu "$UPLOAD2_CPU_S" --argjson upload2Sink "$UPLOAD2_SINK_S" \
	--argjson serveRss "$SERVE_RSS_KIB" --argjson nginxRss "$NGINX_RSS_KIB" \
	--arg commit "$(git -C "$REPO" rev-parse HEAD 2>/dev/null || echo unknown)" \
	--arg dirty "$(git -C "$REPO" status --porcelain 2>/dev/null | grep -q . && echo true || echo false)" \
	--arg nix "$(nix --version)" --arg nginx "$("$NGINX" -v 2>&1)" --arg wrk "$(wrk -v 2>&1 | head -n1)" \
	--arg kernel "$(uname -r)" --argjson cpus "$(nproc)" --arg loadStart "$LOAD_START" --arg loadEnd "$LOAD_END" \
	--arg go "$(go version)" --argjson repeat "$REPEAT" --argjson narRepeat "$NAR_REPEAT" --argjson wrkSeconds "$WRK_SECONDS" --argjson wrkRepeat "$WRK_REPEAT" \
	--slurpfile raw <(for f in "$RAW"/*.json; do [ -e "$f" ] || continue; jq -c --arg k "$(basename "$f" .json)" '{($k): .}' "$f"; done | jq -s 'add') \
	'{
	  timestamp: $ts,
	  machine: {cpus: $cpus, kernel: $kernel, loadavg_before: $loadStart, loadavg_after: $loadEnd},
	  versions: {cached_commit: $commit, worktree_dirty: ($dirty == "true"), go: $go, nix: $nix, nginx: $nginx, wrk: $wrk},
	  settings: {repeat: $repeat, nar_repeat: $narRepeat, wrk_repeat: $wrkRepeat, wrk_seconds: $wrkSeconds, wrk_connections: 64},
	  corpus: {name: $corpus, store_paths: $paths, nar_bytes: $narBytes, big_nar_bytes: $bigNarBytes,
	           file_cache_bytes: $fileCacheBytes, cached_store_bytes: $cachedStoreBytes},
	  rss_kib: {cached_upload_peak: $uploadRss, cached_serve_peak: $serveRss, nginx_serve_peak: $nginxRss},
	  upload: {cached_cpu_s: $uploadCpu, sink_s: $uploadSink,
	           sink_definition: "wall time of the same nix copy to an HTTP server that reads and discards every PUT (bench/client sink): the floor that the nix client itself sets over HTTP",
	           nix2: (if $nix2 == "" then null else {version: $nix2, cached_cpu_s: $upload2Cpu, sink_s: $upload2Sink} end)},
	  ratio_definition: "ratio >= 1 means cached is as fast or better: nginx/cached for seconds, latency and RSS (lower is better), cached/nginx for req/s and GB/s (higher is better)",
	  rows: [split("\n")[] | select(length > 0) | split("\t") |
	    {key: .[0], label: .[1], unit: .[2], better: .[3], nginx: (.[4] | tonumber), cached: (.[5] | tonumber)} |
	    .ratio = (if .better == "lower" then (if .cached > 0 then .nginx / .cached else null end)
	              else (if .nginx > 0 then .cached / .nginx else null end) end)],
	  raw: $raw[0]
	}' "$ROWS" >"$RESULTS"
cp "$RESULTS" "$OUT/latest.json"

{
	printf '\ncached vs nginx — %s corpus: %d store paths, %.0f MiB of NARs, big NAR %.0f MiB; %d CPUs\n' \
		"$CORPUS_NAME" "$NPATHS" "$(awk -v b="$NAR_BYTES" 'BEGIN { print b / 1048576 }')" \
		"$(awk -v b="$BIG_NAR_BYTES" 'BEGIN { print b / 1048576 }')" "$(nproc)"
	printf 'load average before/after measuring: %s / %s\n' "$LOAD_START" "$LOAD_END"
	printf 'ratio >= 1.00 means cached is as fast or better (nginx/cached for times, cached/nginx for rates)\n\n'
	jq -r '.rows[] | [.label + " [" + .unit + "]", (.nginx | tostring), (.cached | tostring), (if .ratio == null then "-" else (.ratio * 100 | round / 100 | tostring) end)] | @tsv' "$RESULTS" |
		awk -F'\t' 'function f(x) { return x >= 1000 ? sprintf("%.0f", x) : sprintf("%.4g", x) }
			BEGIN { printf "%-66s %12s %12s %7s\n", "row", "nginx", "cached", "ratio"; printf "%-66s %12s %12s %7s\n", "---", "-----", "------", "-----" }
			{ printf "%-66s %12s %12s %7s\n", $1, f($2), f($3), $4 }'
	printf '\nnix copy to an HTTP server that stores nothing (the client'"'"'s own floor over HTTP): %s s;\n' "$UPLOAD_SINK_S"
	printf '  cached took %.2fx that floor, file:// %.2fx\n' \
		"$(awk -v a="$UPLOAD_HTTP_S" -v b="$UPLOAD_SINK_S" 'BEGIN { print a / b }')" \
		"$(awk -v a="$UPLOAD_FILE_S" -v b="$UPLOAD_SINK_S" 'BEGIN { print a / b }')"
	printf 'cached CPU during the upload (verifying, storing, signing): %s s\n' "$UPLOAD_CPU_S"
	if [ -n "$UPLOAD2_HTTP_S" ]; then
		printf '%s: to the server that stores nothing %s s; cached took %.2fx that floor, file:// %.2fx; cached CPU %s s\n' \
			"$NIX2_VERSION" "$UPLOAD2_SINK_S" \
			"$(awk -v a="$UPLOAD2_HTTP_S" -v b="$UPLOAD2_SINK_S" 'BEGIN { print a / b }')" \
			"$(awk -v a="$UPLOAD2_FILE_S" -v b="$UPLOAD2_SINK_S" 'BEGIN { print a / b }')" "$UPLOAD2_CPU_S"
	fi
	if [ "$ONLY" = upload ]; then
		printf 'cached peak RSS: upload %.1f MiB\n' "$(awk -v k="$UPLOAD_RSS_KIB" 'BEGIN { print k / 1024 }')"
	else
		printf 'cached peak RSS: upload %.1f MiB, serving %.1f MiB (nginx master+workers %.1f MiB)\n' \
			"$(awk -v k="$UPLOAD_RSS_KIB" 'BEGIN { print k / 1024 }')" "$(awk -v k="$SERVE_RSS_KIB" 'BEGIN { print k / 1024 }')" \
			"$(awk -v k="$NGINX_RSS_KIB" 'BEGIN { print k / 1024 }')"
	fi
	[ -z "$S3_NOTE" ] || printf '%s\n' "$S3_NOTE"
	printf 'results: %s (and %s)\n' "$RESULTS" "$OUT/latest.json"
}
