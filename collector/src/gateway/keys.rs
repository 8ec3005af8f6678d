//! Virtual keys: created and revoked through the admin API, stored as
//! admin actions (hash only) and looked up in memory by hash.

use std::collections::HashMap;
use std::sync::{Arc, PoisonError, RwLock};
use std::time::{SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};
use tollgate_gateway::{KeyLimits, KeyStore, VirtualKey, generate_key};

use crate::admin::{AdminAction, AdminLog};
use crate::query::QueryError;

fn now_nanos() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_nanos()).unwrap_or(i64::MAX))
}

/// What `POST /admin/v1/keys` takes.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NewKey {
    #[serde(default)]
    pub name: Option<String>,
    #[serde(default)]
    pub org: Option<String>,
    #[serde(default)]
    pub project: Option<String>,
    #[serde(default)]
    pub user: Option<String>,
    /// Globs of models the key may use (`openai/*`, `*-mini`); empty = any.
    #[serde(default)]
    pub allowed_models: Vec<String>,
    #[serde(default)]
    pub limits: KeyLimits,
}

/// A key as listed: never its secret, nor its hash.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct KeyInfo {
    pub id: String,
    pub name: Option<String>,
    pub org: Option<String>,
    pub project: Option<String>,
    pub user: Option<String>,
    pub allowed_models: Vec<String>,
    pub limits: KeyLimits,
    pub created_unix_nanos: i64,
    pub revoked_unix_nanos: Option<i64>,
}

impl From<&VirtualKey> for KeyInfo {
    fn from(k: &VirtualKey) -> Self {
        Self {
            id: k.id.clone(),
            name: k.name.clone(),
            org: k.org.clone(),
            project: k.project.clone(),
            user: k.user.clone(),
            allowed_models: k.allowed_models.clone(),
            limits: k.limits.clone(),
            created_unix_nanos: k.created_unix_nanos,
            revoked_unix_nanos: k.revoked_unix_nanos,
        }
    }
}

/// Virtual keys by hash, kept in memory and stored as admin actions.
pub struct KeyCache {
    by_hash: RwLock<HashMap<String, Arc<VirtualKey>>>,
    log: Arc<dyn AdminLog>,
}

impl KeyCache {
    /// Loads the keys created (and revoked) so far from `log`.
    pub async fn load(log: Arc<dyn AdminLog>) -> Result<Self, QueryError> {
        let cache = Self {
            by_hash: RwLock::new(HashMap::new()),
            log,
        };
        for action in cache.log.load(now_nanos()).await? {
            cache.apply(&action);
        }
        Ok(cache)
    }

    fn apply(&self, action: &AdminAction) {
        let mut keys = self.by_hash.write().unwrap_or_else(PoisonError::into_inner);
        match action {
            AdminAction::CreateKey { key } => {
                keys.insert(key.hash.clone(), Arc::new(key.clone()));
            }
            AdminAction::RevokeKey { id, at_unix_nanos } => {
                if let Some(k) = keys.values_mut().find(|k| &k.id == id) {
                    let mut revoked = (**k).clone();
                    revoked.revoked_unix_nanos = Some(*at_unix_nanos);
                    *k = Arc::new(revoked);
                }
            }
            _ => {}
        }
    }

    /// Creates a key; returns its secret (shown once) and what is kept.
    pub async fn create(&self, new: NewKey) -> Result<(String, KeyInfo), QueryError> {
        let secret = generate_key();
        let id = format!("key_{:016x}", rand::random::<u64>());
        let mut key = VirtualKey::new(id, &secret);
        key.name = new.name;
        key.org = new.org;
        key.project = new.project;
        key.user = new.user;
        key.allowed_models = new.allowed_models;
        key.limits = new.limits;
        let info = KeyInfo::from(&key);
        let action = AdminAction::CreateKey { key };
        self.log.record(&action).await?;
        self.apply(&action);
        Ok((secret, info))
    }

    /// Revokes key `id`: `Ok(false)` if there is no such key.
    pub async fn revoke(&self, id: &str) -> Result<bool, QueryError> {
        if !self.list().iter().any(|k| k.id == id) {
            return Ok(false);
        }
        let action = AdminAction::RevokeKey {
            id: id.to_owned(),
            at_unix_nanos: now_nanos(),
        };
        self.log.record(&action).await?;
        self.apply(&action);
        Ok(true)
    }

    /// Every key, oldest first.
    pub fn list(&self) -> Vec<KeyInfo> {
        let keys = self.by_hash.read().unwrap_or_else(PoisonError::into_inner);
        let mut out: Vec<KeyInfo> = keys.values().map(|k| KeyInfo::from(&**k)).collect();
        out.sort_by(|a, b| (a.created_unix_nanos, &a.id).cmp(&(b.created_unix_nanos, &b.id)));
        out
    }
}

impl KeyStore for KeyCache {
    fn lookup(&self, hash: &str) -> Option<Arc<VirtualKey>> {
        self.by_hash
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .get(hash)
            .cloned()
    }
}
