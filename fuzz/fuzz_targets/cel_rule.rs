//! Custom rules: any text as the `expression` of a `type = "custom"` rule,
//! through the `call.` scanner, CEL compilation (parse, field check, guards,
//! a trial run) and evaluation on sample calls.

#![no_main]

use libfuzzer_sys::fuzz_target;
use tollgate_rules::engine::{Engine, compile, parse_rules};
use tollgate_rules::fuzzing::call_fields;

mod common;

fuzz_target!(|data: &[u8]| {
    let Ok(source) = std::str::from_utf8(data) else {
        return;
    };
    // The scanner runs on any text, valid CEL or not.
    let (fields, _whole) = call_fields(source);
    for f in &fields {
        assert!(
            !f.is_empty() && f.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_'),
            "{f:?}"
        );
        assert!(source.contains(&format!("call.{f}")), "{f:?}");
    }

    let mut table = toml::map::Map::new();
    table.insert("id".into(), "fuzz-rule".into());
    table.insert("type".into(), "custom".into());
    table.insert("expression".into(), source.into());
    table.insert("action".into(), "block".into());
    match parse_rules(vec![toml::Value::Table(table)]).and_then(|raw| compile(&raw)) {
        Ok(rules) => {
            let engine = Engine::new(rules);
            for call in common::sample_calls() {
                engine.observe(&call);
            }
        }
        Err(e) => {
            // One line naming the rule: what start-up and reload print.
            let message = e.to_string();
            assert!(message.contains("fuzz-rule"), "{message}");
            assert!(!message.contains('\n'), "{message:?}");
        }
    }
});
