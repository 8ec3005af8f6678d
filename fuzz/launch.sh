#!/usr/bin/env bash
# Prints the directory holding `cargo-fuzz` (crates.io), installing it once
# into a cache outside the checkout, and makes sure the nightly toolchain
# the fuzz targets build with is there.
#
#   fuzz/launch.sh path    # install if missing, print the bin directory
set -euo pipefail

CARGO_FUZZ_VERSION="0.13.2"
ROOT="${TOLLGATE_TOOLS_DIR:-$HOME/.cache/tollgate/tools}"
BIN="$ROOT/bin/cargo-fuzz"

if ! rustup run nightly rustc --version >/dev/null 2>&1; then
    echo "installing the nightly toolchain (fuzz targets need -Zsanitizer)" >&2
    rustup toolchain install nightly --profile minimal >&2
fi
if ! { [[ -x "$BIN" ]] && "$BIN" --version 2>/dev/null | grep -q " $CARGO_FUZZ_VERSION\$"; }; then
    echo "installing cargo-fuzz $CARGO_FUZZ_VERSION into $ROOT (once; about 3 minutes)" >&2
    cargo install cargo-fuzz --version "$CARGO_FUZZ_VERSION" --locked --force \
        --root "$ROOT" >&2
fi
case "${1:-path}" in
    path) dirname "$BIN" ;;
    *) echo "usage: $0 path" >&2; exit 2 ;;
esac
