#!/usr/bin/env bash
# Installs and runs the ClickHouse test server (server.py over the real
# ClickHouse engine from PyPI `chdb-core`) on 127.0.0.1.
#
#   launch.sh python             install if missing; print the venv's python
#   launch.sh start STATE_DIR    start on a fresh data dir; print http://127.0.0.1:PORT
#   launch.sh kill STATE_DIR     SIGKILL it (an outage); data and port are kept
#   launch.sh restart STATE_DIR  start again on the same data dir and port; print the URL
#   launch.sh stop STATE_DIR     stop it and remove its data (no error if not running)
#
# Environment:
#   TOLLGATE_TOOLS            cache root (default ~/.cache/tollgate/tools); the
#                             venv is $TOLLGATE_TOOLS/venv-chdb
#   TOLLGATE_CHDB_VERSION     chdb-core version to install (default 26.9.0)
#   TOLLGATE_PYTHON           python used to create the venv (default python3)
#   TOLLGATE_CH_PORT          port for `start` (default 0 = a free one)
#   TOLLGATE_CH_START_TIMEOUT seconds to wait for the server (default 30)
#   TOLLGATE_CH_ARGS          extra server.py arguments, e.g. "--user u --password p"
#
# Only the URL (start/restart) or the python path (python) goes to stdout;
# progress and errors go to stderr, one line each. Exit status is non-zero
# on any failure.
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
TOOLS="${TOLLGATE_TOOLS:-$HOME/.cache/tollgate/tools}"
VENV="$TOOLS/venv-chdb"
CHDB_VERSION="${TOLLGATE_CHDB_VERSION:-26.9.0}"
BASE_PYTHON="${TOLLGATE_PYTHON:-python3}"
TIMEOUT="${TOLLGATE_CH_START_TIMEOUT:-30}"

die() {
    echo "clickhouse-server/launch.sh: $*" >&2
    exit 1
}

usage() {
    die "usage: launch.sh python | start STATE_DIR | kill STATE_DIR | restart STATE_DIR | stop STATE_DIR"
}

venv_ok() {
    [[ -f "$VENV/.installed-$CHDB_VERSION" ]] &&
        "$VENV/bin/python" -c 'import chdb.session' >/dev/null 2>&1
}

ensure_venv() {
    venv_ok && return 0
    mkdir -p "$TOOLS" || die "cannot create $TOOLS"
    local log="$TOOLS/venv-chdb-install.log"
    # One installer at a time; the others wait and reuse its venv.
    exec 9>"$TOOLS/venv-chdb.lock"
    flock 9 || die "cannot lock $TOOLS/venv-chdb.lock"
    if ! venv_ok; then
        echo "installing chdb-core $CHDB_VERSION from PyPI into $VENV (log: $log)" >&2
        rm -rf "$VENV"
        {
            "$BASE_PYTHON" -m venv "$VENV" &&
                "$VENV/bin/python" -m pip install --disable-pip-version-check -q "chdb-core==$CHDB_VERSION" &&
                "$VENV/bin/python" -c 'import chdb.session'
        } >"$log" 2>&1 || {
            rm -rf "$VENV"
            die "installing chdb-core $CHDB_VERSION failed: $(tail -n 1 "$log" 2>/dev/null) (full log: $log)"
        }
        touch "$VENV/.installed-$CHDB_VERSION"
    fi
    exec 9>&-
}

# The pid of the server recorded in STATE_DIR if it is still that process.
running_pid() {
    local state="$1" pid
    [[ -f "$state/pid" ]] || return 1
    pid="$(cat "$state/pid")"
    [[ "$pid" =~ ^[0-9]+$ ]] || return 1
    kill -0 "$pid" 2>/dev/null || return 1
    tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null | grep -q "clickhouse-server/server.py" || return 1
    echo "$pid"
}

launch() {
    local state="$1" port="$2" pid
    rm -f "$state/port"
    # No stdin, no stdout/stderr of ours: `URL=$(launch.sh start D)` returns.
    # shellcheck disable=SC2086
    "$VENV/bin/python" "$HERE/server.py" --data-dir "$state/data" --port "$port" \
        --port-file "$state/port" ${TOLLGATE_CH_ARGS:-} \
        </dev/null >>"$state/server.log" 2>&1 &
    pid=$!
    echo "$pid" >"$state/pid"
    local deadline=$((SECONDS + TIMEOUT))
    while [[ ! -s "$state/port" ]]; do
        if ! kill -0 "$pid" 2>/dev/null; then
            rm -f "$state/pid"
            die "server exited while starting: $(grep -v '^\s*$' "$state/server.log" | tail -n 1) (log: $state/server.log)"
        fi
        if ((SECONDS >= deadline)); then
            kill -KILL "$pid" 2>/dev/null || true
            rm -f "$state/pid"
            die "server did not listen within ${TIMEOUT}s (log: $state/server.log)"
        fi
        sleep 0.1
    done
    port="$(tr -d '[:space:]' <"$state/port")"
    echo "http://127.0.0.1:$port" >"$state/url"
    echo "http://127.0.0.1:$port"
}

kill_server() {
    local state="$1" signal="$2" pid
    pid="$(running_pid "$state")" || { rm -f "$state/pid"; return 0; }
    kill "-$signal" "$pid" 2>/dev/null || true
    for _ in $(seq 100); do
        kill -0 "$pid" 2>/dev/null || break
        sleep 0.1
    done
    if kill -0 "$pid" 2>/dev/null; then
        kill -KILL "$pid" 2>/dev/null || true
        sleep 0.2
    fi
    rm -f "$state/pid"
}

cmd="${1:-}"
case "$cmd" in
python)
    [[ $# -eq 1 ]] || usage
    ensure_venv
    echo "$VENV/bin/python"
    ;;
start)
    [[ $# -eq 2 ]] || usage
    state="$2"
    mkdir -p "$state" || die "cannot create $state"
    state="$(cd "$state" && pwd)"
    if pid="$(running_pid "$state")"; then
        die "already running in $state (pid $pid); run: launch.sh stop $state"
    fi
    ensure_venv
    rm -rf "$state/data" "$state/port" "$state/url"
    : >"$state/server.log"
    launch "$state" "${TOLLGATE_CH_PORT:-0}"
    ;;
restart)
    [[ $# -eq 2 ]] || usage
    state="$(cd "$2" 2>/dev/null && pwd)" || die "no state dir $2 (run launch.sh start first)"
    [[ -s "$state/url" ]] || die "no previous server in $state (run launch.sh start first)"
    kill_server "$state" KILL
    ensure_venv
    port="$(sed -e 's/.*://' "$state/url")"
    launch "$state" "$port"
    ;;
kill)
    [[ $# -eq 2 ]] || usage
    [[ -d "$2" ]] || die "no state dir $2"
    kill_server "$2" KILL
    ;;
stop)
    [[ $# -eq 2 ]] || usage
    state="$2"
    [[ -d "$state" ]] || exit 0
    kill_server "$state" TERM
    rm -rf "$state/data" "$state/port" "$state/url" "$state/pid"
    ;;
*)
    usage
    ;;
esac
