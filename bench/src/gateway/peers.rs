//! The peers the gateway is compared with, installed by
//! `bench/peers/launch.sh` into a cache outside the checkout. Their pinned
//! versions are read from that script and its requirements file, so the
//! report names what actually ran.

use std::path::PathBuf;

const LAUNCH_SH: &str = include_str!("../../peers/launch.sh");
const LITELLM_REQUIREMENTS: &str = include_str!("../../peers/litellm-requirements.txt");

/// `litellm[proxy]==X` in the requirements file.
pub const LITELLM_VERSION: &str = pinned(LITELLM_REQUIREMENTS, "litellm[proxy]==");
/// `PORTKEY_VERSION="X"` in the launch script.
pub const PORTKEY_VERSION: &str = pinned(LAUNCH_SH, "PORTKEY_VERSION=\"");

/// The version after the first `prefix` in `text`, up to a quote, space or
/// line end; "unknown" when absent.
const fn pinned(text: &'static str, prefix: &'static str) -> &'static str {
    let (t, p) = (text.as_bytes(), prefix.as_bytes());
    let mut i = 0;
    while i + p.len() <= t.len() {
        let mut j = 0;
        while j < p.len() && t[i + j] == p[j] {
            j += 1;
        }
        if j == p.len() {
            let start = i + j;
            let mut end = start;
            while end < t.len() && !matches!(t[end], b'"' | b' ' | b'\n' | b'\r' | b'#') {
                end += 1;
            }
            let (_, rest) = text.split_at(start);
            let (version, _) = rest.split_at(end - start);
            return version;
        }
        i += 1;
    }
    "unknown"
}

/// Where `scripts/bench gateway` says the peers are (it runs the launcher).
pub fn installed() -> (Option<PathBuf>, Option<PathBuf>) {
    let path = |var: &str| {
        std::env::var_os(var)
            .map(PathBuf::from)
            .filter(|p| p.is_file())
    };
    (
        path("TOLLGATE_BENCH_LITELLM"),
        path("TOLLGATE_BENCH_PORTKEY"),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_come_from_the_launcher_and_requirements() {
        assert_eq!(PORTKEY_VERSION, "1.15.2");
        assert!(
            LITELLM_VERSION
                .chars()
                .next()
                .is_some_and(|c| c.is_ascii_digit()),
            "{LITELLM_VERSION}"
        );
        assert_eq!(pinned("a==1\nx==2.0\n", "x=="), "2.0");
        assert_eq!(pinned("nothing", "x=="), "unknown");
    }
}
