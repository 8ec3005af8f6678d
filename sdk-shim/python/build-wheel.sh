#!/usr/bin/env bash
# Builds the `tollgate` wheel (and sdist) of this directory.
#
#   build-wheel.sh [OUTDIR]     default OUTDIR: ./dist
#
# Environment:
#   PYTHON                       python with the `build` package (default python3)
#   TOLLGATE_BUILD_NO_ISOLATION  set to 1 to build with the backend (hatchling)
#                                installed in that python instead of a fresh
#                                isolated environment
set -euo pipefail
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
OUT="${1:-$HERE/dist}"
PY="${PYTHON:-python3}"
args=(--wheel --sdist --outdir "$OUT")
[[ "${TOLLGATE_BUILD_NO_ISOLATION:-}" == 1 ]] && args+=(--no-isolation)
"$PY" -m build "${args[@]}" "$HERE" >&2
ls "$OUT"/tollgate-*.whl
