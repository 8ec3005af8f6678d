//! Kafka messages: a call of the calls topic (decoded, re-encoded, run
//! through the rules as the process role does) and a change of the
//! kill-switch topic (decoded and applied).

#![no_main]

use libfuzzer_sys::fuzz_target;
use tollgate_collector::fuzzing;
use tollgate_collector::killswitch::KillSwitch;

mod common;

fuzz_target!(|payload: &[u8]| {
    if let Ok(call) = fuzzing::kafka_call(payload) {
        common::assert_json_round_trip(&call);
        fuzzing::observe(std::slice::from_ref(&call));
    }
    if let Ok((_origin, change)) = fuzzing::kafka_enforcement(payload) {
        let switch = KillSwitch::new();
        switch.apply_remote(change.clone());
        switch.apply_remote(change);
    }
});
