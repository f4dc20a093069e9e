#!/usr/bin/env bash
# benches/scale.sh: mta-stsd with many tenants, one table of what grows with the tenant count.
#
# For each layout (bulk: files of 10 000 tenants; files: one file per tenant) and each tenant
# count, it starts the release binary as the README does (`serve --config config`, internal
# CA, everything on 127.0.0.1) and prints:
#   - seconds from exec to the "mta-stsd serving" log line, and until every certificate is
#     issued (GET /api/v1/tenants?ready=false reports none);
#   - VmRSS then, and KiB per tenant above the RSS of a daemon with no tenants;
#   - a one-tenant edit: the file rewritten (atomically, as editors and kubectl do), then the
#     policy fetched over HTTPS every 5 ms until the new body is served (median of 3);
#   - POST /reload with nothing changed, one /metrics scrape (default metrics.per_tenant), one
#     API page and one API search, one admin page (/ui/) and one that filters and ranks all;
# then, beside 10 small files: a 200 000-tenant file added, a small file edited 0.3 s later
# (how long the small edit waits while the big file is parsed), RSS before, with and 10 s
# after removing it, and the log size; and one scrape with metrics.per_tenant: all.
#
# Usage: benches/scale.sh [--tenants "10000 100000 1000000"] [--layouts "bulk files"]
#                         [--big-file N] [--scrape-all N] [--cached "N…"] [--no-build]
#   --tenants     tenant counts (default 10 000, 100 000 and 1 000 000)
#   --layouts     bulk and/or files (1 000 000 one-tenant files take ~4 GB of disk and a
#                 few minutes to write)
#   --big-file N  size of the big file (0 skips that part); --scrape-all N (0 skips)
#   --cached "N…" restarts with N stored ACME certificates (made with openssl, hard-linked;
#                 "" skips): seconds to serving, to the last host's first handshake, and
#                 until every stored certificate is read
#   MTA_STSD_BIN=path measures another binary (e.g. one built before a change)
#
# Needs python3 and a release build (made unless --no-build). Not a test: CI never runs it.
set -euo pipefail
REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
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
if [[ -z ${MTA_STSD_BIN:-} ]]; then
    ((build)) && (cd "$REPO" && cargo build --release --locked >&2)
    MTA_STSD_BIN=$REPO/target/release/mta-stsd
fi
exec python3 "$REPO/benches/scale.py" --bin "$MTA_STSD_BIN" "${args[@]}"
