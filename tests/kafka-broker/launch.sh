#!/usr/bin/env bash
# Prints the path of the Kafka-compatible broker the Kafka tests start
# (`tansu`, from crates.io), building it once into a cache outside the
# checkout. Each test starts its own broker on a free loopback port, in
# memory, and stops it (tests/support: KafkaBroker).
#
#   tests/kafka-broker/launch.sh path    # build if missing, print the binary
set -euo pipefail

TANSU_VERSION="0.6.0"
ROOT="${TOLLGATE_TOOLS_DIR:-$HOME/.cache/tollgate/tools}"
BIN="$ROOT/bin/tansu"

if [[ ! -x "$BIN" ]] || ! "$BIN" --version 2>/dev/null | grep -q "$TANSU_VERSION"; then
    echo "building tansu $TANSU_VERSION into $ROOT (once; about 30 minutes on 2 cores)" >&2
    # The memory storage engine needs the dynostore feature.
    cargo install tansu --version "$TANSU_VERSION" --locked --features dynostore \
        --root "$ROOT" >&2
fi
case "${1:-path}" in
    path) echo "$BIN" ;;
    *) echo "usage: $0 path" >&2; exit 2 ;;
esac
