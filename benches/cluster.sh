#!/usr/bin/env bash
# benches/cluster.sh: cluster mode's figures, against a PostgreSQL server it starts itself
# (Debian's postgresql, in a temporary directory, durable settings; as the postgres user when
# run as root):
#   intake       reports/s stored through PgReportStore and through the SQLite store, the
#                same reports, with 1 and 8 threads (--reports, --threads)
#   size         rows and pg_total_relation_size per table for 10 000 tenants: a certificate
#                (leaf + intermediate) and status each, and a month of reports from two
#                organizations a day (--size-tenants, --size-days, --size-orgs)
#   startup      a replica started with 100 000 certificates in PostgreSQL (--certs; one key
#                and chain saved through PgCertStore and copied to every host by SQL): seconds
#                to serving, to the last host's first handshake and until all are read, RSS;
#                first the leader, then a second replica beside it
#   propagation  three replicas; a new certificate saved through PgCertStore (the leader's
#                save: its transaction sends the notification), then ms until each replica
#                presents it in a TLS handshake (--rounds)
# Usage: benches/cluster.sh [--parts "intake size startup propagation"] [--certs N]
#                           [--reports N] [--threads "1 8"] [--rounds N] [--no-build]
#   MTA_STSD_BIN=path measures another daemon binary
# Needs python3 and PostgreSQL's server. Not a test: CI never runs it.
set -euo pipefail
REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
TARGET=${CARGO_TARGET_DIR:-$REPO/target}
build=1
args=()
while (($#)); do
    case "$1" in
    --no-build) build=0 ;;
    -h | --help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
    *) args+=("$1") ;;
    esac
    shift
done
if ((build)); then
    (cd "$REPO" && cargo build --release --locked >&2)
fi
# The bench binary: cargo names it target/release/deps/cluster-<hash>; ask cargo which.
bench_bin=$(cd "$REPO" && cargo bench --locked --bench cluster --no-run --message-format=json 2>/dev/null |
    python3 -c 'import json, sys
for line in sys.stdin:
    m = json.loads(line)
    if m.get("reason") == "compiler-artifact" and m["target"]["name"] == "cluster" and m.get("executable"):
        print(m["executable"])')
[[ -x $bench_bin ]] || { echo "cluster.sh: could not build the bench binary" >&2; exit 1; }
exec python3 "$REPO/benches/cluster.py" --bin "${MTA_STSD_BIN:-$TARGET/release/mta-stsd}" \
    --bench-bin "$bench_bin" "${args[@]}"
