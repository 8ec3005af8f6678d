#!/usr/bin/env bash
# Installs the gateway benchmark's peers into a cache outside the checkout
# (pinned versions; nothing of theirs is committed) and prints where they are.
#
#   launch.sh litellm   LiteLLM proxy from PyPI (litellm-requirements.txt) in
#                       a venv; prints the venv's `litellm` executable
#   launch.sh portkey   Portkey AI gateway from npm (@portkey-ai/gateway);
#                       prints its build/start-server.js
#
# Environment:
#   TOLLGATE_TOOLS   cache root (default ~/.cache/tollgate/tools)
#   TOLLGATE_PYTHON  python used to create the venv (default python3)
#
# Only the path goes to stdout; progress and errors go to stderr, one line
# each. Exit status is non-zero on any failure.
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
TOOLS="${TOLLGATE_TOOLS:-$HOME/.cache/tollgate/tools}"
BASE_PYTHON="${TOLLGATE_PYTHON:-python3}"
PORTKEY_VERSION="1.15.2"

die() {
    echo "bench/peers/launch.sh: $*" >&2
    exit 1
}

# Runs "$@" under an exclusive lock named $1 so concurrent callers install
# once and the others reuse the result.
locked() {
    local name="$1"
    shift
    mkdir -p "$TOOLS" || die "cannot create $TOOLS"
    (
        flock 9 || die "cannot lock $TOOLS/$name.lock"
        "$@"
    ) 9>"$TOOLS/$name.lock"
}

litellm_install() {
    local venv="$TOOLS/venv-litellm" req="$HERE/litellm-requirements.txt"
    local stamp
    stamp="$venv/.installed-$(sha256sum "$req" | cut -c1-16)"
    if [[ -f "$stamp" && -x "$venv/bin/litellm" ]]; then
        return 0
    fi
    local log="$TOOLS/venv-litellm-install.log"
    echo "installing LiteLLM from PyPI into $venv (log: $log)" >&2
    rm -rf "$venv"
    {
        "$BASE_PYTHON" -m venv "$venv" &&
            "$venv/bin/python" -m pip install --disable-pip-version-check -q -r "$req" &&
            "$venv/bin/litellm" --version
    } >"$log" 2>&1 || {
        rm -rf "$venv"
        die "installing LiteLLM failed: $(tail -n 1 "$log" 2>/dev/null) (full log: $log)"
    }
    touch "$stamp"
}

portkey_install() {
    local dir="$TOOLS/portkey-$PORTKEY_VERSION"
    local js="$dir/node_modules/@portkey-ai/gateway/build/start-server.js"
    if [[ -f "$js" ]]; then
        return 0
    fi
    command -v npm >/dev/null || die "npm is not installed"
    local log="$TOOLS/portkey-install.log"
    echo "installing @portkey-ai/gateway@$PORTKEY_VERSION from npm into $dir (log: $log)" >&2
    rm -rf "$dir"
    mkdir -p "$dir"
    {
        cd "$dir" &&
            npm init -y >/dev/null &&
            npm install --no-audit --no-fund "@portkey-ai/gateway@$PORTKEY_VERSION"
    } >"$log" 2>&1 || {
        rm -rf "$dir"
        die "installing Portkey failed: $(tail -n 1 "$log" 2>/dev/null) (full log: $log)"
    }
    [[ -f "$js" ]] || die "Portkey installed without $js"
}

case "${1:-}" in
litellm)
    locked venv-litellm litellm_install
    echo "$TOOLS/venv-litellm/bin/litellm"
    ;;
portkey)
    locked portkey portkey_install
    echo "$TOOLS/portkey-$PORTKEY_VERSION/node_modules/@portkey-ai/gateway/build/start-server.js"
    ;;
*)
    die "usage: launch.sh litellm | portkey"
    ;;
esac
