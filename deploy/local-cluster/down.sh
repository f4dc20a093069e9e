#!/usr/bin/env bash
# deploy/local-cluster/down.sh: stops the cluster deploy/local-cluster/up.sh started (each
# replica with SIGTERM, a graceful drain, SIGKILL after 20 s; then PostgreSQL) and removes its
# directory. MTA_STSD_CLUSTER_DIR as for up.sh. Does nothing when no cluster is up.
set -euo pipefail
DIR=${MTA_STSD_CLUSTER_DIR:-${TMPDIR:-/tmp}/mta-stsd-local-cluster}
if [[ ! -d $DIR ]]; then
    echo "down.sh: no cluster in $DIR"
    exit 0
fi
[[ -f $DIR/binary ]] || { echo "down.sh: $DIR was not made by up.sh; not touching it" >&2; exit 1; }

pids=()
for pidfile in "$DIR"/replica-*/pid; do
    [[ -f $pidfile ]] || continue
    pid=$(cat "$pidfile")
    # Only the process up.sh started: same pid and still our binary.
    if kill -0 "$pid" 2>/dev/null && [[ $(readlink "/proc/$pid/exe" 2>/dev/null) == "$(cat "$DIR/binary")"* ]]; then
        kill -TERM "$pid"
        pids+=("$pid")
    fi
done
deadline=$((SECONDS + 20))
for pid in "${pids[@]}"; do
    while kill -0 "$pid" 2>/dev/null; do
        if ((SECONDS >= deadline)); then
            kill -KILL "$pid" 2>/dev/null || true
            break
        fi
        sleep 0.1
    done
done

PG_BIN=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -1)
if [[ -f $DIR/postgres/data/postmaster.pid && -n $PG_BIN ]]; then
    if ((EUID == 0)); then
        runuser -u postgres -- "$PG_BIN/pg_ctl" -D "$DIR/postgres/data" -m fast -w stop >/dev/null
    else
        "$PG_BIN/pg_ctl" -D "$DIR/postgres/data" -m fast -w stop >/dev/null
    fi
fi
rm -rf "$DIR"
echo "mta-stsd cluster in $DIR stopped and removed"
