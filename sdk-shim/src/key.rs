//! Tollgate keys and how they travel: `Authorization: Bearer <key>`, as an
//! HTTP header or as gRPC metadata, always marked sensitive so that no
//! `Debug` output or log line shows it.
//!
//! One key type serves every role: the gateway's virtual keys, the
//! collector's `read` keys (kill-switch, API) and `ingest` keys (OTLP).

use std::fmt;

use reqwest::header::{HeaderValue, InvalidHeaderValue};
use tonic::metadata::{AsciiMetadataValue, errors::InvalidMetadataValue};

/// The variable a [`KillSwitchConfig`](crate::KillSwitchConfig) takes its
/// `read` key from when none is given; the `tollgate` CLI reads it too.
pub const KEY_ENV: &str = "TOLLGATE_KEY";

/// A Tollgate key (`tg-...`): a virtual key for the gateway, or a `read`
/// or `ingest` key for the collector. Never printed.
#[derive(Clone, PartialEq, Eq)]
pub struct VirtualKey(pub String);

impl fmt::Debug for VirtualKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("VirtualKey(..)")
    }
}

impl From<String> for VirtualKey {
    fn from(key: String) -> Self {
        Self(key)
    }
}

impl From<&str> for VirtualKey {
    fn from(key: &str) -> Self {
        Self(key.to_owned())
    }
}

impl VirtualKey {
    /// The key from `name` in `lookup` (the process environment in
    /// practice); unset and empty are both `None`.
    pub(crate) fn from_lookup(
        name: &str,
        lookup: impl FnOnce(&str) -> Option<String>,
    ) -> Option<Self> {
        lookup(name).filter(|key| !key.is_empty()).map(Self)
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// `Bearer <key>` as a sensitive HTTP header value.
    pub(crate) fn bearer_header(&self) -> Result<HeaderValue, InvalidHeaderValue> {
        bearer(&self.0)
    }

    /// `Bearer <key>` as sensitive gRPC metadata (for `authorization`).
    pub(crate) fn bearer_metadata(&self) -> Result<AsciiMetadataValue, InvalidMetadataValue> {
        let mut value = AsciiMetadataValue::try_from(format!("Bearer {}", self.0))?;
        value.set_sensitive(true);
        Ok(value)
    }
}

/// `Bearer <token>` as a sensitive HTTP header value, for any credential
/// (a Tollgate key or a provider's API key).
pub(crate) fn bearer(token: &str) -> Result<HeaderValue, InvalidHeaderValue> {
    let mut value = HeaderValue::from_str(&format!("Bearer {token}"))?;
    value.set_sensitive(true);
    Ok(value)
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECRET: &str = "tg-s3cr3t-value";

    #[test]
    fn debug_never_shows_the_key() {
        let key = VirtualKey::from(SECRET);
        assert_eq!(format!("{key:?}"), "VirtualKey(..)");
        assert_eq!(format!("{:?}", Some(&key)), "Some(VirtualKey(..))");
    }

    #[test]
    fn bearer_values_carry_the_key_and_are_sensitive() {
        let key = VirtualKey::from(SECRET);
        let header = key.bearer_header().unwrap();
        assert_eq!(header, "Bearer tg-s3cr3t-value");
        assert!(header.is_sensitive());
        assert!(!format!("{header:?}").contains(SECRET));

        let metadata = key.bearer_metadata().unwrap();
        assert_eq!(metadata.to_str().unwrap(), "Bearer tg-s3cr3t-value");
        assert!(metadata.is_sensitive());
        assert!(!format!("{metadata:?}").contains(SECRET));
    }

    #[test]
    fn a_key_that_cannot_be_a_header_is_an_error() {
        let key = VirtualKey::from("tg-line\nbreak");
        assert!(key.bearer_header().is_err());
        assert!(key.bearer_metadata().is_err());
    }

    #[test]
    fn unset_and_empty_variables_give_no_key() {
        let lookup = |value: Option<&'static str>| move |_: &str| value.map(str::to_owned);
        assert_eq!(VirtualKey::from_lookup(KEY_ENV, lookup(None)), None);
        assert_eq!(VirtualKey::from_lookup(KEY_ENV, lookup(Some(""))), None);
        assert_eq!(
            VirtualKey::from_lookup(KEY_ENV, lookup(Some(SECRET))),
            Some(VirtualKey::from(SECRET))
        );
        let mut asked = String::new();
        let _ = VirtualKey::from_lookup(KEY_ENV, |name: &str| {
            asked = name.to_owned();
            None
        });
        assert_eq!(asked, "TOLLGATE_KEY");
    }
}
