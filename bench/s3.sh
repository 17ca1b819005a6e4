#!/usr/bin/env bash
# bench/s3.sh — a big NAR downloaded through cached on S3 against the same object fetched straight
# from the bucket (versitygw, posix backend, on 127.0.0.1) by the same client, in one run.
#
# Builds one store path holding a single file of BENCH_S3_MIB MiB (default 1024) of random bytes,
# uploads it to a fresh cached on S3 with nix copy, then, alternating BENCH_REPEAT times (3):
# the NAR from versitygw through a presigned URL (the baseline), and from cached. Then
# BENCH_S3_CONC (16) concurrent downloads of it from each, with cached's peak RSS (VmHWM, reset
# before the row); and the NAR through a second cached on the bucket with --nar-redirect presign
# (a 307 to versitygw, followed by the client); and both through a proxy adding
# BENCH_S3_LATENCY (20ms) to every S3 request, a third cached on the bucket behind it. Prints a table and writes bench/out/s3-<timestamp>.json.
#
#   bench/s3.sh                 BENCH_S3_MIB=256 for a quick run; BENCH_KEEP=1 keeps the work dir;
#                               BENCH_S3_PPROF=1 writes a CPU profile of cached serving the NAR
#                               (bench/out/s3-<timestamp>.pprof) after the measured rows;
#                               BENCH_S3_RESULT=FILE also copies the JSON there (bench/run.sh
#                               reads its rows from it)
set -euo pipefail

BENCH_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
OUT=${BENCH_OUT:-$BENCH_DIR/out}
MIB=${BENCH_S3_MIB:-1024}
REPEAT=${BENCH_REPEAT:-3}
CONC=${BENCH_S3_CONC:-16}
KEEP=${BENCH_KEEP:-0}
TS=$(date -u +%Y%m%dT%H%M%SZ)
WORK=$OUT/s3-$TS
LOG_TAG=s3
# shellcheck source=bench/lib.sh
. "$BENCH_DIR/lib.sh"

missing=()
command -v nix >/dev/null || missing+=(nix-bin)
command -v jq >/dev/null || missing+=(jq)
if [ ${#missing[@]} -gt 0 ]; then apt_install "${missing[@]}"; fi
export PATH="$(go env GOPATH)/bin:$PATH"
if ! command -v versitygw >/dev/null; then
	log "installing versitygw"
	go install github.com/versity/versitygw/cmd/versitygw@v1.8.0
fi

mkdir -p "$WORK"
build_bins
nix_env

log "building a store path with one ${MIB} MiB file"
cat >"$WORK/big.nix" <<NIX
builtins.derivation {
  name = "bench-s3-${MIB}m";
  system = builtins.currentSystem;
  builder = "/bin/sh";
  args = [ "-c" "/bin/mkdir \$out && /usr/bin/head -c $((MIB * 1024 * 1024)) /dev/urandom > \$out/blob" ];
}
NIX
BIG=$(nix-build --no-out-link "$WORK/big.nix")
HASH=$(basename "$BIG" | cut -c1-32)

port=$("$CLIENT" freeport)
GW=http://127.0.0.1:$port
mkdir -p "$WORK/s3/bucket"
versitygw --access bench --secret bench-secret-key --port "127.0.0.1:$port" --quiet posix "$WORK/s3" >"$WORK/versitygw.log" 2>&1 &
PIDS+=("$!")
for _ in $(seq 1 100); do
	(exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null && break
	sleep 0.1
done

data=$WORK/data
mkdir -p "$data"
PPROF_PORT=$("$CLIENT" freeport)
"$SERVER" keygen bench-1 --secret-key-file "$data/secret-key" --public-key-file "$data/public-key" >/dev/null
"$SERVER" serve --listen 127.0.0.1:0 --data "$data" --secret-key-file "$data/secret-key" \
	--backend s3 --s3-bucket bucket --s3-endpoint "$GW" --s3-region us-east-1 --s3-path-style \
	--s3-access-key bench --s3-secret-key bench-secret-key --pprof-listen "127.0.0.1:$PPROF_PORT" >"$WORK/cached.out" 2>"$WORK/cached.log" &
CACHED_PID=$!
PIDS+=("$CACHED_PID")
CACHED_URL=
for _ in $(seq 1 600); do
	CACHED_URL=$(sed -n 's/^cached is serving .* at \(http:[^ ]*\)$/\1/p' "$WORK/cached.out" | head -n1)
	[ -n "$CACHED_URL" ] && break
	kill -0 "$CACHED_PID" 2>/dev/null || die "cached exited at start: $(tail -n 5 "$WORK/cached.log")"
	sleep 0.1
done
[ -n "$CACHED_URL" ] || die "cached did not start"
printf 'machine 127.0.0.1 login cached password %s\n' "$(head -n1 "$data/upload-tokens" | tr -d '[:space:]')" >"$NETRC"
log "nix copy of the NAR to cached on S3"
nix copy --to "$CACHED_URL?compression=none" "$BIG"

printf '%s\n' "$HASH" >"$WORK/hash"
"$CLIENT" narinfos -base "$CACHED_URL" -hashes "$WORK/hash" -out "$WORK/nar.tsv" >/dev/null
NAR_URL=$(cut -f2 "$WORK/nar.tsv")
NAR_SIZE=$(cut -f3 "$WORK/nar.tsv")
# cached keeps the layout of `nix copy --to s3://`: the NAR's key is its URL.
PRESIGNED=$("$CLIENT" presign -endpoint "$GW" -bucket bucket -key "$NAR_URL" -access bench -secret bench-secret-key)

# A second server on the same bucket (a replica, its own index) answering NAR GETs with a 307 to
# a presigned URL: the client follows it to versitygw, so the bytes skip cached.
"$SERVER" serve --listen 127.0.0.1:0 --data "$WORK/data-redirect" --secret-key-file "$data/secret-key" \
	--backend s3 --s3-bucket bucket --s3-endpoint "$GW" --s3-region us-east-1 --s3-path-style \
	--s3-access-key bench --s3-secret-key bench-secret-key --nar-redirect presign >"$WORK/redirect.out" 2>"$WORK/redirect.log" &
PIDS+=("$!")
REDIRECT_URL=
for _ in $(seq 1 600); do
	REDIRECT_URL=$(sed -n 's/^cached is serving .* at \(http:[^ ]*\)$/\1/p' "$WORK/redirect.out" | head -n1)
	[ -n "$REDIRECT_URL" ] && break
	sleep 0.1
done
[ -n "$REDIRECT_URL" ] || die "cached --nar-redirect did not start: $(tail -n 5 "$WORK/redirect.log")"
"$CLIENT" narinfos -base "$REDIRECT_URL" -hashes "$WORK/hash" -out "$WORK/nar-redirect.tsv" >/dev/null

# A distant region: a proxy that adds LATENCY to every S3 request, a third replica behind it, and
# the baseline fetched through the same proxy.
LATENCY=${BENCH_S3_LATENCY:-20ms}
PROXY_PORT=$("$CLIENT" freeport)
PROXY=http://127.0.0.1:$PROXY_PORT
"$CLIENT" delayproxy -listen "127.0.0.1:$PROXY_PORT" -target "$GW" -delay "$LATENCY" >"$WORK/proxy.out" 2>&1 &
PIDS+=("$!")
for _ in $(seq 1 100); do
	(exec 3<>"/dev/tcp/127.0.0.1/$PROXY_PORT") 2>/dev/null && break
	sleep 0.1
done
"$SERVER" serve --listen 127.0.0.1:0 --data "$WORK/data-far" --secret-key-file "$data/secret-key" \
	--backend s3 --s3-bucket bucket --s3-endpoint "$PROXY" --s3-region us-east-1 --s3-path-style \
	--s3-access-key bench --s3-secret-key bench-secret-key >"$WORK/far.out" 2>"$WORK/far.log" &
PIDS+=("$!")
FAR_URL=
for _ in $(seq 1 600); do
	FAR_URL=$(sed -n 's/^cached is serving .* at \(http:[^ ]*\)$/\1/p' "$WORK/far.out" | head -n1)
	[ -n "$FAR_URL" ] && break
	sleep 0.1
done
[ -n "$FAR_URL" ] || die "cached behind the latency proxy did not start: $(tail -n 5 "$WORK/far.log")"
"$CLIENT" narinfos -base "$FAR_URL" -hashes "$WORK/hash" -out "$WORK/nar-far.tsv" >/dev/null
FAR_PRESIGNED=$("$CLIENT" presign -endpoint "$PROXY" -bucket bucket -key "$NAR_URL" -access bench -secret bench-secret-key)

vmhwm_kib() { awk '/^VmHWM:/ { print $2 }' "/proc/$1/status"; }
reset_hwm() { echo 5 >"/proc/$1/clear_refs"; }

gw_runs=() cached_runs=() redirect_runs=() far_gw_runs=() far_runs=()
for r in $(seq 1 "$REPEAT"); do
	gw_runs+=("$("$CLIENT" get -url "$PRESIGNED" | jq .seconds)")
	cached_runs+=("$("$CLIENT" get -url "$CACHED_URL/$NAR_URL" | jq .seconds)")
	redirect_runs+=("$("$CLIENT" get -url "$REDIRECT_URL/$NAR_URL" | jq .seconds)")
	far_gw_runs+=("$("$CLIENT" get -url "$FAR_PRESIGNED" | jq .seconds)")
	far_runs+=("$("$CLIENT" get -url "$FAR_URL/$NAR_URL" | jq .seconds)")
	log "round $r: versitygw ${gw_runs[-1]} s, cached ${cached_runs[-1]} s, cached --nar-redirect ${redirect_runs[-1]} s; +$LATENCY per S3 request: versitygw ${far_gw_runs[-1]} s, cached ${far_runs[-1]} s"
done
one_hwm=$(vmhwm_kib "$CACHED_PID")
median() { printf '%s\n' "$@" | sort -g | awk '{ a[NR] = $1 } END { print (NR % 2) ? a[(NR + 1) / 2] : (a[NR / 2] + a[NR / 2 + 1]) / 2 }'; }
gw_s=$(median "${gw_runs[@]}")
cached_s=$(median "${cached_runs[@]}")
redirect_s=$(median "${redirect_runs[@]}")
far_gw_s=$(median "${far_gw_runs[@]}")
far_s=$(median "${far_runs[@]}")

for _ in $(seq 1 "$CONC"); do printf '%s\t%s\t%s\n' "$HASH" "$NAR_URL" "$NAR_SIZE"; done >"$WORK/conc-cached.tsv"
for _ in $(seq 1 "$CONC"); do printf '%s\t%s\t%s\n' "$HASH" "${PRESIGNED#"$GW"/}" "$NAR_SIZE"; done >"$WORK/conc-gw.tsv"
gw_conc=$("$CLIENT" nars -base "$GW" -list "$WORK/conc-gw.tsv" -c "$CONC" | jq .seconds)
reset_hwm "$CACHED_PID"
cached_conc=$("$CLIENT" nars -base "$CACHED_URL" -list "$WORK/conc-cached.tsv" -c "$CONC" | jq .seconds)
conc_hwm=$(vmhwm_kib "$CACHED_PID")
log "$CONC concurrent: versitygw $gw_conc s, cached $cached_conc s, cached VmHWM $((conc_hwm / 1024)) MiB"

if [ "${BENCH_S3_PPROF:-0}" = 1 ]; then
	curl -sS -o "$OUT/s3-$TS.pprof" "http://127.0.0.1:$PPROF_PORT/debug/pprof/profile?seconds=6" &
	prof=$!
	"$CLIENT" get -url "$CACHED_URL/$NAR_URL" -repeat 3 >/dev/null
	wait "$prof"
	log "CPU profile: go tool pprof -top $SERVER $OUT/s3-$TS.pprof"
fi

jq -n --arg ts "$TS" --arg commit "$(git -C "$REPO" rev-parse HEAD)" --argjson size "$NAR_SIZE" \
	--argjson gw "$gw_s" --argjson cached "$cached_s" --argjson onehwm "$one_hwm" --argjson redirect "$redirect_s" \
	--arg latency "$LATENCY" --argjson fargw "$far_gw_s" --argjson far "$far_s" \
	--argjson conc "$CONC" --argjson gwconc "$gw_conc" --argjson cachedconc "$cached_conc" --argjson conchwm "$conc_hwm" \
	--arg gwruns "${gw_runs[*]}" --arg cachedruns "${cached_runs[*]}" '{
  timestamp: $ts, cached_commit: $commit, nar_bytes: $size,
  one: {versitygw_s: $gw, cached_s: $cached, ratio: ($gw / $cached), cached_peak_rss_kib: $onehwm,
        redirect_s: $redirect, redirect_ratio: ($gw / $redirect),
        versitygw_runs: ($gwruns | split(" ") | map(tonumber)), cached_runs: ($cachedruns | split(" ") | map(tonumber))},
  latency: {added_per_s3_request: $latency, versitygw_s: $fargw, cached_s: $far, ratio: ($fargw / $far)},
  concurrent: {streams: $conc, versitygw_s: $gwconc, cached_s: $cachedconc, ratio: ($gwconc / $cachedconc),
               cached_peak_rss_kib: $conchwm}
}' >"$OUT/s3-$TS.json"
[ -z "${BENCH_S3_RESULT:-}" ] || cp "$OUT/s3-$TS.json" "$BENCH_S3_RESULT"
printf '\nNAR of %.2f GiB: cached on S3 against the same object straight from versitygw (127.0.0.1)\n' "$(awk -v b="$NAR_SIZE" 'BEGIN { print b / 1073741824 }')"
printf '%-22s %12s %12s %8s %18s\n' row "versitygw s" "cached s" ratio "cached peak RSS"
awk -v g="$gw_s" -v c="$cached_s" -v h="$one_hwm" 'BEGIN { printf "%-22s %12.3f %12.3f %7.2fx %14.0f MiB\n", "1 client", g, c, g / c, h / 1024 }'
awk -v g="$gw_s" -v c="$redirect_s" 'BEGIN { printf "%-22s %12.3f %12.3f %7.2fx %18s\n", "1 client, redirect", g, c, g / c, "-" }'
awk -v g="$far_gw_s" -v c="$far_s" -v l="$LATENCY" 'BEGIN { printf "%-22s %12.3f %12.3f %7.2fx %18s\n", "1 client, S3 +" l, g, c, g / c, "-" }'
awk -v g="$gw_conc" -v c="$cached_conc" -v h="$conc_hwm" -v n="$CONC" 'BEGIN { printf "%-22s %12.3f %12.3f %7.2fx %14.0f MiB\n", n " concurrent clients", g, c, g / c, h / 1024 }'
echo "ratio: versitygw's time / cached's time (1.00x: as fast as the bucket itself)"
echo "results: $OUT/s3-$TS.json"
