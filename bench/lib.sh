# bench/lib.sh — what the bench scripts share: logging, the processes they start (stopped on
# exit), building the binaries, and nix without a daemon. Sourced, not run. The sourcing script
# sets LOG_TAG, WORK, OUT and KEEP first.

BENCH_DIR=${BENCH_DIR:-$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)}
REPO=$(dirname "$BENCH_DIR")
BIN=$OUT/bin
# cached is built under a name without "cached" in it, and its data directories too, so that
# other jobs on the machine cleaning up their own servers with `pkill cached` or `killall cached`
# do not stop ours mid-run (it happened).
SERVER=$BIN/nixcache-bench
CLIENT=$BIN/client

log() { printf '[%s %s] %s\n' "$LOG_TAG" "$(date +%T)" "$*" >&2; }
die() {
	log "ERROR: $*"
	exit "${DIE_CODE:-1}"
}
now() { date +%s.%N; }
since() { awk -v a="$1" -v b="$(now)" 'BEGIN { printf "%.3f", b - a }'; }

# Every process a script starts goes into PIDS and is stopped on exit; the work directory goes
# too unless KEEP=1.
PIDS=()
bench_cleanup() {
	local rc=$?
	set +e
	for pid in "${PIDS[@]}"; do kill -TERM "$pid" 2>/dev/null; done
	for pid in "${PIDS[@]}"; do
		for _ in $(seq 1 300); do
			kill -0 "$pid" 2>/dev/null || break
			sleep 0.1
		done
		kill -KILL "$pid" 2>/dev/null
	done
	unmount_all
	if [ "$KEEP" != 1 ] && [ -d "$WORK" ]; then
		chmod -R u+w "$WORK" 2>/dev/null
		rm -rf "$WORK"
	elif [ -d "$WORK" ]; then
		log "work directory kept: $WORK"
	fi
	exit $rc
}
trap bench_cleanup EXIT
trap 'exit 130' INT TERM

# bind_mount DIR TARGET: makes DIR visible at TARGET (in a chroot) until unmount_all, which also
# removes the directories made for the mount point, deepest first, when empty.
MOUNTS=()
MADE_DIRS=()
bind_mount() {
	local p=$2
	while [ ! -e "$p" ]; do
		MADE_DIRS+=("$p")
		p=$(dirname "$p")
	done
	mkdir -p "$2"
	mount --bind "$1" "$2" || die "mount --bind $1 $2 failed"
	MOUNTS+=("$2")
}
unmount_all() {
	local m d
	for m in "${MOUNTS[@]}"; do
		umount "$m" 2>/dev/null || umount -l "$m" || log "could not unmount $m"
	done
	MOUNTS=()
	for d in "${MADE_DIRS[@]}"; do rmdir "$d" 2>/dev/null; done
	MADE_DIRS=()
}

stop_pid() { # pid: SIGTERM, wait (bounded), then SIGKILL
	local pid=$1 p kept=()
	kill -TERM "$pid" 2>/dev/null || return 0
	for _ in $(seq 1 900); do
		kill -0 "$pid" 2>/dev/null || break
		sleep 0.1
	done
	kill -KILL "$pid" 2>/dev/null || true
	wait "$pid" 2>/dev/null || true
	for p in "${PIDS[@]}"; do [ "$p" = "$pid" ] || kept+=("$p"); done
	PIDS=("${kept[@]}")
}

apt_install() { # package...
	log "installing $* with apt-get"
	export DEBIAN_FRONTEND=noninteractive
	apt-get update -qq >/dev/null || true
	apt-get install -y -qq "$@" >/dev/null
}

build_bins() { # cached as $SERVER, bench/client as $CLIENT
	mkdir -p "$BIN"
	export GOFLAGS="${GOFLAGS:+$GOFLAGS }-mod=mod"
	log "building cached and the bench client"
	(cd "$REPO" && go build -o "$SERVER" ./cmd/cached && go build -o "$CLIENT" ./bench/client)
}

# nix_env: nix without a daemon, as internal/e2e drives it, with a netrc ($NETRC, empty until
# the caller writes the upload token into it) and no narinfo caching between commands.
nix_env() {
	NETRC=$WORK/netrc
	: >"$NETRC"
	chmod 600 "$NETRC"
	export NIX_CONFIG="experimental-features = nix-command
build-users-group =
sandbox = false
substituters =
netrc-file = $NETRC
narinfo-cache-negative-ttl = 0
narinfo-cache-positive-ttl = 0
connect-timeout = 10"
	# Nix 2.8 keeps its narinfo cache under $XDG_CACHE_HOME/nix; newer ones read NIX_USER_CACHE_DIR.
	export NIX_USER_CACHE_DIR=$WORK/nix-user-cache XDG_CACHE_HOME=$WORK/xdg-cache
}
