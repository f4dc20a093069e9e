#!/usr/bin/env bash
# benches/soak.sh: the real mta-stsd under mixed load for a fixed time, with a kill -9 and
# restart in the middle; prints one table and exits non-zero when any check fails.
#
# Usage: benches/soak.sh [DURATION] [--bulk N] [--single N] [--default-malloc] [--no-build] [--keep]
#   DURATION      90s, 5m, 30m, 1h or plain seconds (default 30m); the kill -9 is at half time
#   --bulk N      bulk tenant files of 500 tenants each, the last one the "large" file (default 4)
#   --single N    one-tenant files (default 1200); default total 3 200 tenants
#   --default-malloc  run the daemon with glibc's malloc defaults (the soak sets
#                 MALLOC_ARENA_MAX=2 MALLOC_MMAP_THRESHOLD_=131072 so that VmRSS follows the heap)
#   --no-build    use the binaries already built (MTA_STSD_BIN, SOAK_BIN or the target dir)
#   --keep        keep the work directory (config, state, daemon logs, final metrics)
#   MTA_STSD_BIN=path soaks another mta-stsd binary; SOAK_BIN=path another driver binary
#
# Load, all at once, sized to leave the 2-core machine's server side unsaturated:
#   - policy fetches: 6 HTTP/1.1 keep-alive connections (a request every 20 ms), 3 h2 ones
#     (4 streams every 40 ms), 4 + 2 workers with one new connection per fetch (HTTP/1.1, h2,
#     alternately with and without TLS session resumption); a keep-alive connection serves one
#     random tenant for 20-220 requests. Every answer must be 200 with the expected body;
#   - tenant file churn every 1.5 s: edits (new mode/MX/max_age, so a new id), bulk edits, the
#     large file switched between 1 and 42 MX patterns per tenant, broken files (bad YAML,
#     unknown keys; their tenants must keep their last good policy), rewrites without a change,
#     SIGHUP, POST /reload;
#   - connection floods (max_connections + 64 at once: silent TCP, idle TLS, half a
#     ClientHello) and 64 slowloris clients (request heads or ClientHellos a byte at a time);
#   - TLS-RPT posts from 64 loopback addresses: new reports, reformatted duplicates, bad JSON,
#     a report naming another domain, an unknown tenant, oversized bodies, gzip bombs, a wrong
#     media type; mailed reports through `mta-stsd ingest-mail` (signed, duplicate, unsigned,
#     unknown domain);
#   - kill -9 of the daemon at half time and a restart on the same ports and state.
# Checks: see docs/benchmark.md ("Soak"). Everything listens on 127.0.0.1 only; the daemon
# and the driver are killed when this script exits, however it exits.
#
# Needs: cargo, python3 (its sqlite3 module checks the database). Not a test: never in CI.
set -euo pipefail

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
DURATION=30m
BUILD=1
KEEP=0
EXTRA=()

while (($#)); do
    case "$1" in
    --bulk | --single) EXTRA+=("$1" "$2"); shift ;;
    --default-malloc) EXTRA+=("$1") ;;
    --no-build) BUILD=0 ;;
    --keep) KEEP=1 ;;
    -h | --help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
    -*) echo "unknown option $1 (see --help)" >&2; exit 2 ;;
    *) DURATION=$1 ;;
    esac
    shift
done

die() { echo "soak.sh: $*" >&2; exit 1; }
note() { echo "# $*" >&2; }

case $DURATION in
*h) SECS=$((${DURATION%h} * 3600)) ;;
*m) SECS=$((${DURATION%m} * 60)) ;;
*s) SECS=${DURATION%s} ;;
*) SECS=$DURATION ;;
esac
[[ $SECS =~ ^[0-9]+$ ]] && ((SECS >= 30)) || die "duration must be at least 30s (got $DURATION)"
command -v python3 >/dev/null || die "python3 is missing"

TARGET_DIR=${CARGO_TARGET_DIR:-$REPO/target}
if ((BUILD)); then
    note "cargo build --release; cargo bench --bench soak --no-run"
    (cd "$REPO" && cargo build --release --locked --quiet)
    DRIVER=$(cd "$REPO" && cargo bench --locked --bench soak --no-run --message-format=json 2>/dev/null |
        python3 -c 'import json, sys
for line in sys.stdin:
    m = json.loads(line)
    if m.get("reason") == "compiler-artifact" and m["target"]["name"] == "soak" and m.get("executable"):
        print(m["executable"])')
fi
BIN=${MTA_STSD_BIN:-$TARGET_DIR/release/mta-stsd}
DRIVER=${SOAK_BIN:-${DRIVER:-}}
if [[ -z $DRIVER ]]; then
    DRIVER=$(ls -t "$TARGET_DIR"/release/deps/soak-* 2>/dev/null | grep -v '\.d$' | head -1 || true)
fi
[[ -x $BIN ]] || die "$BIN not found (cargo build --release)"
[[ -n $DRIVER && -x $DRIVER ]] || die "the soak driver is not built (cargo bench --bench soak --no-run)"

WORK=$(mktemp -d "${TMPDIR:-/tmp}/mta-stsd-soak.XXXXXX")
DRIVER_PID=
cleanup() {
    local pid
    [[ -n $DRIVER_PID ]] && kill "$DRIVER_PID" 2>/dev/null || true
    if [[ -f $WORK/daemon.pid ]]; then
        pid=$(cat "$WORK/daemon.pid")
        kill -9 "$pid" 2>/dev/null || true
    fi
    [[ -n $DRIVER_PID ]] && wait "$DRIVER_PID" 2>/dev/null || true
    if ((KEEP)); then note "work directory kept: $WORK"; else rm -rf "$WORK"; fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# Floods and slowloris need a few hundred descriptors beyond the usual on both sides.
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true

note "soaking $BIN for ${SECS}s (driver $DRIVER, work dir $WORK)"
"$DRIVER" --bin "$BIN" --work "$WORK" --duration "$SECS" "${EXTRA[@]}" &
DRIVER_PID=$!
set +e
wait "$DRIVER_PID"
STATUS=$?
set -e
DRIVER_PID=
exit "$STATUS"
