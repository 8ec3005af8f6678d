//! `tollgate.toml` text: `${VAR}` / `${VAR:-default}` expansion, then TOML,
//! then validation (which compiles the rules and the gateway section).

#![no_main]

use libfuzzer_sys::fuzz_target;
use tollgate_collector::config::expand_env;
use tollgate_collector::fuzzing;

fn lookup(name: &str) -> Option<String> {
    Some(
        match name {
            "EMPTY" => "",
            "PORT" => "7070",
            "DATA_DIR" => "/nonexistent/tollgate",
            "LIMIT" => "10",
            // A value is inserted as written, never expanded again.
            "TRICKY" => "${PORT}$${x}\"\n",
            _ => return None,
        }
        .to_owned(),
    )
}

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    match expand_env(text, lookup) {
        Ok(out) => {
            if !text.contains('$') {
                assert_eq!(out, text, "text without `$` is left as written");
            }
        }
        Err(e) => assert!(e.starts_with("line "), "{e}"),
    }
    let _ = fuzzing::config(text, lookup);
});
