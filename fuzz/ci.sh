#!/usr/bin/env bash
# Short fuzz run of every target, for CI: `bash fuzz/ci.sh [SECONDS]` (default 45 per target).
#
# Builds every target once (cargo-fuzz, nightly, AddressSanitizer), then runs each for SECONDS
# on a copy of its committed corpus (the checkout's corpus is never written), with a 10 s
# per-input timeout, a 2 GB RSS cap and leak detection. Exits non-zero on the first crash,
# leak, timeout or out-of-memory in any target (every target still runs), after printing
# each reproducer's path; artifacts go to
# fuzz/artifacts/<target>/ (ignored by git). Needs a nightly toolchain and cargo-fuzz.
set -euo pipefail

SECONDS_PER_TARGET="${1:-45}"
case "$SECONDS_PER_TARGET" in
'' | *[!0-9]*) echo "usage: bash fuzz/ci.sh [SECONDS]" >&2; exit 2 ;;
esac
FUZZ_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
cd "$FUZZ_DIR/.."

if ! cargo +nightly --version >/dev/null 2>&1; then
    echo "fuzz/ci.sh: needs a nightly toolchain: rustup toolchain install nightly" >&2
    exit 2
fi
if ! cargo +nightly fuzz --version >/dev/null 2>&1; then
    echo "fuzz/ci.sh: needs cargo-fuzz: cargo install cargo-fuzz --locked" >&2
    exit 2
fi

# shellcheck source=fuzz/targets.sh
source "$FUZZ_DIR/targets.sh"
# The build script embeds the commit and watches HEAD; a fixed value keeps a commit from
# rebuilding the whole library under the sanitizer.
export MTA_STSD_COMMIT="${MTA_STSD_COMMIT:-fuzz}"

# Temporary files (the intake target's report database) on /dev/shm when it is there.
tmp_base="${TMPDIR:-/tmp}"
if [ -d /dev/shm ] && [ -w /dev/shm ]; then tmp_base=/dev/shm; fi
work="$(mktemp -d "$tmp_base/mta-stsd-fuzz-ci.XXXXXX")"
trap 'rm -rf "$work"' EXIT
# The intake target keeps its report database under TMPDIR; this run's goes with $work.
export TMPDIR="$work"

started=$(date +%s)
echo "== building ${#TARGETS[@]} fuzz targets (release, AddressSanitizer)"
cargo +nightly fuzz build
built=$(date +%s)
echo "== built in $((built - started)) s"

failed=()
for target in "${TARGETS[@]}"; do
    corpus="$work/corpus/$target"
    mkdir -p "$corpus" "$FUZZ_DIR/artifacts/$target"
    cp -R "$FUZZ_DIR/corpus/$target/." "$corpus/"
    log="$work/$target.log"
    echo "== $target: ${SECONDS_PER_TARGET} s"
    set +e
    cargo +nightly fuzz run "$target" "$corpus" -- \
        -max_total_time="$SECONDS_PER_TARGET" -timeout=10 -rss_limit_mb=2048 -detect_leaks=1 \
        -print_final_stats=1 $(fuzz_dict_flag "$target") >"$log" 2>&1
    rc=$?
    set -e
    grep -E '^#[0-9]+[[:space:]]+DONE' "$log" | tail -1 || true
    grep -E '^stat::(number_of_executed_units|average_exec_per_sec|peak_rss_mb)' "$log" || true
    if [ "$rc" -ne 0 ]; then
        failed+=("$target")
        echo "!! $target failed (exit $rc):" >&2
        grep -E 'ERROR: |==ERROR|panicked at|SUMMARY: ' "$log" | head -20 >&2 || true
        artifact="$(grep -Eo 'Test unit written to [^ ]+' "$log" | tail -1 | cut -d' ' -f5- || true)"
        if [ -n "$artifact" ]; then
            echo "!! reproducer: $artifact" >&2
            echo "!! reproduce: cargo +nightly fuzz run $target $artifact" >&2
        else
            tail -40 "$log" >&2
        fi
    fi
done
echo "== fuzz/ci.sh: $(($(date +%s) - started)) s in all (build $((built - started)) s)"
if [ "${#failed[@]}" -ne 0 ]; then
    echo "!! fuzz/ci.sh: failed: ${failed[*]}" >&2
    exit 1
fi
