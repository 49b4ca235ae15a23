#!/usr/bin/env bash
# Runs each pvabi fuzz target (cargo-fuzz, libFuzzer) for a bounded time and prints how many
# inputs each executed.
#
# Usage: scripts/fuzz.sh [SECONDS] [TARGET...]
#   SECONDS  time per target (default 60)
#   TARGET   dispatch, store, multicall (default: all three, one after another)
# Environment:
#   PVABI_FUZZ_SANITIZER  none (default) or address (ASan; about 30x slower on these targets)
#   PVABI_FUZZ_WORK       where the growing corpus and crash artifacts go
#                         (default fuzz/target/work); the committed seeds in
#                         fuzz/corpus/<target> are read, never written
#
# Needs the nightly toolchain and cargo-fuzz (installed with `cargo install cargo-fuzz
# --locked` when missing). Builds are release builds with debug assertions and overflow
# checks. Exits non-zero when a target finds a crash, panic, timeout or invariant violation;
# the failing input is saved under $PVABI_FUZZ_WORK/artifacts/<target>/.
set -euo pipefail

secs="${1:-60}"
shift || true
targets=("$@")
if [ "${#targets[@]}" -eq 0 ]; then
    targets=(dispatch store multicall)
fi
san="${PVABI_FUZZ_SANITIZER:-none}"
root="$(cd "$(dirname "$0")/.." && pwd)"
fuzz="$root/fuzz"
work="${PVABI_FUZZ_WORK:-$fuzz/target/work}"

if ! cargo fuzz --version >/dev/null 2>&1; then
    echo "fuzz.sh: installing cargo-fuzz" >&2
    cargo install cargo-fuzz --locked
fi

cd "$fuzz"
for t in "${targets[@]}"; do
    cargo +nightly fuzz build -s "$san" "$t"
done

status=0
summary=()
for t in "${targets[@]}"; do
    mkdir -p "$work/corpus/$t" "$work/artifacts/$t" "$work/logs"
    log="$work/logs/$t.log"
    start=$(date +%s)
    set +e
    cargo +nightly fuzz run -s "$san" "$t" "$work/corpus/$t" "$fuzz/corpus/$t" -- \
        -max_total_time="$secs" -timeout=10 -rss_limit_mb=2048 -print_final_stats=1 \
        -artifact_prefix="$work/artifacts/$t/" >"$log" 2>&1
    rc=$?
    set -e
    elapsed=$(( $(date +%s) - start ))
    execs=$(sed -n 's/^stat::number_of_executed_units: *\([0-9]*\).*/\1/p' "$log" | tail -n 1)
    if [ -z "$execs" ]; then
        execs=$(sed -n 's/^#\([0-9]*\)[[:space:]]*DONE.*/\1/p' "$log" | tail -n 1)
    fi
    crashes=$(find "$work/artifacts/$t" -type f | wc -l)
    line="$t: ${execs:-0} executions in ${elapsed}s (sanitizer $san), exit $rc, $crashes crash artifact(s)"
    echo "$line"
    summary+=("$line")
    if [ "$rc" -ne 0 ] || [ "$crashes" -ne 0 ]; then
        status=1
        echo "--- $t failed; last lines of $log:" >&2
        tail -n 40 "$log" >&2
    fi
done
echo "== fuzz summary =="
printf '%s\n' "${summary[@]}"
exit "$status"
