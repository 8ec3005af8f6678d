#!/usr/bin/env bash
# Runs every fuzz target for SECONDS (default 20) each, one after the
# other, from its committed corpus (new inputs go to a scratch directory,
# not the checkout). Fails on the first crash, timeout (one input running
# over 10 s) or out-of-memory (over 2 GiB), naming the target and the
# input libFuzzer saved under fuzz/artifacts/.
#
#   fuzz/smoke.sh [SECONDS]
set -euo pipefail
cd "$(dirname "$0")"
seconds="${1:-20}"

PATH="$(./launch.sh path):$PATH"
export PATH
# A target dir of its own: sanitizer flags differ from the main build's.
target_dir="${TOLLGATE_FUZZ_TARGET_DIR:-${CARGO_TARGET_DIR:-$PWD/target}/fuzz}"
export CARGO_BUILD_JOBS="${CARGO_BUILD_JOBS:-2}"

start=$SECONDS
cargo +nightly fuzz build --target-dir "$target_dir"
echo "fuzz targets built in $((SECONDS - start)) s"

scratch="$(mktemp -d)"
trap 'rm -rf "$scratch"' EXIT
for target in $(cargo +nightly fuzz list); do
    mkdir -p "$scratch/$target"
    echo "-- $target (${seconds} s)"
    if ! cargo +nightly fuzz run --target-dir "$target_dir" "$target" \
        "$scratch/$target" "corpus/$target" -- \
        -max_total_time="$seconds" -timeout=10 -rss_limit_mb=2048 \
        -print_final_stats=1 >"$scratch/$target.log" 2>&1; then
        tail -n 60 "$scratch/$target.log"
        echo "fuzz target $target failed; the input is under fuzz/artifacts/$target/" >&2
        exit 1
    fi
    grep -E '^stat::number_of_executed_units|^Done [0-9]+ runs' "$scratch/$target.log" || true
done
echo "fuzz smoke: $(cargo +nightly fuzz list | wc -l) targets passed"
