#!/usr/bin/env bash
# Prints the path of the Kafka-compatible broker the Kafka tests start
# (`tansu`, from crates.io), building it once into a cache outside the
# checkout. Each test starts its own broker on a free loopback port, in
# memory, and stops it (tests/support: KafkaBroker).
#
#   tests/kafka-broker/launch.sh path    # build if missing, print the binary
#
# tansu-storage 0.6.0 is built with one fix (the .patch beside this file):
# a fetch from an offset in the middle of a record batch returned the
# batches *after* it, so a consumer resuming from a committed offset
# silently skipped the rest of that batch. Kafka returns the batch holding
# the offset, and the client skips the records before it.
set -euo pipefail
HERE="$(cd "$(dirname "$0")" && pwd)"

TANSU_VERSION="0.6.0"
PATCH="$HERE/fetch-from-the-batch-holding-the-offset.patch"
ROOT="${TOLLGATE_TOOLS_DIR:-$HOME/.cache/tollgate/tools}"
BIN="$ROOT/bin/tansu"
STAMP="$ROOT/bin/tansu.patch.sha256"
want="$(sha256sum "$PATCH" | cut -d' ' -f1)"

built() {
    [[ -x "$BIN" ]] && "$BIN" --version 2>/dev/null | grep -q "$TANSU_VERSION" &&
        [[ "$(cat "$STAMP" 2>/dev/null)" == "$want" ]]
}

if ! built; then
    echo "building tansu $TANSU_VERSION into $ROOT (once; about 30 minutes on 2 cores)" >&2
    # tansu-storage's source, as cargo downloads it, patched into the cache.
    probe="$(mktemp -d)"
    trap 'rm -rf "$probe"' EXIT
    mkdir "$probe/src"
    touch "$probe/src/lib.rs"
    cat >"$probe/Cargo.toml" <<EOF
[package]
name = "tansu-storage-source"
version = "0.0.0"
edition = "2021"

[dependencies]
tansu-storage = "=$TANSU_VERSION"
EOF
    manifest="$(cargo metadata --manifest-path "$probe/Cargo.toml" --format-version 1 |
        python3 -c 'import json, sys
print(next(p["manifest_path"] for p in json.load(sys.stdin)["packages"] if p["name"] == "tansu-storage"))')"
    storage="$ROOT/src/tansu-storage-$TANSU_VERSION-patched"
    rm -rf "$storage"
    mkdir -p "$ROOT/src"
    cp -r "$(dirname "$manifest")" "$storage"
    patch -d "$storage" -p1 --quiet <"$PATCH"
    # The memory storage engine needs the dynostore feature.
    cargo install tansu --version "$TANSU_VERSION" --locked --force --features dynostore \
        --config "patch.crates-io.tansu-storage.path=\"$storage\"" \
        --root "$ROOT" >&2
    echo "$want" >"$STAMP"
fi
case "${1:-path}" in
    path) echo "$BIN" ;;
    *) echo "usage: $0 path" >&2; exit 2 ;;
esac
