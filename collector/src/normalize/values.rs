//! Reading OTLP attribute values as the types the record needs.
//!
//! Instrumentations disagree on types (token counts arrive as ints, doubles
//! or strings), so every reader accepts all sensible encodings and reports a
//! value that cannot be one, rather than guessing.

use std::borrow::Cow;

use opentelemetry_proto::tonic::common::v1::AnyValue;
use opentelemetry_proto::tonic::common::v1::any_value::Value;

/// Longest string kept in a row; longer values are cut at a char boundary.
pub(crate) const MAX_STRING_BYTES: usize = 256;

/// Why a token count (or other number) was refused.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum BadNumber {
    Negative,
    NotANumber,
}

/// A string value, trimmed and cut to [`MAX_STRING_BYTES`]; `None` when
/// empty. Non-strings are rendered (ints, bools), arrays give their first
/// element (finish reasons).
pub(crate) fn as_str(v: &AnyValue) -> Option<Cow<'_, str>> {
    fn kept(s: &str) -> Option<&str> {
        let s = truncate(s.trim());
        (!s.is_empty()).then_some(s)
    }
    let rendered = |s: String| kept(&s).map(|k| Cow::Owned(k.to_owned()));
    match v.value.as_ref()? {
        Value::StringValue(s) => kept(s).map(Cow::Borrowed),
        Value::IntValue(i) => rendered(i.to_string()),
        Value::BoolValue(b) => rendered(b.to_string()),
        Value::DoubleValue(d) => rendered(d.to_string()),
        Value::ArrayValue(a) => a.values.first().and_then(as_str),
        // Profiles-only string-table references and structured values are not strings here.
        _ => None,
    }
}

/// [`as_str`], owned.
pub(crate) fn as_string(v: &AnyValue) -> Option<String> {
    as_str(v).map(Cow::into_owned)
}

/// The string of `v` when [`as_string`] would return it unchanged (a
/// string, or an array's first string, with nothing to trim or cut), to be
/// moved out instead of copied.
pub(crate) fn stored_as_is(v: &mut AnyValue) -> Option<&mut String> {
    let s = match v.value.as_mut()? {
        Value::StringValue(s) => s,
        Value::ArrayValue(a) => match a.values.first_mut()?.value.as_mut()? {
            Value::StringValue(s) => s,
            _ => return None,
        },
        _ => return None,
    };
    let unchanged = !s.is_empty() && s.len() <= MAX_STRING_BYTES && s.trim().len() == s.len();
    unchanged.then_some(s)
}

/// Cuts `s` to at most [`MAX_STRING_BYTES`] bytes at a char boundary.
pub(crate) fn truncate(s: &str) -> &str {
    if s.len() <= MAX_STRING_BYTES {
        return s;
    }
    let mut end = MAX_STRING_BYTES;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

/// A non-negative integer count.
pub(crate) fn as_count(v: &AnyValue) -> Result<u64, BadNumber> {
    match v.value.as_ref() {
        Some(Value::IntValue(i)) => u64::try_from(*i).map_err(|_| BadNumber::Negative),
        Some(Value::DoubleValue(d)) => double_to_count(*d),
        Some(Value::StringValue(s)) => {
            let s = s.trim();
            if let Ok(i) = s.parse::<i64>() {
                return u64::try_from(i).map_err(|_| BadNumber::Negative);
            }
            s.parse::<f64>()
                .map_err(|_| BadNumber::NotANumber)
                .and_then(double_to_count)
        }
        _ => Err(BadNumber::NotANumber),
    }
}

fn double_to_count(d: f64) -> Result<u64, BadNumber> {
    if !d.is_finite() {
        return Err(BadNumber::NotANumber);
    }
    if d < 0.0 {
        return Err(BadNumber::Negative);
    }
    if d >= u64::MAX as f64 {
        return Ok(u64::MAX);
    }
    Ok(d.round() as u64)
}

/// A finite, non-negative number (costs, milliseconds).
pub(crate) fn as_non_negative_f64(v: &AnyValue) -> Result<f64, BadNumber> {
    let d = match v.value.as_ref() {
        Some(Value::DoubleValue(d)) => *d,
        Some(Value::IntValue(i)) => *i as f64,
        Some(Value::StringValue(s)) => {
            s.trim().parse::<f64>().map_err(|_| BadNumber::NotANumber)?
        }
        _ => return Err(BadNumber::NotANumber),
    };
    if !d.is_finite() {
        return Err(BadNumber::NotANumber);
    }
    if d < 0.0 {
        return Err(BadNumber::Negative);
    }
    Ok(d)
}

/// A boolean; accepts `true`/`false` strings too.
pub(crate) fn as_bool(v: &AnyValue) -> Option<bool> {
    match v.value.as_ref()? {
        Value::BoolValue(b) => Some(*b),
        Value::StringValue(s) => match s.trim().to_ascii_lowercase().as_str() {
            "true" | "1" => Some(true),
            "false" | "0" => Some(false),
            _ => None,
        },
        Value::IntValue(i) => Some(*i != 0),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use opentelemetry_proto::tonic::common::v1::ArrayValue;

    fn v(value: Value) -> AnyValue {
        AnyValue { value: Some(value) }
    }

    #[test]
    fn counts_accept_every_encoding() {
        assert_eq!(as_count(&v(Value::IntValue(42))), Ok(42));
        assert_eq!(as_count(&v(Value::DoubleValue(42.0))), Ok(42));
        assert_eq!(as_count(&v(Value::StringValue(" 42 ".into()))), Ok(42));
        assert_eq!(as_count(&v(Value::StringValue("42.0".into()))), Ok(42));
        assert_eq!(as_count(&v(Value::IntValue(-1))), Err(BadNumber::Negative));
        assert_eq!(
            as_count(&v(Value::DoubleValue(-3.5))),
            Err(BadNumber::Negative)
        );
        assert_eq!(
            as_count(&v(Value::DoubleValue(f64::NAN))),
            Err(BadNumber::NotANumber)
        );
        assert_eq!(
            as_count(&v(Value::StringValue("many".into()))),
            Err(BadNumber::NotANumber)
        );
        assert_eq!(
            as_count(&v(Value::BoolValue(true))),
            Err(BadNumber::NotANumber)
        );
    }

    #[test]
    fn strings_are_cut_at_a_char_boundary() {
        let long = "é".repeat(300);
        let s = as_string(&v(Value::StringValue(long))).unwrap();
        assert!(s.len() <= MAX_STRING_BYTES);
        assert!(s.chars().all(|c| c == 'é'));
        assert_eq!(as_string(&v(Value::StringValue("   ".into()))), None);
    }

    #[test]
    fn arrays_give_their_first_element() {
        let arr = v(Value::ArrayValue(ArrayValue {
            values: vec![
                v(Value::StringValue("stop".into())),
                v(Value::StringValue("length".into())),
            ],
        }));
        assert_eq!(as_string(&arr).as_deref(), Some("stop"));
    }

    #[test]
    fn costs_must_be_finite_and_non_negative() {
        assert_eq!(as_non_negative_f64(&v(Value::DoubleValue(0.25))), Ok(0.25));
        assert_eq!(
            as_non_negative_f64(&v(Value::DoubleValue(-0.25))),
            Err(BadNumber::Negative)
        );
        assert_eq!(
            as_non_negative_f64(&v(Value::DoubleValue(f64::INFINITY))),
            Err(BadNumber::NotANumber)
        );
    }
}
