#!/usr/bin/env bash
# One-tenant edit served time and the delay a 200 000-tenant file being added imposes on
# another file's change, against the real release binary (internal CA, watcher on).
#
#   bash benches/reload-live.sh [BINARY] [TENANTS...]      (default: target/release/mta-stsd 10000 100000)
#   env: PORT, APORT (listeners), BIG (tenants of the big file), EDIT_AFTER (seconds after it)
#
# Tenants are in bulk files of 1 000. An edit rewrites one file (write to a temporary name,
# rename over) changing one tenant's mode; the time is from the rename to the first HTTPS
# fetch that returns the new body (curl against the daemon's CA, polled every ~10 ms).
# Prints figures; asserts nothing about time.
set -euo pipefail
BIN=${1:-target/release/mta-stsd}
shift || true
SIZES=("$@")
[ ${#SIZES[@]} -gt 0 ] || SIZES=(10000 100000)
BIN=$(realpath "$BIN")
PORT=${PORT:-18443}
APORT=${APORT:-19180}
PER_FILE=1000
BIG=${BIG:-200000}

now() { date +%s.%N; }
ms_since() { python3 -c "import sys; print(f'{(float(sys.argv[2])-float(sys.argv[1]))*1000:.0f}')" "$1" "$(now)"; }

bulk() { # bulk FILE FIRST COUNT CHANGED_INDEX CHANGED_MODE [PREFIX]
  python3 - "$@" <<'PY'
import sys
path, first, count, changed, mode = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]), sys.argv[5]
prefix = sys.argv[6] if len(sys.argv) > 6 else "t"
with open(path + ".tmp", "w") as f:
    for i in range(first, first + count):
        m = mode if i == changed else "testing"
        f.write(f"- {{domain: {prefix}{i}.example, mode: {m}, mx: [mx.{prefix}{i}.example], max_age: 604800}}\n")
import os; os.rename(path + ".tmp", path)
PY
}

fetch() { # fetch DOMAIN -> body
  curl -s --max-time 2 --cacert "$CFG/state/ca/ca.crt" --resolve "mta-sts.$1:$PORT:127.0.0.1" \
    "https://mta-sts.$1:$PORT/.well-known/mta-sts.txt" || true
}

wait_mode() { # wait_mode DOMAIN MODE
  local deadline=$(( $(date +%s) + 600 ))
  until fetch "$1" | grep -q "mode: $2"; do
    [ "$(date +%s)" -lt $deadline ] || { echo "timeout waiting for $1 $2" >&2; return 1; }
    sleep 0.01
  done
}

run() {
  local n=$1
  CFG=$(mktemp -d)
  mkdir -p "$CFG/tenants"
  cat > "$CFG/mta-stsd.yaml" <<YAML
listen: "127.0.0.1:$PORT"
state_dir: state
issuer: internal
admin:
  listen: "127.0.0.1:$APORT"
reload:
  watch: true
  debounce: 200ms
YAML
  local files=$(( n / PER_FILE ))
  for ((f = 0; f < files; f++)); do bulk "$CFG/tenants/bulk$(printf %04d $f).yaml" $((f * PER_FILE)) $PER_FILE -1 testing; done
  local start; start=$(now)
  "$BIN" serve --config "$CFG" > "$CFG/log" 2>&1 &
  local pid=$!
  until curl -sf "http://127.0.0.1:$APORT/readyz" > /dev/null; do sleep 0.05; done
  echo "$n tenants: start to ready $(ms_since "$start") ms"
  local target=$(( n / 2 )) tf=$(( n / 2 / PER_FILE ))
  local file="$CFG/tenants/bulk$(printf %04d $tf).yaml"
  for round in 1 2 3 4 5; do
    local mode=enforce; [ $((round % 2)) -eq 1 ] || mode=testing
    local t0; t0=$(now)
    bulk "$file" $((tf * PER_FILE)) $PER_FILE $target $mode
    wait_mode "t$target.example" $mode
    echo "$n tenants: one-tenant edit served after $(ms_since "$t0") ms"
  done
  # A big file added and, once its reload has started (after the debounce), a one-tenant edit
  # of another file: how long that edit waits for the big file.
  mkdir -p "$CFG/gen"
  bulk "$CFG/gen/big.yaml" 0 "$BIG" -1 testing big
  local tb; tb=$(now)
  mv "$CFG/gen/big.yaml" "$CFG/tenants/big.yaml"
  sleep "${EDIT_AFTER:-0.5}"
  local t0; t0=$(now)
  bulk "$file" $((tf * PER_FILE)) $PER_FILE $target enforce
  wait_mode "t$target.example" enforce
  echo "$n tenants + a $BIG-tenant file added: another file's edit (written ${EDIT_AFTER:-0.5} s after it) served after $(ms_since "$t0") ms"
  wait_mode "big0.example" testing
  echo "$n tenants + a $BIG-tenant file added: the big file's first tenant served after $(ms_since "$tb") ms"
  local t1; t1=$(now)
  bulk "$file" $((tf * PER_FILE)) $PER_FILE $target testing
  wait_mode "t$target.example" testing
  echo "$((n + BIG)) tenants: one-tenant edit served after $(ms_since "$t1") ms"
  echo "$n tenants: RSS $(awk '/VmRSS/ {print $2, $3}' /proc/$pid/status)"
  kill $pid; wait $pid 2>/dev/null || true
  if [ -n "${KEEP:-}" ]; then echo "kept $CFG"; else rm -rf "$CFG"; fi
}

for n in "${SIZES[@]}"; do run "$n"; done
