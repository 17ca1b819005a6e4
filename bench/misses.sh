#!/usr/bin/env bash
# bench/misses.sh — narinfo misses on an S3 replica, with a proxy adding BENCH_MISS_LATENCY (20ms)
# to every S3 request (a real region's latency), in one run: a replica that asks the bucket on
# every miss (--journal-interval 0, what replicas did before the journal: the baseline) against
# one that follows the replicas' journal (the default). Both on one versitygw bucket (posix
# backend, 127.0.0.1), each behind its own delaying proxy, which logs every request so that the
# S3 requests per 1,000 misses are counted, not estimated.
#
# A third cached on the disk backend, where a miss never leaves the index, is the floor. wrk with
# BENCH_MISS_CONNS (64) connections, then with 1, asks each server, alternating, BENCH_REPEAT (3)
# times for BENCH_MISS_SECONDS (10) s, for hashes from a list of BENCH_MISS_HASHES (200000) random ones,
# so that the baseline's negative cache (one bucket request per hash per --negative-ttl) hardly
# helps it: a substituter's misses are mostly for different paths. Both servers run with
# --access-log none. Prints a table and writes bench/out/misses-<timestamp>.json.
#
#   bench/misses.sh              BENCH_KEEP=1 keeps the work dir
set -euo pipefail

BENCH_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
OUT=${BENCH_OUT:-$BENCH_DIR/out}
REPEAT=${BENCH_REPEAT:-3}
CONNS=${BENCH_MISS_CONNS:-64}
SECONDS_PER_RUN=${BENCH_MISS_SECONDS:-10}
NHASHES=${BENCH_MISS_HASHES:-200000}
LATENCY=${BENCH_MISS_LATENCY:-20ms}
KEEP=${BENCH_KEEP:-0}
TS=$(date -u +%Y%m%dT%H%M%SZ)
WORK=$OUT/misses-$TS
LOG_TAG=misses
# shellcheck source=bench/lib.sh
. "$BENCH_DIR/lib.sh"

missing=()
command -v wrk >/dev/null || missing+=(wrk)
command -v jq >/dev/null || missing+=(jq)
if [ ${#missing[@]} -gt 0 ]; then apt_install "${missing[@]}"; fi
export PATH="$(go env GOPATH)/bin:$PATH"
if ! command -v versitygw >/dev/null; then
	log "installing versitygw"
	go install github.com/versity/versitygw/cmd/versitygw@v1.8.0
fi

mkdir -p "$WORK"
build_bins

wait_port() {
	for _ in $(seq 1 100); do
		(exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return 0
		sleep 0.1
	done
	die "nothing listens on port $1"
}

port=$("$CLIENT" freeport)
GW=http://127.0.0.1:$port
mkdir -p "$WORK/s3/bucket"
versitygw --access bench --secret bench-secret-key --port "127.0.0.1:$port" --quiet posix "$WORK/s3" >"$WORK/versitygw.log" 2>&1 &
PIDS+=("$!")
wait_port "$port"

"$SERVER" keygen bench-1 --secret-key-file "$WORK/secret-key" --public-key-file "$WORK/public-key" >/dev/null

# start_replica NAME JOURNAL-INTERVAL: a delaying proxy and a cached behind it; sets URL_<NAME>.
# JOURNAL-INTERVAL "disk": a cached on the disk backend instead, no proxy (the floor: a miss
# answered from the index, nothing else).
start_replica() {
	local name=$1 interval=$2 pport url= backend
	if [ "$interval" = disk ]; then
		: >"$WORK/proxy-$name.log"
		backend=(--backend disk)
	else
		pport=$("$CLIENT" freeport)
		"$CLIENT" delayproxy -listen "127.0.0.1:$pport" -target "$GW" -delay "$LATENCY" -log >"$WORK/proxy-$name.log" 2>&1 &
		PIDS+=("$!")
		wait_port "$pport"
		backend=(--backend s3 --s3-bucket bucket --s3-endpoint "http://127.0.0.1:$pport" --s3-region us-east-1 --s3-path-style
			--s3-access-key bench --s3-secret-key bench-secret-key --journal-interval "$interval")
	fi
	"$SERVER" serve --listen 127.0.0.1:0 --data "$WORK/data-$name" --secret-key-file "$WORK/secret-key" \
		"${backend[@]}" --access-log none >"$WORK/$name.out" 2>"$WORK/$name.log" &
	local pid=$!
	PIDS+=("$pid")
	for _ in $(seq 1 600); do
		url=$(sed -n 's/^cached is serving .* at \(http:[^ ]*\)$/\1/p' "$WORK/$name.out" | head -n1)
		[ -n "$url" ] && break
		kill -0 "$pid" 2>/dev/null || die "cached ($name) exited at start: $(tail -n 5 "$WORK/$name.log")"
		sleep 0.1
	done
	[ -n "$url" ] || die "cached ($name) did not start"
	printf -v "URL_$name" '%s' "$url"
}
start_replica permiss 0
start_replica journal 1s
start_replica disk disk
log "per-miss replica at $URL_permiss, journal replica at $URL_journal, +$LATENCY per S3 request; disk backend at $URL_disk"

log "generating $NHASHES random store hashes"
awk -v n="$NHASHES" 'BEGIN {
	a = "0123456789abcdfghijklmnpqrsvwxyz"; srand()
	for (i = 0; i < n; i++) { h = ""; for (j = 0; j < 32; j++) h = h substr(a, int(rand() * 32) + 1, 1); print "/" h ".narinfo" }
}' >"$WORK/miss-paths.txt"

# The journal replica answers misses from its index once its first poll succeeded.
sleep 3
grep -q "following the replicas' journal" "$WORK/journal.log" || die "the journal replica does not follow the journal: $(tail -n 5 "$WORK/journal.log")"

requests() { wc -l <"$WORK/proxy-$1.log"; }
# hist URL: cached's own histogram of GET /{file} (narinfo) durations, "le count" per line: the
# time from receiving a request to the end of its answer, without the client's and the
# scheduler's share of the machine. Counts past a million come as 1.234567e+06.
hist() { curl -fsS "$1/metrics" | sed -n 's/^cached_http_request_duration_seconds_bucket{method="GET",route="\/{file}",le="\([^"]*\)"} \([0-9.e+]*\)$/\1 \2/p'; }
# hist_p99 BEFORE AFTER: the upper bound (ms) of the bucket holding the 99th percentile of what
# was answered in between, and the share answered within 1 ms.
hist_p99() {
	paste -d' ' "$1" "$2" | awk '{ le[NR] = $1; d[NR] = $4 - $2 } END {
		n = d[NR]; p99 = "inf"; within1 = 0
		for (i = 1; i <= NR; i++) {
			if (le[i] == "0.001") within1 = (n > 0) ? d[i] / n : 0
			if (p99 == "inf" && n > 0 && d[i] >= 0.99 * n) p99 = le[i] * 1000
		}
		printf "{\"server_p99_le_ms\": %s, \"server_within_1ms\": %.5f}\n", (p99 == "inf" ? "null" : p99), within1 }'
}
run() { # name round connections
	local name=$1 r=$2 conns=$3 url before after out f threads=2
	[ "$conns" -gt 1 ] || threads=1
	url=URL_$name
	url=${!url}
	before=$(requests "$name")
	hist "$url" >"$WORK/hist-before"
	out=$(wrk -t"$threads" -c"$conns" -d"${SECONDS_PER_RUN}s" --timeout 5s -s "$BENCH_DIR/narinfo.lua" "$url" -- "$WORK/miss-paths.txt")
	after=$(requests "$name")
	hist "$url" >"$WORK/hist-after"
	[ "$(wc -l <"$WORK/hist-after")" -ge 20 ] || die "cached ($name) /metrics has no narinfo histogram: $(cat "$WORK/hist-after")"
	f=$WORK/$name-c$conns-$r.json
	printf '%s\n' "$out" | grep '^{' | tail -n1 | jq --argjson s3 "$((after - before))" --argjson h "$(hist_p99 "$WORK/hist-before" "$WORK/hist-after")" \
		'. + {s3_requests: $s3} + $h' >"$f"
	[ "$(jq '.requests - .errors_status' "$f")" -eq 0 ] || die "$name answered 200 to narinfo misses: $(cat "$f")"
	log "round $r $name, $conns connections: $(jq -r '"\(.requests) misses, \(.req_per_sec | floor)/s, p50 \(.p50_us / 1000) ms, p99 \(.p99_us / 1000) ms (in cached: p99 <= \(.server_p99_le_ms) ms, \(.server_within_1ms * 100) % within 1 ms), \(.s3_requests) S3 requests"' "$f")"
}
for name in permiss journal disk; do # warm-up: connections, Go's scheduler, Badger's caches
	url=URL_$name
	wrk -t2 -c"$CONNS" -d2s -s "$BENCH_DIR/narinfo.lua" "${!url}" -- "$WORK/miss-paths.txt" >/dev/null
done
for r in $(seq 1 "$REPEAT"); do
	for c in "$CONNS" 1; do
		for name in permiss journal disk; do run "$name" "$r" "$c"; done
	done
done

median() { # jq-expr files...
	local e=$1
	shift
	for f in "$@"; do jq "$e" "$f"; done | sort -g | awk '{ a[NR] = $1 } END { print (NR % 2) ? a[(NR + 1) / 2] : (a[NR / 2] + a[NR / 2 + 1]) / 2 }'
}
summary() { # name connections
	local fs=("$WORK"/$1-c$2-*.json)
	jq -n --argjson rps "$(median .req_per_sec "${fs[@]}")" --argjson p50 "$(median '.p50_us / 1000' "${fs[@]}")" \
		--argjson p99 "$(median '.p99_us / 1000' "${fs[@]}")" \
		--argjson per1000 "$(median '.s3_requests * 1000 / .requests' "${fs[@]}")" \
		--argjson sp99 "$(median '.server_p99_le_ms // 1e9' "${fs[@]}")" --argjson w1 "$(median .server_within_1ms "${fs[@]}")" \
		'{req_per_sec: $rps, p50_ms: $p50, p99_ms: $p99, s3_requests_per_1000_misses: $per1000,
		  server_p99_le_ms: $sp99, server_within_1ms: $w1}'
}
mkdir -p "$OUT"
RESULT=$OUT/misses-$TS.json
jq -n --arg commit "$(git -C "$REPO" rev-parse --short HEAD)" --arg latency "$LATENCY" --argjson conns "$CONNS" \
	--argjson seconds "$SECONDS_PER_RUN" --argjson repeat "$REPEAT" --argjson hashes "$NHASHES" \
	--argjson permiss "$(summary permiss "$CONNS")" --argjson journal "$(summary journal "$CONNS")" --argjson disk "$(summary disk "$CONNS")" \
	--argjson permiss1 "$(summary permiss 1)" --argjson journal1 "$(summary journal 1)" --argjson disk1 "$(summary disk 1)" \
	--argjson runs "$(jq -s . "$WORK"/permiss-*.json "$WORK"/journal-*.json "$WORK"/disk-*.json)" \
	'{commit: $commit, s3_latency: $latency, conns: $conns, seconds: $seconds, repeat: $repeat, hashes: $hashes,
	  per_miss: $permiss, journal: $journal, disk: $disk, per_miss_1: $permiss1, journal_1: $journal1, disk_1: $disk1, runs: $runs}' >"$RESULT"
printf '\nnarinfo misses on an S3 replica, +%s per S3 request (median of %d runs of %ss; ratio: per-miss / journal)\n' "$LATENCY" "$REPEAT" "$SECONDS_PER_RUN"
printf '| row | per-miss check | journal | ratio | disk backend |\n| --- | ---: | ---: | ---: | ---: |\n'
jq -r --arg c "$CONNS" '
	def r(x): (x * 1000 | round) / 1000;
	"| misses/s, \($c) connections | \(r(.per_miss.req_per_sec)) | \(r(.journal.req_per_sec)) | \(r(.journal.req_per_sec / .per_miss.req_per_sec)) | \(r(.disk.req_per_sec)) |",
	"| p50 / p99 (ms), \($c) connections | \(r(.per_miss.p50_ms)) / \(r(.per_miss.p99_ms)) | \(r(.journal.p50_ms)) / \(r(.journal.p99_ms)) | \(r(.per_miss.p50_ms / .journal.p50_ms)) / \(r(.per_miss.p99_ms / .journal.p99_ms)) | \(r(.disk.p50_ms)) / \(r(.disk.p99_ms)) |",
	"| p50 / p99 (ms), 1 connection | \(r(.per_miss_1.p50_ms)) / \(r(.per_miss_1.p99_ms)) | \(r(.journal_1.p50_ms)) / \(r(.journal_1.p99_ms)) | \(r(.per_miss_1.p50_ms / .journal_1.p50_ms)) / \(r(.per_miss_1.p99_ms / .journal_1.p99_ms)) | \(r(.disk_1.p50_ms)) / \(r(.disk_1.p99_ms)) |",
	"| in cached: p99 within (ms), \($c) connections | \(.per_miss.server_p99_le_ms) | \(.journal.server_p99_le_ms) | | \(.disk.server_p99_le_ms) |",
	"| in cached: share within 1 ms, \($c) connections | \(r(.per_miss.server_within_1ms * 100)) % | \(r(.journal.server_within_1ms * 100)) % | | \(r(.disk.server_within_1ms * 100)) % |",
	"| in cached: p99 within (ms), 1 connection | \(.per_miss_1.server_p99_le_ms) | \(.journal_1.server_p99_le_ms) | | \(.disk_1.server_p99_le_ms) |",
	"| S3 requests per 1,000 misses, \($c) connections | \(r(.per_miss.s3_requests_per_1000_misses)) | \(r(.journal.s3_requests_per_1000_misses)) | | — |",
	"| S3 requests per 1,000 misses, 1 connection | \(r(.per_miss_1.s3_requests_per_1000_misses)) | \(r(.journal_1.s3_requests_per_1000_misses)) | | — |"' "$RESULT"
log "results: $RESULT"
