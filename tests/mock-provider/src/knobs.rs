//! Per-request knobs: `x-mock-*` request headers that override the server
//! defaults, so one running mock can serve many differently-shaped test cases.

use std::time::Duration;

use axum::http::HeaderMap;

/// Delay before the response headers, in milliseconds.
pub const LATENCY_MS: &str = "x-mock-latency-ms";
/// Streaming: delay before the first chunk, in milliseconds.
pub const TTFT_MS: &str = "x-mock-ttft-ms";
/// Streaming: delay between content chunks, in milliseconds.
pub const INTER_CHUNK_MS: &str = "x-mock-inter-chunk-ms";
/// Answer with this HTTP status (400..=599) in the provider's error envelope.
pub const STATUS: &str = "x-mock-status";
/// `1`/`true`: never answer (until the mock shuts down); for timeout tests.
pub const HANG: &str = "x-mock-hang";
/// Exact number of visible output tokens (words).
pub const OUTPUT_TOKENS: &str = "x-mock-output-tokens";
/// Prompt tokens reported as read from the prompt cache.
pub const CACHE_READ_TOKENS: &str = "x-mock-cache-read-tokens";
/// Prompt tokens reported as written to the prompt cache.
pub const CACHE_WRITE_TOKENS: &str = "x-mock-cache-write-tokens";
/// Hidden reasoning tokens, added to the completion/output token count.
pub const REASONING_TOKENS: &str = "x-mock-reasoning-tokens";
/// Streaming: drop the connection after this many content chunks.
pub const CUT_AFTER_CHUNKS: &str = "x-mock-cut-after-chunks";
/// `1`/`true`: count each non-ASCII character of the request text as a
/// token, as real tokenizers about do for CJK text (ASCII stays at four
/// characters a token).
pub const WIDE_CHAR_TOKENS: &str = "x-mock-wide-char-tokens";

/// The knobs of one request; `None`/zero means "use the server default".
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Knobs {
    /// [`LATENCY_MS`].
    pub latency: Option<Duration>,
    /// [`TTFT_MS`].
    pub ttft: Option<Duration>,
    /// [`INTER_CHUNK_MS`].
    pub inter_chunk: Option<Duration>,
    /// [`STATUS`].
    pub status: Option<u16>,
    /// [`HANG`].
    pub hang: bool,
    /// [`OUTPUT_TOKENS`].
    pub output_tokens: Option<u32>,
    /// [`CACHE_READ_TOKENS`].
    pub cache_read_tokens: u32,
    /// [`CACHE_WRITE_TOKENS`].
    pub cache_write_tokens: u32,
    /// [`REASONING_TOKENS`].
    pub reasoning_tokens: u32,
    /// [`CUT_AFTER_CHUNKS`].
    pub cut_after_chunks: Option<u32>,
    /// [`WIDE_CHAR_TOKENS`].
    pub wide_char_tokens: bool,
}

/// A knob header whose value cannot be understood. Answered with a 400 so a
/// typo in a test shows up as a failure instead of a silently ignored knob.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("header {header}: {value:?} is not {expected}")]
pub struct KnobError {
    /// The header name.
    pub header: &'static str,
    /// Its value, lossily decoded.
    pub value: String,
    /// What was expected instead.
    pub expected: &'static str,
}

impl Knobs {
    /// Reads every `x-mock-*` header; absent headers keep the default.
    pub fn from_headers(headers: &HeaderMap) -> Result<Self, KnobError> {
        let millis = |name| number::<u64>(headers, name).map(|v| v.map(Duration::from_millis));
        let status = number::<u16>(headers, STATUS)?;
        if let Some(code) = status
            && !(400..=599).contains(&code)
        {
            return Err(KnobError {
                header: STATUS,
                value: code.to_string(),
                expected: "an error status between 400 and 599",
            });
        }
        Ok(Self {
            latency: millis(LATENCY_MS)?,
            ttft: millis(TTFT_MS)?,
            inter_chunk: millis(INTER_CHUNK_MS)?,
            status,
            hang: flag(headers, HANG)?,
            output_tokens: number(headers, OUTPUT_TOKENS)?,
            cache_read_tokens: number(headers, CACHE_READ_TOKENS)?.unwrap_or(0),
            cache_write_tokens: number(headers, CACHE_WRITE_TOKENS)?.unwrap_or(0),
            reasoning_tokens: number(headers, REASONING_TOKENS)?.unwrap_or(0),
            cut_after_chunks: number(headers, CUT_AFTER_CHUNKS)?,
            wide_char_tokens: flag(headers, WIDE_CHAR_TOKENS)?,
        })
    }
}

fn raw<'a>(headers: &'a HeaderMap, name: &'static str) -> Option<std::borrow::Cow<'a, str>> {
    headers
        .get(name)
        .map(|value| String::from_utf8_lossy(value.as_bytes()))
}

fn number<T: std::str::FromStr>(
    headers: &HeaderMap,
    name: &'static str,
) -> Result<Option<T>, KnobError> {
    let Some(value) = raw(headers, name) else {
        return Ok(None);
    };
    value.trim().parse().map(Some).map_err(|_| KnobError {
        header: name,
        value: value.into_owned(),
        expected: "a non-negative integer",
    })
}

fn flag(headers: &HeaderMap, name: &'static str) -> Result<bool, KnobError> {
    let Some(value) = raw(headers, name) else {
        return Ok(false);
    };
    match value.trim().to_ascii_lowercase().as_str() {
        "1" | "true" | "yes" => Ok(true),
        "0" | "false" | "no" | "" => Ok(false),
        _ => Err(KnobError {
            header: name,
            value: value.into_owned(),
            expected: "1/true or 0/false",
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    fn headers(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (name, value) in pairs {
            map.insert(*name, HeaderValue::from_static(value));
        }
        map
    }

    #[test]
    fn absent_headers_mean_defaults() {
        assert_eq!(Knobs::from_headers(&HeaderMap::new()), Ok(Knobs::default()));
    }

    #[test]
    fn every_knob_is_read() {
        let knobs = Knobs::from_headers(&headers(&[
            (LATENCY_MS, "15"),
            (TTFT_MS, "7"),
            (INTER_CHUNK_MS, "3"),
            (STATUS, "429"),
            (HANG, "true"),
            (OUTPUT_TOKENS, "5"),
            (CACHE_READ_TOKENS, "100"),
            (CACHE_WRITE_TOKENS, "50"),
            (REASONING_TOKENS, "9"),
            (CUT_AFTER_CHUNKS, "2"),
            (WIDE_CHAR_TOKENS, "1"),
        ]));
        assert_eq!(
            knobs,
            Ok(Knobs {
                latency: Some(Duration::from_millis(15)),
                ttft: Some(Duration::from_millis(7)),
                inter_chunk: Some(Duration::from_millis(3)),
                status: Some(429),
                hang: true,
                output_tokens: Some(5),
                cache_read_tokens: 100,
                cache_write_tokens: 50,
                reasoning_tokens: 9,
                cut_after_chunks: Some(2),
                wide_char_tokens: true,
            })
        );
    }

    #[test]
    fn bad_values_are_errors() {
        let err = Knobs::from_headers(&headers(&[(OUTPUT_TOKENS, "many")]));
        assert_eq!(
            err,
            Err(KnobError {
                header: OUTPUT_TOKENS,
                value: "many".into(),
                expected: "a non-negative integer"
            })
        );
        assert!(Knobs::from_headers(&headers(&[(STATUS, "200")])).is_err());
        assert!(Knobs::from_headers(&headers(&[(HANG, "maybe")])).is_err());
    }
}
