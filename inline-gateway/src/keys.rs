//! Virtual keys: what callers authenticate with instead of provider keys.
//!
//! A key is shown once when issued (`tg-` + 32 random bytes, base64url) and
//! stored only as its SHA-256 ([`hash_key`]). A plain hash is enough here:
//! the secret is 256 random bits, so a leaked hash cannot be brute-forced
//! back into a key, and an unsalted hash keeps lookup a single map probe
//! (no per-key salt to try). A server-side pepper (HMAC) would add a second
//! secret to manage and rotate for no gain against this threat model.
//!
//! The gateway reads keys through [`KeyStore`], synchronously, on every
//! request; the collector implements it over an in-memory cache that its
//! admin API fills and persists. [`MemoryKeyStore`] serves tests.

use std::collections::HashMap;
use std::fmt;
use std::sync::{Arc, PoisonError, RwLock};

use base64::Engine as _;
use rand::RngCore;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::glob;

/// Prefix of every virtual key, so leaked keys are easy to spot and scan for.
pub const KEY_PREFIX: &str = "tg-";

/// Limits of one key, on top of the configured rules. Counted by the gateway
/// per key (calendar windows in UTC; per-minute ones rolling), read back
/// from the stored calls made with the key before its first call.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KeyLimits {
    /// Input plus output tokens per day.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tokens_per_day: Option<u64>,
    /// Input plus output tokens per month.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tokens_per_month: Option<u64>,
    /// US dollars per day.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cost_usd_per_day: Option<f64>,
    /// US dollars per month.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cost_usd_per_month: Option<f64>,
    /// Calls per rolling minute.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub requests_per_minute: Option<u64>,
    /// Input plus output tokens per rolling minute.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tokens_per_minute: Option<u64>,
}

impl KeyLimits {
    /// Whether no limit is set.
    pub fn is_empty(&self) -> bool {
        self == &KeyLimits::default()
    }
}

/// A virtual key as stored: never the secret itself, only its hash.
#[derive(Clone, PartialEq, Serialize, Deserialize)]
pub struct VirtualKey {
    /// Public id (`key_...`): what rows, rules (`scope = ["key"]`) and
    /// admin APIs name the key by. Not a secret.
    pub id: String,
    /// [`hash_key`] of the secret.
    pub hash: String,
    /// A human label, e.g. "search team CI".
    #[serde(default)]
    pub name: Option<String>,
    pub org: Option<String>,
    pub project: Option<String>,
    /// When set, the `X-Tollgate-User` header cannot change it.
    pub user: Option<String>,
    /// Globs over the requested `model` (a route name, `provider/model` or a
    /// bare model); empty = every model.
    #[serde(default)]
    pub allowed_models: Vec<String>,
    #[serde(default)]
    pub limits: KeyLimits,
    /// Unix nanoseconds.
    pub created_unix_nanos: i64,
    /// Unix nanoseconds; a revoked key is refused.
    #[serde(default)]
    pub revoked_unix_nanos: Option<i64>,
}

/// The hash is not the secret, but it is shown shortened anyway.
impl fmt::Debug for VirtualKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("VirtualKey")
            .field("id", &self.id)
            .field("hash", &self.hash.get(..8).unwrap_or(""))
            .field("name", &self.name)
            .field("org", &self.org)
            .field("project", &self.project)
            .field("user", &self.user)
            .field("allowed_models", &self.allowed_models)
            .field("limits", &self.limits)
            .field("created_unix_nanos", &self.created_unix_nanos)
            .field("revoked_unix_nanos", &self.revoked_unix_nanos)
            .finish()
    }
}

impl VirtualKey {
    /// A key for `secret` with id `id`, bound to nothing yet, created now.
    pub fn new(id: impl Into<String>, secret: &str) -> Self {
        Self {
            id: id.into(),
            hash: hash_key(secret),
            name: None,
            org: None,
            project: None,
            user: None,
            allowed_models: Vec::new(),
            limits: KeyLimits::default(),
            created_unix_nanos: crate::clock::now_unix_nanos(),
            revoked_unix_nanos: None,
        }
    }

    /// Whether the key may ask for `model` (any of `names`, the spellings of
    /// the same request: e.g. `openai/gpt-4o` and `gpt-4o`).
    pub fn allows_model<'a>(&self, names: impl IntoIterator<Item = &'a str> + Clone) -> bool {
        self.allowed_models.is_empty()
            || self
                .allowed_models
                .iter()
                .any(|p| names.clone().into_iter().any(|n| glob::matches(p, n)))
    }

    pub fn is_revoked(&self) -> bool {
        self.revoked_unix_nanos.is_some()
    }
}

/// Where the gateway finds virtual keys. Called on every request, on the
/// request's task: it must answer from memory and never block on I/O.
pub trait KeyStore: Send + Sync {
    /// The key whose [`hash_key`] is `hash`, revoked ones included (the
    /// gateway refuses those itself).
    fn lookup(&self, hash: &str) -> Option<Arc<VirtualKey>>;
}

/// SHA-256 of a virtual key, lowercase hex: what is stored and looked up.
pub fn hash_key(secret: &str) -> String {
    hex::encode(Sha256::digest(secret.as_bytes()))
}

/// A new virtual key: `tg-` and 32 random bytes in base64url (43 characters),
/// from the thread-local CSPRNG (ChaCha, seeded by the OS).
pub fn generate_key() -> String {
    let mut bytes = [0u8; 32];
    rand::rng().fill_bytes(&mut bytes);
    let mut key = String::with_capacity(KEY_PREFIX.len() + 43);
    key.push_str(KEY_PREFIX);
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode_string(bytes, &mut key);
    key
}

/// A [`KeyStore`] in a map, for tests and embedding.
#[derive(Debug, Default)]
pub struct MemoryKeyStore {
    keys: RwLock<HashMap<String, Arc<VirtualKey>>>,
}

impl MemoryKeyStore {
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds or replaces `key` (by hash).
    pub fn insert(&self, key: VirtualKey) {
        let mut keys = self.keys.write().unwrap_or_else(PoisonError::into_inner);
        keys.insert(key.hash.clone(), Arc::new(key));
    }

    /// Marks the key with id `id` revoked at `at_unix_nanos`; false if unknown.
    pub fn revoke(&self, id: &str, at_unix_nanos: i64) -> bool {
        let mut keys = self.keys.write().unwrap_or_else(PoisonError::into_inner);
        let Some(hash) = keys.values().find(|k| k.id == id).map(|k| k.hash.clone()) else {
            return false;
        };
        if let Some(k) = keys.get_mut(&hash) {
            let mut revoked = (**k).clone();
            revoked.revoked_unix_nanos = Some(at_unix_nanos);
            *k = Arc::new(revoked);
        }
        true
    }
}

impl KeyStore for MemoryKeyStore {
    fn lookup(&self, hash: &str) -> Option<Arc<VirtualKey>> {
        let keys = self.keys.read().unwrap_or_else(PoisonError::into_inner);
        keys.get(hash).cloned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hash_is_sha256_hex() {
        // echo -n abc | sha256sum
        assert_eq!(
            hash_key("abc"),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }

    #[test]
    fn generated_keys_are_prefixed_random_and_url_safe() {
        let a = generate_key();
        let b = generate_key();
        assert_ne!(a, b);
        assert!(a.starts_with("tg-"));
        assert_eq!(a.len(), 3 + 43);
        assert!(
            a[3..]
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
        );
    }

    #[test]
    fn store_finds_by_hash_and_revokes_by_id() {
        let store = MemoryKeyStore::new();
        let secret = generate_key();
        store.insert(VirtualKey::new("key_1", &secret));
        let found = store.lookup(&hash_key(&secret)).unwrap();
        assert_eq!(found.id, "key_1");
        assert!(!found.is_revoked());
        assert!(store.lookup(&hash_key("tg-other")).is_none());
        assert!(store.revoke("key_1", 5));
        assert!(store.lookup(&hash_key(&secret)).unwrap().is_revoked());
        assert!(!store.revoke("key_2", 5));
    }

    #[test]
    fn allowed_models_are_globs_over_any_spelling() {
        let mut k = VirtualKey::new("k", "s");
        assert!(k.allows_model(["anything"]));
        k.allowed_models = vec!["openai/*".into(), "support-chat".into()];
        assert!(k.allows_model(["openai/gpt-4o", "gpt-4o"]));
        assert!(k.allows_model(["support-chat"]));
        assert!(!k.allows_model(["claude-3-5-haiku", "anthropic/claude-3-5-haiku"]));
    }

    #[test]
    fn debug_shortens_the_hash() {
        let k = VirtualKey::new("k", "s");
        let shown = format!("{k:?}");
        assert!(!shown.contains(&k.hash));
    }
}
