#!/usr/bin/env bash
# bench/bignar.sh — cached's peak RSS while a very large NAR streams through it, both ways, on the
# disk backend and on S3 (versitygw on 127.0.0.1): memory must stay flat in the NAR size.
#
# Builds one store path holding a single file of BENCH_BIG_GIB GiB (default 4) of random bytes,
# then for each backend: a fresh cached, `nix copy --to 'http://...?compression=none'` (cached
# recompresses it to zstd while verifying it: the heaviest ingest path), VmHWM of that process;
# cached restarted on the same data, the NAR downloaded once by bench/client, VmHWM of that
# process. Prints one line per measurement and writes bench/out/bignar-<timestamp>.json.
#
#   bench/bignar.sh                      BENCH_BIG_GIB=1 for a quick run; BENCH_BACKENDS="disk"
set -euo pipefail

BENCH_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
OUT=${BENCH_OUT:-$BENCH_DIR/out}
GIB=${BENCH_BIG_GIB:-4}
BACKENDS=${BENCH_BACKENDS:-disk s3}
KEEP=${BENCH_KEEP:-0}
TS=$(date -u +%Y%m%dT%H%M%SZ)
WORK=$OUT/bignar-$TS
LOG_TAG=bignar
# shellcheck source=bench/lib.sh
. "$BENCH_DIR/lib.sh"

missing=()
command -v nix >/dev/null || missing+=(nix-bin)
command -v jq >/dev/null || missing+=(jq)
if [ ${#missing[@]} -gt 0 ]; then apt_install "${missing[@]}"; fi
export PATH="$(go env GOPATH)/bin:$PATH"
if [[ " $BACKENDS " == *" s3 "* ]] && ! command -v versitygw >/dev/null; then
	log "installing versitygw"
	go install github.com/versity/versitygw/cmd/versitygw@v1.8.0
fi

mkdir -p "$WORK"
build_bins
nix_env

log "building a store path with one ${GIB} GiB file"
cat >"$WORK/big.nix" <<EOF
builtins.derivation {
  name = "bench-bignar-${GIB}g";
  system = builtins.currentSystem;
  builder = "/bin/sh";
  args = [ "-c" "/bin/mkdir \$out && /usr/bin/head -c $((GIB * 1024 * 1024 * 1024)) /dev/urandom > \$out/blob" ];
}
EOF
BIG=$(nix-build --no-out-link "$WORK/big.nix")
NAR_BYTES=$(nix-store -q --size "$BIG")
HASH=$(basename "$BIG" | cut -c1-32)
log "store path $BIG, NAR $NAR_BYTES bytes"

vmhwm_kib() { awk '/^VmHWM:/ { print $2 }' "/proc/$1/status"; }
CACHED_PID=
CACHED_URL=
start_cached() { # name args...
	local name=$1 out
	shift
	out=$WORK/$name.out
	"$SERVER" serve --listen 127.0.0.1:0 "$@" >"$out" 2>"$WORK/$name.log" &
	CACHED_PID=$!
	PIDS+=("$CACHED_PID")
	for _ in $(seq 1 600); do
		CACHED_URL=$(sed -n 's/^cached is serving .* at \(http:[^ ]*\)$/\1/p' "$out" | head -n1)
		[ -n "$CACHED_URL" ] && return 0
		kill -0 "$CACHED_PID" 2>/dev/null || die "cached exited at start: $(tail -n 5 "$WORK/$name.log")"
		sleep 0.1
	done
	die "cached did not start"
}
stop_cached() {
	kill -TERM "$CACHED_PID"
	wait "$CACHED_PID" 2>/dev/null || true
}

GW_PID=
start_gw() {
	local port dir=$WORK/s3
	mkdir -p "$dir/bucket"
	port=$("$CLIENT" freeport)
	versitygw --access bench --secret bench-secret-key --port "127.0.0.1:$port" posix "$dir" >"$WORK/versitygw.log" 2>&1 &
	GW_PID=$!
	PIDS+=("$GW_PID")
	for _ in $(seq 1 100); do
		(exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null && break
		sleep 0.1
	done
	S3_ARGS=(--backend s3 --s3-bucket bucket --s3-endpoint "http://127.0.0.1:$port" --s3-region us-east-1
		--s3-path-style --s3-access-key bench --s3-secret-key bench-secret-key)
}

RESULTS=$WORK/results.tsv
: >"$RESULTS"
for backend in $BACKENDS; do
	data=$WORK/data-$backend
	args=(--data "$data")
	if [ "$backend" = s3 ]; then
		start_gw
		args+=("${S3_ARGS[@]}" --secret-key-file "$data/secret-key")
		mkdir -p "$data"
		"$SERVER" keygen bench-1 --secret-key-file "$data/secret-key" --public-key-file "$data/public-key" >/dev/null
	fi
	start_cached "up-$backend" "${args[@]}"
	printf 'machine 127.0.0.1 login cached password %s\n' "$(head -n1 "$data/upload-tokens" | tr -d '[:space:]')" >"$NETRC"
	log "$backend: nix copy of the ${GIB} GiB NAR (compression=none; cached recompresses to zstd)"
	t0=$(date +%s.%N)
	nix copy --to "$CACHED_URL?compression=none" "$BIG"
	up_s=$(awk -v a="$t0" -v b="$(date +%s.%N)" 'BEGIN { printf "%.1f", b - a }')
	up_kib=$(vmhwm_kib "$CACHED_PID")
	stop_cached
	log "$backend: upload ${up_s} s, cached VmHWM $((up_kib / 1024)) MiB"

	start_cached "down-$backend" "${args[@]}"
	printf '%s\n' "$HASH" >"$WORK/hash"
	"$CLIENT" narinfos -base "$CACHED_URL" -hashes "$WORK/hash" -out "$WORK/nars-$backend.tsv" >/dev/null
	nar_url=$(cut -f2 "$WORK/nars-$backend.tsv")
	"$CLIENT" get -url "$CACHED_URL/$nar_url" >"$WORK/get-$backend.json"
	down_kib=$(vmhwm_kib "$CACHED_PID")
	gbps=$(jq .gb_per_sec "$WORK/get-$backend.json")
	stop_cached
	log "$backend: download $(jq .bytes "$WORK/get-$backend.json") bytes at $gbps GB/s, cached VmHWM $((down_kib / 1024)) MiB"
	printf '%s\t%s\t%s\t%s\t%s\n' "$backend" "$up_s" "$up_kib" "$gbps" "$down_kib" >>"$RESULTS"
	if [ -n "$GW_PID" ]; then
		kill -TERM "$GW_PID"
		wait "$GW_PID" 2>/dev/null || true
		GW_PID=
	fi
done

mkdir -p "$OUT"
jq -R -s --arg ts "$TS" --argjson narBytes "$NAR_BYTES" --arg commit "$(git -C "$REPO" rev-parse HEAD)" '{
  timestamp: $ts, cached_commit: $commit, nar_bytes: $narBytes,
  runs: [split("\n")[] | select(length > 0) | split("\t") |
    {backend: .[0], upload_s: (.[1] | tonumber), upload_peak_rss_kib: (.[2] | tonumber),
     download_gb_per_sec: (.[3] | tonumber), download_peak_rss_kib: (.[4] | tonumber)}]
}' "$RESULTS" >"$OUT/bignar-$TS.json"
printf '\ncached peak RSS with a %.2f GiB NAR (VmHWM of the process, MiB)\n' "$(awk -v b="$NAR_BYTES" 'BEGIN { print b / 1073741824 }')"
printf '%-8s %12s %14s %14s %16s\n' backend "upload [s]" "upload RSS" "download GB/s" "download RSS"
awk -F'\t' '{ printf "%-8s %12s %14.1f %14.3f %16.1f\n", $1, $2, $3 / 1024, $4, $5 / 1024 }' "$RESULTS"
echo "results: $OUT/bignar-$TS.json"
