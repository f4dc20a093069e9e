#!/usr/bin/env bash
# deploy/local-cluster/up.sh: a local three-replica mta-stsd cluster (README "Cluster mode").
#
# Starts a PostgreSQL server of its own (Debian's postgresql; in a new directory, on a free
# port of 127.0.0.1; as the postgres user when run as root, since PostgreSQL refuses root),
# creates the role mta_stsd (password in a file, never printed) owning the database mta_stsd,
# writes three configuration directories from config/ (the example tenants, the internal CA)
# with a `store: postgres:` section, and starts three replicas of the release binary:
#   HTTPS on 127.0.0.1, 127.0.0.2 and 127.0.0.3, one port (default 8443), and the admin API on
#   127.0.0.1:9181, 127.0.0.2:9182 and 127.0.0.3:9183 (loopback, no token).
# It waits until each answers and exactly one is the leader, then prints where they are.
# deploy/local-cluster/down.sh stops everything and removes the directory.
#
# The replicas share one internal CA (made by the first replica, copied to the others before
# they start), so clients trust one ca.crt whichever replica answers; no internet is needed.
# The tenants directory is shared too: an edit there reaches all three replicas.
#
# Usage: deploy/local-cluster/up.sh
# Environment:
#   MTA_STSD_CLUSTER_DIR   where everything lives (default ${TMPDIR:-/tmp}/mta-stsd-local-cluster)
#   MTA_STSD_CLUSTER_PORT  the HTTPS port of every replica (default 8443)
#   MTA_STSD_CLUSTER_ADMIN_PORTS  the admin ports, three (default "9181 9182 9183")
#   MTA_STSD_BIN           the binary (default: target/release/mta-stsd, built when missing)
#   MTA_STSD_CLUSTER_WAIT  seconds to wait for the replicas and the election (default 60)
# Needs python3 (to read the admin API) and PostgreSQL's server (apt-get install postgresql).
set -euo pipefail
REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
DIR=${MTA_STSD_CLUSTER_DIR:-${TMPDIR:-/tmp}/mta-stsd-local-cluster}
PORT=${MTA_STSD_CLUSTER_PORT:-8443}
read -r -a ADMIN_PORTS <<<"${MTA_STSD_CLUSTER_ADMIN_PORTS:-9181 9182 9183}"
WAIT=${MTA_STSD_CLUSTER_WAIT:-60}
REPLICAS=(1 2 3)

die() {
    echo "up.sh: $*" >&2
    # What was started stays, with its logs, until down.sh.
    [[ -f ${DIR:-}/binary ]] && echo "up.sh: logs in $DIR; deploy/local-cluster/down.sh stops and removes it" >&2
    exit 1
}
((${#ADMIN_PORTS[@]} == 3)) || die "MTA_STSD_CLUSTER_ADMIN_PORTS needs three ports"
[[ -e $DIR ]] && die "$DIR exists: the cluster is up (or was not taken down); run deploy/local-cluster/down.sh"

if [[ -z ${MTA_STSD_BIN:-} ]]; then
    MTA_STSD_BIN=${CARGO_TARGET_DIR:-$REPO/target}/release/mta-stsd
    [[ -x $MTA_STSD_BIN ]] || (cd "$REPO" && cargo build --release --locked >&2)
fi
[[ -x $MTA_STSD_BIN ]] || die "no binary at $MTA_STSD_BIN"
# down.sh recognises the replicas by this path.
MTA_STSD_BIN=$(realpath "$MTA_STSD_BIN")
PG_BIN=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -1)
[[ -n $PG_BIN && -x $PG_BIN/pg_ctl ]] || die "PostgreSQL's server is not installed (apt-get install postgresql)"

# Runs a PostgreSQL program as the owner of the data directory.
as_pg() {
    if ((EUID == 0)); then runuser -u postgres -- "$@"; else "$@"; fi
}

# Everything below goes into $DIR; on a failure it stays, logs included, until down.sh.
mkdir -p "$DIR"
chmod 0755 "$DIR"
if ((EUID == 0)) && ! runuser -u postgres -- test -x "$DIR"; then
    rmdir "$DIR"
    die "the postgres user cannot reach $DIR (a parent directory is private): set MTA_STSD_CLUSTER_DIR"
fi
trap 'echo "up.sh: failed; logs in $DIR; deploy/local-cluster/down.sh stops and removes it" >&2' ERR
echo "$MTA_STSD_BIN" >"$DIR/binary"

# PostgreSQL: password authentication over TCP, the socket (in the data directory's parent,
# owner-only) for the setup below.
PG=$DIR/postgres
mkdir -p "$PG"
((EUID == 0)) && chown postgres:postgres "$PG"
chmod 0700 "$PG"
PG_PORT=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
echo "$PG_PORT" >"$DIR/postgres.port"
as_pg "$PG_BIN/initdb" -D "$PG/data" -U postgres -E UTF8 --auth-local=trust \
    --auth-host=scram-sha-256 >"$DIR/initdb.log"
as_pg "$PG_BIN/pg_ctl" -D "$PG/data" -l "$PG/server.log" -w \
    -o "-p $PG_PORT -k $PG -c listen_addresses=127.0.0.1" start >/dev/null
PASSWORD=$(od -An -tx1 -N16 /dev/urandom | tr -d ' \n')
as_pg "$PG_BIN/psql" -h "$PG" -p "$PG_PORT" -U postgres -d postgres -q -v ON_ERROR_STOP=1 \
    -v password="$PASSWORD" >/dev/null <<'SQL'
CREATE ROLE mta_stsd LOGIN PASSWORD :'password';
CREATE DATABASE mta_stsd OWNER mta_stsd;
SQL
# store.postgres.url_file: the URL with its password, readable by this user only.
(umask 077 && echo "postgresql://mta_stsd:$PASSWORD@127.0.0.1:$PG_PORT/mta_stsd" >"$DIR/postgres-url")

# The tenants, shared; one configuration directory per replica.
cp -r "$REPO/config/tenants" "$DIR/tenants"
for n in "${REPLICAS[@]}"; do
    conf=$DIR/replica-$n
    mkdir -p "$conf"
    sed -e "s|^listen: .*|listen: \"127.0.0.$n:$PORT\"|" \
        -e "s|^  listen: \"127.0.0.1:9180\"|  listen: \"127.0.0.$n:${ADMIN_PORTS[n - 1]}\"|" \
        -e "s|^tenants_dir: .*|tenants_dir: $DIR/tenants|" \
        "$REPO/config/mta-stsd.yaml" >"$conf/mta-stsd.yaml"
    grep -q "^listen: \"127.0.0.$n:$PORT\"" "$conf/mta-stsd.yaml" &&
        grep -q "127.0.0.$n:${ADMIN_PORTS[n - 1]}" "$conf/mta-stsd.yaml" ||
        die "config/mta-stsd.yaml no longer has the listen lines this script rewrites"
    cat >>"$conf/mta-stsd.yaml" <<YAML

# Cluster mode (written by deploy/local-cluster/up.sh).
store:
  postgres:
    url_file: $DIR/postgres-url
    replica_name: "\${MTA_STSD_REPLICA}"
YAML
done

# Starts replica n in the background; its pid in replica-n/pid, its log in replica-n/log.
start() {
    local n=$1
    MTA_STSD_REPLICA=replica-$n nohup "$MTA_STSD_BIN" serve --config "$DIR/replica-$n" \
        >"$DIR/replica-$n/log" 2>&1 </dev/null &
    echo $! >"$DIR/replica-$n/pid"
}

# Waits until replica n's admin API answers /healthz.
wait_healthy() {
    local n=$1 deadline=$((SECONDS + WAIT))
    until "$MTA_STSD_BIN" health --probe live --timeout 1s \
        --admin "http://127.0.0.$n:${ADMIN_PORTS[n - 1]}" >/dev/null 2>&1; do
        kill -0 "$(cat "$DIR/replica-$n/pid")" 2>/dev/null ||
            die "replica-$n exited; its log: $DIR/replica-$n/log"$'\n'"$(tail -20 "$DIR/replica-$n/log")"
        ((SECONDS < deadline)) || die "replica-$n does not answer; its log: $DIR/replica-$n/log"
        sleep 0.2
    done
}

# The first replica makes the internal CA; the others start with a copy of it.
start 1
wait_healthy 1
for n in 2 3; do
    mkdir -p "$DIR/replica-$n/state"
    chmod 0700 "$DIR/replica-$n/state"
    cp -a "$DIR/replica-1/state/ca" "$DIR/replica-$n/state/ca"
    start "$n"
done
wait_healthy 2
wait_healthy 3
cp "$DIR/replica-1/state/ca/ca.crt" "$DIR/ca.crt"

# Each replica's role from /api/v1/status, until exactly one says leader.
roles() {
    python3 - "${ADMIN_PORTS[@]}" <<'PY'
import json, sys, urllib.request
for n, port in enumerate(sys.argv[1:], 1):
    try:
        with urllib.request.urlopen(f"http://127.0.0.{n}:{port}/api/v1/status", timeout=2) as r:
            cluster = json.load(r).get("cluster") or {}
    except OSError as e:
        cluster = {"role": f"unreachable ({e})"}
    print(f"replica-{n} {cluster.get('replica', '?')} {cluster.get('role', 'none')}")
PY
}
deadline=$((SECONDS + WAIT))
while :; do
    table=$(roles)
    leaders=$(grep -c ' leader$' <<<"$table" || true)
    ((leaders == 1)) && break
    ((SECONDS < deadline)) || die "no single leader after ${WAIT}s:"$'\n'"$table"
    sleep 0.5
done
leader=$(awk '$3 == "leader" { print $2 }' <<<"$table")
echo "$leader" >"$DIR/leader"
trap - ERR

cat <<TEXT
mta-stsd cluster up in $DIR ($MTA_STSD_BIN)
  PostgreSQL   127.0.0.1:$PG_PORT, database mta_stsd, role mta_stsd (URL in $DIR/postgres-url)
TEXT
for n in "${REPLICAS[@]}"; do
    role=$(awk -v r="replica-$n" '$1 == r { print $3 }' <<<"$table")
    printf '  replica-%s    https://127.0.0.%s:%s  admin http://127.0.0.%s:%s  %s  (log %s)\n' \
        "$n" "$n" "$PORT" "$n" "${ADMIN_PORTS[n - 1]}" "$role" "$DIR/replica-$n/log"
done
cat <<TEXT
  leader       $leader
Try:
  curl --cacert $DIR/ca.crt --resolve mta-sts.example.net:$PORT:127.0.0.2 https://mta-sts.example.net:$PORT/.well-known/mta-sts.txt
  curl -s http://127.0.0.3:${ADMIN_PORTS[2]}/api/v1/status
Tenants: $DIR/tenants (shared by the three). Stop: deploy/local-cluster/down.sh
TEXT
