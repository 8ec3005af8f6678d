//! OTLP/HTTP JSON bodies (`content-type: application/json` on
//! `/v1/traces`) -> decoder -> normaliser -> rules.

#![no_main]

use libfuzzer_sys::fuzz_target;
use tollgate_collector::fuzzing;
use tollgate_collector::receivers::OtlpEncoding;

mod common;

fuzz_target!(|body: &[u8]| {
    let Ok(out) = fuzzing::otlp(OtlpEncoding::Json, body) else {
        return;
    };
    for r in &out.records {
        common::assert_json_round_trip(r);
    }
    fuzzing::observe(&out.records);
});
