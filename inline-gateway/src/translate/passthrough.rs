//! Same-dialect requests: the body goes upstream as the caller wrote it,
//! except for the top-level fields the gateway sets (`model`, OpenAI's
//! `stream_options`). Values are copied as raw JSON, never parsed into trees.

use std::borrow::Cow;
use std::fmt;

use serde::Deserialize;
use serde::de::{MapAccess, Visitor};
use serde_json::value::RawValue;

use crate::dialect::Operation;

/// The few request fields the gateway reads; everything else is skipped.
#[derive(Debug, Deserialize)]
pub(crate) struct RequestPeek<'a> {
    #[serde(borrow, default)]
    pub model: Option<Cow<'a, str>>,
    #[serde(default)]
    pub stream: Option<bool>,
    #[serde(default)]
    pub max_tokens: Option<u64>,
    #[serde(default)]
    pub max_completion_tokens: Option<u64>,
    /// The Responses API's output cap (reasoning included).
    #[serde(default)]
    pub max_output_tokens: Option<u64>,
    /// OpenAI: how many choices to generate, each up to the cap.
    #[serde(default)]
    pub n: Option<u64>,
    /// Kept whole: the gateway adds `include_usage` and keeps the rest.
    #[serde(default)]
    pub stream_options: Option<serde_json::Map<String, serde_json::Value>>,
}

impl RequestPeek<'_> {
    pub(crate) fn stream(&self) -> bool {
        self.stream == Some(true)
    }

    /// The output limit the request sets (OpenAI's newer name wins).
    pub(crate) fn max_output(&self) -> Option<u64> {
        self.max_completion_tokens.or(self.max_tokens)
    }

    /// The output limit a request for `op` sets, in that endpoint's field.
    pub(crate) fn cap(&self, op: Operation) -> Option<u64> {
        match op {
            Operation::Responses => self.max_output_tokens,
            Operation::Chat | Operation::Messages | Operation::Embeddings => self.max_output(),
        }
    }

    pub(crate) fn wants_usage(&self) -> bool {
        self.stream_options
            .as_ref()
            .and_then(|o| o.get("include_usage"))
            .and_then(serde_json::Value::as_bool)
            .unwrap_or(false)
    }
}

/// A same-dialect request for the upstream: `body` with `model` set to the
/// link's model; when `ask_usage` (an OpenAI stream), the caller's
/// `stream_options` kept with `include_usage` turned on (the gateway needs
/// the usage chunk, and passes it on only when the caller asked for it
/// too); and when `cap` is given (the caller set no output cap), that
/// field set to that many tokens, so the provider stops where the
/// reservation does.
pub(crate) fn upstream_body(
    body: &[u8],
    peek: &RequestPeek<'_>,
    model: &str,
    ask_usage: bool,
    cap: Option<(&str, u64)>,
) -> Result<Vec<u8>, serde_json::Error> {
    let model_json = serde_json::to_string(model)?;
    let mut set: Vec<(&str, &str)> = Vec::with_capacity(3);
    set.push(("model", &model_json));
    let options_json;
    if ask_usage {
        let mut options = peek.stream_options.clone().unwrap_or_default();
        options.insert("include_usage".into(), serde_json::Value::Bool(true));
        options_json = serde_json::to_string(&options)?;
        set.push(("stream_options", &options_json));
    }
    let cap_json;
    if let Some((field, tokens)) = cap {
        cap_json = tokens.to_string();
        set.push((field, &cap_json));
    }
    rewrite_top_level(body, &set, &[])
}

/// A key as it appears in the body: borrowed unless it had escapes.
struct Key<'a>(Cow<'a, str>);

impl<'de> Deserialize<'de> for Key<'de> {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Key<'de>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a string")
            }
            fn visit_borrowed_str<E>(self, v: &'de str) -> Result<Self::Value, E> {
                Ok(Key(Cow::Borrowed(v)))
            }
            fn visit_str<E>(self, v: &str) -> Result<Self::Value, E> {
                Ok(Key(Cow::Owned(v.to_owned())))
            }
        }
        d.deserialize_str(V)
    }
}

/// A JSON object's top-level entries, values left raw.
struct RawObject<'a>(Vec<(Key<'a>, &'a RawValue)>);

impl<'de> Deserialize<'de> for RawObject<'de> {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = RawObject<'de>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a JSON object")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
                let mut entries = Vec::with_capacity(map.size_hint().unwrap_or(8));
                while let Some(entry) = map.next_entry::<Key<'de>, &'de RawValue>()? {
                    entries.push(entry);
                }
                Ok(RawObject(entries))
            }
        }
        d.deserialize_map(V)
    }
}

/// `body` (a JSON object) with the top-level fields of `set` replaced (or
/// added), each given as raw JSON, and those of `remove` dropped.
pub(crate) fn rewrite_top_level(
    body: &[u8],
    set: &[(&str, &str)],
    remove: &[&str],
) -> Result<Vec<u8>, serde_json::Error> {
    let obj: RawObject<'_> = serde_json::from_slice(body)?;
    let mut out = Vec::with_capacity(body.len() + 64);
    out.push(b'{');
    let mut first = true;
    let mut sep = |out: &mut Vec<u8>| {
        if !first {
            out.push(b',');
        }
        first = false;
    };
    for (key, value) in &obj.0 {
        let k = key.0.as_ref();
        if remove.contains(&k) || set.iter().any(|(s, _)| *s == k) {
            continue;
        }
        sep(&mut out);
        serde_json::to_writer(&mut out, k)?;
        out.push(b':');
        out.extend_from_slice(value.get().as_bytes());
    }
    for (k, raw) in set {
        sep(&mut out);
        serde_json::to_writer(&mut out, k)?;
        out.push(b':');
        out.extend_from_slice(raw.as_bytes());
    }
    out.push(b'}');
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::{Value, json};

    #[test]
    fn replaces_adds_and_removes_top_level_fields_only() {
        let body = br#"{"model":"support-chat","messages":[{"role":"user","content":"hi \"x\""}],"stream":true,"odd\"key":1}"#;
        let out = rewrite_top_level(
            body,
            &[
                ("model", "\"gpt-4o-mini\""),
                ("stream_options", "{\"include_usage\":true}"),
            ],
            &["odd\"key"],
        )
        .unwrap();
        let v: Value = serde_json::from_slice(&out).unwrap();
        assert_eq!(
            v,
            json!({"messages": [{"role": "user", "content": "hi \"x\""}], "stream": true,
                   "model": "gpt-4o-mini", "stream_options": {"include_usage": true}})
        );
    }

    #[test]
    fn not_an_object_is_an_error() {
        assert!(rewrite_top_level(b"[1]", &[], &[]).is_err());
        assert!(rewrite_top_level(b"{", &[], &[]).is_err());
    }

    #[test]
    fn peek_reads_the_fields_the_gateway_needs() {
        let p: RequestPeek<'_> = serde_json::from_str(
            r#"{"model":"m","stream":true,"max_tokens":5,"max_completion_tokens":7,
                "stream_options":{"include_usage":true},"messages":[]}"#,
        )
        .unwrap();
        assert_eq!(p.model.as_deref(), Some("m"));
        assert!(p.stream());
        assert_eq!(p.max_output(), Some(7));
        assert!(p.wants_usage());
        assert_eq!(p.n, None);
        assert_eq!(p.cap(Operation::Chat), Some(7));
        assert_eq!(p.cap(Operation::Responses), None);
        let r: RequestPeek<'_> = serde_json::from_str(
            r#"{"model":"m","input":"hi","max_output_tokens":9,"max_tokens":1}"#,
        )
        .unwrap();
        assert_eq!(r.cap(Operation::Responses), Some(9));
    }

    #[test]
    fn a_missing_cap_is_sent_in_the_field_given() {
        let body = br#"{"model":"r","messages":[],"n":2}"#;
        let p: RequestPeek<'_> = serde_json::from_slice(body).unwrap();
        assert_eq!((p.max_output(), p.n), (None, Some(2)));
        let out = upstream_body(
            body,
            &p,
            "gpt-5",
            false,
            Some(("max_completion_tokens", 512)),
        )
        .unwrap();
        let v: Value = serde_json::from_slice(&out).unwrap();
        assert_eq!(
            v,
            json!({"model": "gpt-5", "messages": [], "n": 2, "max_completion_tokens": 512})
        );
        let out = upstream_body(body, &p, "m", true, None).unwrap();
        let v: Value = serde_json::from_slice(&out).unwrap();
        assert_eq!(v["stream_options"], json!({"include_usage": true}));
        assert!(v.get("max_tokens").is_none() && v.get("max_completion_tokens").is_none());
    }
}
