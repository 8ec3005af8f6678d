//! OTLP/HTTP protobuf bodies (what `/v1/traces` and, through the same
//! decoder, gRPC `Export` receive) -> decoder -> normaliser -> rules.

#![no_main]

use libfuzzer_sys::fuzz_target;
use tollgate_collector::fuzzing;
use tollgate_collector::receivers::OtlpEncoding;

mod common;

fuzz_target!(|body: &[u8]| {
    let Ok(out) = fuzzing::otlp(OtlpEncoding::Protobuf, body) else {
        return;
    };
    for r in &out.records {
        common::assert_json_round_trip(r);
    }
    fuzzing::observe(&out.records);
});
