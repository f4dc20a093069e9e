#!/usr/bin/env bash
# Longer fuzz runs into the local corpus: `bash fuzz/run.sh [SECONDS] [TARGET...]`
# (default 600 s per target, every target).
#
# Each target runs for SECONDS on fuzz/corpus/<target>/ (new inputs are added there), then
# `cargo fuzz cmin` minimises that corpus and the committed seeds (seed-*) are written back.
# Only the seeds are committed; what the fuzzer adds stays on this machine (see
# fuzz/.gitignore) and is reused by the next run. FUZZ_PARALLEL=2 runs two targets at once;
# every run is niced. Prints per target: executions, exec/s, cov, ft, corpus size, and where a
# crash was written. Exits non-zero if any target failed.
set -euo pipefail

SECONDS_PER_TARGET="${1:-600}"
case "$SECONDS_PER_TARGET" in
'' | *[!0-9]*) echo "usage: bash fuzz/run.sh [SECONDS] [TARGET...]" >&2; exit 2 ;;
esac
shift || true
FUZZ_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
cd "$FUZZ_DIR/.."
if ! cargo +nightly fuzz --version >/dev/null 2>&1; then
    echo "fuzz/run.sh: needs nightly and cargo-fuzz: rustup toolchain install nightly && cargo install cargo-fuzz --locked" >&2
    exit 2
fi
# shellcheck source=fuzz/targets.sh
source "$FUZZ_DIR/targets.sh"
# The build script embeds the commit and watches HEAD; a fixed value keeps a commit from
# rebuilding the whole library under the sanitizer between two runs.
export MTA_STSD_COMMIT="${MTA_STSD_COMMIT:-fuzz}"
if [ "$#" -gt 0 ]; then
    TARGETS=("$@")
fi
PARALLEL="${FUZZ_PARALLEL:-1}"
LOGS="$FUZZ_DIR/artifacts/logs"
mkdir -p "$LOGS"
# Temporary files (the intake target's report database) on /dev/shm when it is there.
tmp_base="${TMPDIR:-/tmp}"
if [ -d /dev/shm ] && [ -w /dev/shm ]; then tmp_base=/dev/shm; fi
work="$(mktemp -d "$tmp_base/mta-stsd-fuzz-run.XXXXXX")"
trap 'rm -rf "$work"' EXIT
export TMPDIR="$work"

cargo +nightly fuzz build

run_one() {
    local target="$1" log="$LOGS/$1.log" rc=0
    mkdir -p "$FUZZ_DIR/corpus/$target" "$FUZZ_DIR/artifacts/$target"
    # shellcheck disable=SC2046
    nice -n 10 cargo +nightly fuzz run "$target" "$FUZZ_DIR/corpus/$target" -- \
        -max_total_time="$SECONDS_PER_TARGET" -timeout=10 -rss_limit_mb=2048 -detect_leaks=1 \
        -print_final_stats=1 $(fuzz_dict_flag "$target") >"$log" 2>&1 || rc=$?
    echo "$rc" >"$LOGS/$target.rc"
}

running=0
for target in "${TARGETS[@]}"; do
    echo "== $target: ${SECONDS_PER_TARGET} s (log: $LOGS/$target.log)"
    run_one "$target" &
    running=$((running + 1))
    if [ "$running" -ge "$PARALLEL" ]; then
        wait -n || true
        running=$((running - 1))
    fi
done
wait || true

failed=()
printf '\n| target | executions | exec/s | cov | ft | corpus | result |\n|---|---:|---:|---:|---:|---:|---|\n' >"$LOGS/summary.md"
for target in "${TARGETS[@]}"; do
    log="$LOGS/$target.log"
    rc="$(cat "$LOGS/$target.rc" 2>/dev/null || echo 1)"
    result="ok"
    if [ "$rc" -ne 0 ]; then
        failed+=("$target")
        artifact="$(grep -Eo 'Test unit written to [^ ]+' "$log" | tail -1 | cut -d' ' -f5- || true)"
        result="FAILED (exit $rc) ${artifact:-see $log}"
    else
        nice -n 10 cargo +nightly fuzz cmin "$target" "$FUZZ_DIR/corpus/$target" >"$LOGS/$target.cmin.log" 2>&1 ||
            echo "!! cmin of $target failed: $LOGS/$target.cmin.log" >&2
    fi
    execs="$(grep -Eo 'stat::number_of_executed_units: *[0-9]+' "$log" | grep -Eo '[0-9]+$' || echo '?')"
    rate="$(grep -Eo 'stat::average_exec_per_sec: *[0-9]+' "$log" | grep -Eo '[0-9]+$' || echo '?')"
    last="$(grep -E '^#[0-9]+[[:space:]].* cov: ' "$log" | tail -1 || true)"
    cov="$(echo "$last" | grep -Eo 'cov: [0-9]+' | grep -Eo '[0-9]+' || echo '?')"
    ft="$(echo "$last" | grep -Eo 'ft: [0-9]+' | grep -Eo '[0-9]+' || echo '?')"
    printf '| %s | %s | %s | %s | %s | %s | %s |\n' "$target" "$execs" "$rate" "$cov" "$ft" \
        "$(find "$FUZZ_DIR/corpus/$target" -type f | wc -l)" "$result" >>"$LOGS/summary.md"
done
# cmin keeps only what adds coverage; the committed seeds stay whatever it decided.
python3 "$FUZZ_DIR/make-seeds.py" >/dev/null
cat "$LOGS/summary.md"
if [ "${#failed[@]}" -ne 0 ]; then
    echo "!! fuzz/run.sh: failed: ${failed[*]}" >&2
    exit 1
fi
