#!/usr/bin/env bash
# Runs the Python shim's tests against the real `tollgate` binary and the
# mock provider: installs the pinned packages (tests/requirements.txt) into
# a cached venv if missing or out of date, builds the wheel from this
# checkout, installs it into the venv, checks the package's types with mypy
# and runs pytest. Exits non-zero on any failure, a missing package or
# binary included (nothing is skipped).
#
#   test.sh [PYTEST ARGS...]
#
# Environment:
#   TOLLGATE_BIN                the collector (default ${CARGO_TARGET_DIR:-target}/debug/tollgate)
#   TOLLGATE_MOCK_PROVIDER_BIN  the mock provider (default beside it: mock-provider)
#   TOLLGATE_TOOLS              cache root (default ~/.cache/tollgate/tools); the venv
#                               is $TOLLGATE_TOOLS/venv-shim
#   TOLLGATE_PYTHON             python used to create the venv (default python3)
set -euo pipefail
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
TOOLS="${TOLLGATE_TOOLS:-$HOME/.cache/tollgate/tools}"
VENV="$TOOLS/venv-shim"
REQUIREMENTS="$HERE/tests/requirements.txt"
BASE_PYTHON="${TOLLGATE_PYTHON:-python3}"
IMPORTS='import openai, anthropic, agents, pydantic_ai, openinference.instrumentation.openai, opentelemetry.instrumentation.openai, opentelemetry.instrumentation.openai_v2, opentelemetry.sdk.trace, pytest, build, hatchling, mypy'

die() {
    echo "sdk-shim/python/test.sh: $*" >&2
    exit 1
}

stamp() {
    echo "$VENV/.installed-$(sha256sum "$REQUIREMENTS" | cut -c1-16)"
}

venv_ok() {
    [[ -f "$(stamp)" ]] && "$VENV/bin/python" -c "$IMPORTS" >/dev/null 2>&1
}

ensure_venv() {
    venv_ok && return 0
    mkdir -p "$TOOLS" || die "cannot create $TOOLS"
    local log="$TOOLS/venv-shim-install.log"
    exec 9>"$TOOLS/venv-shim.lock"
    flock 9 || die "cannot lock $TOOLS/venv-shim.lock"
    if ! venv_ok; then
        echo "installing the shim's test packages from PyPI into $VENV (log: $log)" >&2
        rm -rf "$VENV"
        {
            "$BASE_PYTHON" -m venv "$VENV" &&
                "$VENV/bin/python" -m pip install --disable-pip-version-check -q -r "$REQUIREMENTS" &&
                "$VENV/bin/python" -c "$IMPORTS"
        } >"$log" 2>&1 || {
            rm -rf "$VENV"
            die "installing the test packages failed: $(tail -n 1 "$log" 2>/dev/null) (full log: $log)"
        }
        touch "$(stamp)"
    fi
    exec 9>&-
}

# Paths given relative to the caller's directory stay valid after the cd below.
for var in TOLLGATE_BIN TOLLGATE_MOCK_PROVIDER_BIN CARGO_TARGET_DIR; do
    value="${!var:-}"
    if [[ -n "$value" && "$value" != /* ]]; then
        export "$var=$PWD/$value"
    fi
done

ensure_venv
# The package under test is the wheel built from this checkout, installed
# like a user would (the tests never import the source tree).
DIST="$(mktemp -d)"
trap 'rm -rf "$DIST"' EXIT
WHEEL="$(PYTHON="$VENV/bin/python" TOLLGATE_BUILD_NO_ISOLATION=1 "$HERE/build-wheel.sh" "$DIST")"
"$VENV/bin/python" -m pip install --disable-pip-version-check -q --no-deps --force-reinstall "$WHEEL"
"$VENV/bin/python" -c 'import tollgate, pathlib; print("tollgate", tollgate.__version__, "from", pathlib.Path(tollgate.__file__).parent)'
cd "$HERE"
# The package is typed (py.typed): its sources pass mypy's strict mode.
"$VENV/bin/python" -m mypy --strict --cache-dir=/dev/null src/tollgate
PYTHONDONTWRITEBYTECODE=1 exec "$VENV/bin/python" -m pytest -p no:cacheprovider "$@"
