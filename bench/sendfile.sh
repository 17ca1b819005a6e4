#!/usr/bin/env bash
# bench/sendfile.sh — does cached hand NAR bodies to the kernel (sendfile), as nginx does?
# Uploads one store path (the Go toolchain's bin/, a few MiB of zstd NAR) to a fresh cached,
# restarts cached under `strace -f -e trace=sendfile`, downloads the NAR once and prints the
# sendfile calls the download made. Exit status 0 when they carry the NAR (all of it through the
# fast path; all but the first 512 bytes through net/http), 1 otherwise.
#
#   bench/sendfile.sh            (BENCH_KEEP=1 keeps the work directory)
set -euo pipefail

BENCH_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
OUT=${BENCH_OUT:-$BENCH_DIR/out}
KEEP=${BENCH_KEEP:-0}
WORK=$OUT/sendfile-$(date -u +%Y%m%dT%H%M%SZ)
LOG_TAG=sendfile
DIE_CODE=2
# shellcheck source=bench/lib.sh
. "$BENCH_DIR/lib.sh"

missing=()
command -v strace >/dev/null || missing+=(strace)
command -v nix >/dev/null || missing+=(nix-bin)
if [ ${#missing[@]} -gt 0 ]; then apt_install "${missing[@]}"; fi

mkdir -p "$WORK"
build_bins
nix_env

DATA=$WORK/srv-data
URL=
wait_url() { # stdout-file pid
	URL=
	for _ in $(seq 1 600); do
		URL=$(sed -n 's/^cached is serving .* at \(http:[^ ]*\)$/\1/p' "$1" | head -n1)
		[ -n "$URL" ] && return 0
		kill -0 "$2" 2>/dev/null || die "cached exited at start"
		sleep 0.1
	done
	die "cached did not start within 60 s"
}
stop() { # pid
	kill -TERM "$1" 2>/dev/null || return 0
	for _ in $(seq 1 300); do
		kill -0 "$1" 2>/dev/null || return 0
		sleep 0.1
	done
	kill -KILL "$1" 2>/dev/null || true
}

STORE_PATH=$(nix-store --add "$(go env GOROOT)/bin")
log "store path: $STORE_PATH"

"$SERVER" serve --data "$DATA" --listen 127.0.0.1:0 >"$WORK/upload.out" 2>"$WORK/upload.log" &
pid=$!
PIDS+=("$pid")
wait_url "$WORK/upload.out" "$pid"
printf 'machine 127.0.0.1 login cached password %s\n' "$(head -n1 "$DATA/upload-tokens" | tr -d '[:space:]')" >"$NETRC"
nix copy --to "$URL?compression=zstd" "$STORE_PATH"
stop "$pid"

TRACE=$WORK/strace.txt
strace -f -qq -e trace=sendfile -o "$TRACE" "$SERVER" serve --data "$DATA" --listen 127.0.0.1:0 >"$WORK/serve.out" 2>"$WORK/serve.log" &
strace_pid=$!
PIDS+=("$strace_pid")
wait_url "$WORK/serve.out" "$strace_pid"
cached_pid=$(pgrep -P "$strace_pid" | head -n1)
[ -n "$cached_pid" ] || die "no cached process under strace"
PIDS=("$cached_pid" "${PIDS[@]}") # SIGTERM to strace would detach and leave cached running

hash=$(basename "$STORE_PATH" | cut -c1-32)
printf '%s\n' "$hash" >"$WORK/hashes"
"$CLIENT" narinfos -base "$URL" -hashes "$WORK/hashes" -out "$WORK/nars.tsv" >/dev/null
nar_url=$(cut -f2 "$WORK/nars.tsv")
nar_size=$(cut -f3 "$WORK/nars.tsv")
log "downloading $nar_url ($nar_size bytes) from cached under strace"
lines_before=$(wc -l <"$TRACE")
"$CLIENT" get -url "$URL/$nar_url" >"$WORK/get.json"
stop "$cached_pid"
for _ in $(seq 1 100); do
	kill -0 "$strace_pid" 2>/dev/null || break
	sleep 0.1
done

calls=$(tail -n +"$((lines_before + 1))" "$TRACE" | grep -c 'sendfile(' || true)
sent=$(tail -n +"$((lines_before + 1))" "$TRACE" | sed -n 's/.*sendfile(.*)[[:space:]]*=[[:space:]]*\([0-9][0-9]*\)$/\1/p' | awk '{ s += $1 } END { print s + 0 }')
echo "strace -f -e trace=sendfile on cached while downloading $nar_url ($nar_size bytes):"
tail -n +"$((lines_before + 1))" "$TRACE" | grep 'sendfile(' | head -n 5 | sed 's/^/  /'
[ "$calls" -gt 5 ] && echo "  ... ($calls calls in all)"
# The fast path (the default) sends the whole file with sendfile. Through net/http (with
# --no-fast-path, or a Range request) the first 512 bytes are written by net/http itself (it
# reads them before switching to ReadFrom, for content sniffing), so a body sent by the kernel
# shows up as all but those.
if [ "$calls" -gt 0 ] && [ "$sent" -ge $((nar_size - 512)) ]; then
	echo "sendfile: YES — $calls sendfile calls sent $sent of the NAR's $nar_size bytes ($((nar_size - sent)) written from userspace first)"
	exit 0
fi
echo "sendfile: NO — $calls sendfile calls, $sent bytes (NAR is $nar_size bytes): the body went through userspace"
exit 1
