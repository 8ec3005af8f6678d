//! Virtual keys: what callers authenticate with instead of provider keys.
//!
//! A key is shown once when issued (`tg-` + 32 random bytes, base64url) and
//! stored only as its SHA-256 ([`hash_key`]). A plain hash is enough here:
//! the secret is 256 random bits, so a leaked hash cannot be brute-forced
//! back into a key, and an unsalted hash keeps lookup a single map probe
//! (no per-key salt to try). A server-side pepper (HMAC) would add a second
//! secret to manage and rotate for no gain against this threat model.
//!
//! One key model serves every caller: each key has roles ([`Role`]: send
//! spans, call the gateway, read, administer) and a tenant scope (org,
//! optionally project and user). Keys made before roles existed are
//! gateway keys.
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

/// What a key may do. A key has one or more roles.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Send spans to the OTLP receivers, counted under the key's scope.
    Ingest,
    /// Call the inline gateway (what virtual keys always were).
    Gateway,
    /// Read the query API, the kill-switch state and its streams, within
    /// the key's scope.
    Read,
    /// Everything `read` may, plus the admin API (unscoped keys only).
    Admin,
}

impl Role {
    pub const ALL: [Role; 4] = [Role::Ingest, Role::Gateway, Role::Read, Role::Admin];

    pub fn as_str(self) -> &'static str {
        match self {
            Role::Ingest => "ingest",
            Role::Gateway => "gateway",
            Role::Read => "read",
            Role::Admin => "admin",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|r| r.as_str() == s)
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

fn gateway_only() -> Vec<Role> {
    vec![Role::Gateway]
}

/// Why a presented key is not accepted for what was asked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyRefusal {
    Revoked,
    Expired,
    /// The key has no role that allows this.
    Role(Role),
}

impl KeyRefusal {
    /// A short label for metrics and logs.
    pub fn reason(self) -> &'static str {
        match self {
            KeyRefusal::Revoked => "revoked",
            KeyRefusal::Expired => "expired",
            KeyRefusal::Role(_) => "role",
        }
    }
}

impl fmt::Display for KeyRefusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            KeyRefusal::Revoked => f.write_str("this key was revoked"),
            KeyRefusal::Expired => f.write_str("this key has expired"),
            KeyRefusal::Role(r) => write!(f, "this key does not have the `{r}` role"),
        }
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
    /// What the key may do; keys stored before roles existed are gateway keys.
    #[serde(default = "gateway_only")]
    pub roles: Vec<Role>,
    /// Unix nanoseconds.
    pub created_unix_nanos: i64,
    /// Unix nanoseconds; a revoked key is refused.
    #[serde(default)]
    pub revoked_unix_nanos: Option<i64>,
    /// Unix nanoseconds after which the key is refused.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires_unix_nanos: Option<i64>,
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
            .field("roles", &self.roles)
            .field("created_unix_nanos", &self.created_unix_nanos)
            .field("revoked_unix_nanos", &self.revoked_unix_nanos)
            .field("expires_unix_nanos", &self.expires_unix_nanos)
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
            roles: gateway_only(),
            created_unix_nanos: crate::clock::now_unix_nanos(),
            revoked_unix_nanos: None,
            expires_unix_nanos: None,
        }
    }

    /// Whether one of the key's roles allows `role` (`admin` includes `read`).
    pub fn has_role(&self, role: Role) -> bool {
        self.roles
            .iter()
            .any(|&r| r == role || (r == Role::Admin && role == Role::Read))
    }

    /// Whether the key may be used at all at `now_unix_nanos`: neither
    /// revoked nor expired.
    pub fn usable(&self, now_unix_nanos: i64) -> Result<(), KeyRefusal> {
        if self.is_revoked() {
            return Err(KeyRefusal::Revoked);
        }
        if self
            .expires_unix_nanos
            .is_some_and(|at| now_unix_nanos >= at)
        {
            return Err(KeyRefusal::Expired);
        }
        Ok(())
    }

    /// Whether the key may be used for `role` at `now_unix_nanos`.
    pub fn permits(&self, role: Role, now_unix_nanos: i64) -> Result<(), KeyRefusal> {
        self.usable(now_unix_nanos)?;
        if !self.has_role(role) {
            return Err(KeyRefusal::Role(role));
        }
        Ok(())
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

/// Why a key with `roles` cannot have this scope, if it cannot.
pub fn check_roles_and_scope(
    roles: &[Role],
    org: Option<&str>,
    project: Option<&str>,
    user: Option<&str>,
) -> Result<(), String> {
    if roles.is_empty() {
        return Err("`roles` is empty: give at least one of ingest, gateway, read, admin".into());
    }
    let scoped = org.is_some() || project.is_some() || user.is_some();
    if roles.contains(&Role::Admin) && scoped {
        return Err(
            "an `admin` key cannot have a scope (org, project, user): it administers every tenant"
                .into(),
        );
    }
    if project.is_some() && org.is_none() && roles.iter().any(|r| *r != Role::Gateway) {
        // Project names are unique within an org, not across orgs.
        return Err("a key scoped to a project needs its `org` too".into());
    }
    Ok(())
}

/// Id prefix of keys written in the collector's config (`[[auth.keys]]`).
pub const CONFIG_KEY_PREFIX: &str = "cfg_";

/// Where the gateway finds virtual keys. Called on every request, on the
/// request's task: it must answer from memory and never block on I/O.
pub trait KeyStore: Send + Sync {
    /// The key whose [`hash_key`] is `hash`, revoked ones included (the
    /// gateway refuses those itself).
    fn lookup(&self, hash: &str) -> Option<Arc<VirtualKey>>;
}

/// The token of an `Authorization: Bearer <token>` header value (the
/// scheme in any case); `None` for another scheme or an empty token.
pub fn bearer(value: &str) -> Option<&str> {
    let (scheme, token) = value.trim().split_once(' ')?;
    let token = token.trim();
    (scheme.eq_ignore_ascii_case("bearer") && !token.is_empty()).then_some(token)
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
    fn roles_expiry_and_revocation_decide_what_a_key_permits() {
        let mut k = VirtualKey::new("k", "s");
        assert_eq!(k.permits(Role::Gateway, 10), Ok(()));
        assert_eq!(
            k.permits(Role::Ingest, 10),
            Err(KeyRefusal::Role(Role::Ingest))
        );
        k.roles = vec![Role::Admin];
        assert_eq!(k.permits(Role::Read, 10), Ok(()));
        assert_eq!(k.permits(Role::Admin, 10), Ok(()));
        assert_eq!(
            k.permits(Role::Gateway, 10),
            Err(KeyRefusal::Role(Role::Gateway))
        );
        k.expires_unix_nanos = Some(10);
        assert_eq!(k.permits(Role::Admin, 9), Ok(()));
        assert_eq!(k.permits(Role::Admin, 10), Err(KeyRefusal::Expired));
        k.revoked_unix_nanos = Some(5);
        assert_eq!(k.permits(Role::Admin, 9), Err(KeyRefusal::Revoked));
    }

    #[test]
    fn bearer_tokens_are_read_in_any_case_of_the_scheme() {
        assert_eq!(bearer("Bearer tg-abc"), Some("tg-abc"));
        assert_eq!(bearer("  bearer   tg-abc "), Some("tg-abc"));
        assert_eq!(bearer("Basic dXNlcjpwYXNz"), None);
        assert_eq!(bearer("Bearer "), None);
        assert_eq!(bearer("tg-abc"), None);
    }

    #[test]
    fn keys_stored_before_roles_are_gateway_keys() {
        let stored = r#"{"id":"key_1","hash":"ab","org":"acme","project":null,"user":null,
            "created_unix_nanos":1}"#;
        let k: VirtualKey = serde_json::from_str(stored).unwrap();
        assert_eq!(k.roles, vec![Role::Gateway]);
        assert_eq!(k.expires_unix_nanos, None);
    }

    #[test]
    fn debug_shortens_the_hash() {
        let k = VirtualKey::new("k", "s");
        let shown = format!("{k:?}");
        assert!(!shown.contains(&k.hash));
    }
}
