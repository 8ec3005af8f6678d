#!/usr/bin/env bash
# Installs the official `openai` and `anthropic` Python SDKs and the official
# OpenTelemetry SDK with its OTLP exporters (versions pinned in
# requirements.txt beside this file) into a cached venv, for the gateway's
# SDK test (tests/e2e_python_sdk.rs runs sdk_calls.py with it) and the TLS
# test (tests/e2e_tls.rs runs otlp_export.py with it).
#
#   launch.sh python    install if missing or out of date; print the venv's python
#
# Environment:
#   TOLLGATE_TOOLS   cache root (default ~/.cache/tollgate/tools); the venv is
#                    $TOLLGATE_TOOLS/venv-sdk
#   TOLLGATE_PYTHON  python used to create the venv (default python3)
#
# Only the python path goes to stdout; progress and errors go to stderr, one
# line each. Exit status is non-zero on any failure.
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
TOOLS="${TOLLGATE_TOOLS:-$HOME/.cache/tollgate/tools}"
VENV="$TOOLS/venv-sdk"
REQUIREMENTS="$HERE/requirements.txt"
BASE_PYTHON="${TOLLGATE_PYTHON:-python3}"
IMPORTS='import openai, anthropic, opentelemetry.sdk.trace, opentelemetry.exporter.otlp.proto.grpc.trace_exporter, opentelemetry.exporter.otlp.proto.http.trace_exporter'

die() {
    echo "python-sdk/launch.sh: $*" >&2
    exit 1
}

usage() {
    die "usage: launch.sh python"
}

# The stamp names the requirements' content: editing a pin reinstalls.
stamp() {
    echo "$VENV/.installed-$(sha256sum "$REQUIREMENTS" | cut -c1-16)"
}

venv_ok() {
    [[ -f "$(stamp)" ]] &&
        "$VENV/bin/python" -c "$IMPORTS" >/dev/null 2>&1
}

ensure_venv() {
    [[ -f "$REQUIREMENTS" ]] || die "missing $REQUIREMENTS"
    venv_ok && return 0
    mkdir -p "$TOOLS" || die "cannot create $TOOLS"
    local log="$TOOLS/venv-sdk-install.log"
    # One installer at a time; the others wait and reuse its venv.
    exec 9>"$TOOLS/venv-sdk.lock"
    flock 9 || die "cannot lock $TOOLS/venv-sdk.lock"
    if ! venv_ok; then
        echo "installing the openai, anthropic and OpenTelemetry SDKs from PyPI into $VENV (log: $log)" >&2
        rm -rf "$VENV"
        {
            "$BASE_PYTHON" -m venv "$VENV" &&
                "$VENV/bin/python" -m pip install --disable-pip-version-check -q -r "$REQUIREMENTS" &&
                "$VENV/bin/python" -c "$IMPORTS" &&
                "$VENV/bin/python" -c 'import openai, anthropic; print("openai", openai.__version__, "anthropic", anthropic.__version__)'
        } >"$log" 2>&1 || {
            rm -rf "$VENV"
            die "installing the SDKs failed: $(tail -n 1 "$log" 2>/dev/null) (full log: $log)"
        }
        touch "$(stamp)"
    fi
    exec 9>&-
}

cmd="${1:-}"
case "$cmd" in
python)
    [[ $# -eq 1 ]] || usage
    ensure_venv
    echo "$VENV/bin/python"
    ;;
*)
    usage
    ;;
esac
