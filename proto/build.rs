//! Generates Rust types, the tonic server and the tonic client for
//! Tollgate's own protocols (today: `tollgate.enforcement.v1`).
//!
//! The `.proto` files are compiled with `protox`, a pure-Rust protobuf
//! compiler, so building the workspace never needs a `protoc` binary on the
//! machine; `tonic-prost-build` then turns the descriptors into code.

use std::error::Error;

/// Every `.proto` file this crate exposes, relative to `PROTO_ROOT`.
const PROTOS: &[&str] = &["tollgate/enforcement/v1/enforcement.proto"];
/// The include root: imports and package paths are resolved from here.
const PROTO_ROOT: &str = "proto";

fn main() -> Result<(), Box<dyn Error>> {
    // protox reports the files it read, but cargo must also rerun when a
    // proto changes without the build script's own inputs changing.
    for proto in PROTOS {
        println!("cargo:rerun-if-changed={PROTO_ROOT}/{proto}");
    }
    let fds = protox::compile(PROTOS, [PROTO_ROOT])?;
    tonic_prost_build::configure()
        .build_server(true)
        .build_client(true)
        .compile_fds(fds)?;
    Ok(())
}
