#!/usr/bin/env bash
# Runs the TypeScript shim's tests against the real `tollgate` binary and
# the mock provider: installs the pinned packages (package-lock.json) with
# `npm ci`, builds the package with tsc, checks its sources in strict mode
# (`tsc --noEmit`) and runs Node's test runner. The tests import the built
# package by its name, as an agent would. Exits non-zero on any failure, a
# missing binary included (nothing is skipped).
#
#   test.sh [NODE --test ARGS...]
#
# Environment:
#   TOLLGATE_BIN                the collector (default ${CARGO_TARGET_DIR:-target}/debug/tollgate)
#   TOLLGATE_MOCK_PROVIDER_BIN  the mock provider (default beside it: mock-provider)
set -euo pipefail
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"

die() {
    echo "sdk-shim/typescript/test.sh: $*" >&2
    exit 1
}

command -v node >/dev/null || die "node is not installed (Node 20 or newer)"
command -v npm >/dev/null || die "npm is not installed"

# Paths given relative to the caller's directory stay valid after the cd below.
for var in TOLLGATE_BIN TOLLGATE_MOCK_PROVIDER_BIN CARGO_TARGET_DIR; do
    value="${!var:-}"
    if [[ -n "$value" && "$value" != /* ]]; then
        export "$var=$PWD/$value"
    fi
done
REPO="$(cd "$HERE/../.." && pwd)"
TARGET="${CARGO_TARGET_DIR:-$REPO/target}"
export TOLLGATE_BIN="${TOLLGATE_BIN:-$TARGET/debug/tollgate}"
export TOLLGATE_MOCK_PROVIDER_BIN="${TOLLGATE_MOCK_PROVIDER_BIN:-$TARGET/debug/mock-provider}"
[[ -x "$TOLLGATE_BIN" ]] || die "$TOLLGATE_BIN is missing: cargo build -p tollgate-collector --bin tollgate, or set TOLLGATE_BIN"
[[ -x "$TOLLGATE_MOCK_PROVIDER_BIN" ]] || die "$TOLLGATE_MOCK_PROVIDER_BIN is missing: cargo build -p tollgate-mock-provider --bin mock-provider, or set TOLLGATE_MOCK_PROVIDER_BIN"

cd "$HERE"
npm ci --no-audit --no-fund --loglevel=error
rm -rf dist
npm run --silent build
# The sources pass tsc's strict mode (tsconfig.json: strict, no unused names).
npx --no-install tsc -p tsconfig.json --noEmit
node -e 'import("tollgate").then((t) => console.log("tollgate", t.VERSION, "built from", process.cwd()))'
if [[ $# -eq 0 ]]; then
    set -- test/*.test.mjs
fi
exec node --test --test-concurrency=1 "$@"
