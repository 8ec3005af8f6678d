//! Keys: created and revoked through the admin API (`tollgate keys`),
//! stored as admin actions (hash only) and looked up in memory by hash;
//! keys written in the config (`[[auth.keys]]`) are added at start-up and
//! are not stored.

use std::collections::HashMap;
use std::sync::{Arc, PoisonError, RwLock};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};
use tollgate_gateway::{
    CONFIG_KEY_PREFIX, KeyLimits, KeyStore, Role, VirtualKey, check_roles_and_scope, generate_key,
};

use super::{AdminAction, AdminLog};
use crate::query::QueryError;

fn now_nanos() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_nanos()).unwrap_or(i64::MAX))
}

fn gateway_only() -> Vec<Role> {
    vec![Role::Gateway]
}

/// What `POST /admin/v1/keys` takes.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NewKey {
    #[serde(default)]
    pub name: Option<String>,
    /// What the key may do; `["gateway"]` when not given (a virtual key).
    #[serde(default = "gateway_only")]
    pub roles: Vec<Role>,
    /// The key stops working this long after it is created (`30d`, `12h`).
    #[serde(default, with = "humantime_serde")]
    pub expires_in: Option<Duration>,
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

impl Default for NewKey {
    fn default() -> Self {
        Self {
            name: None,
            roles: gateway_only(),
            expires_in: None,
            org: None,
            project: None,
            user: None,
            allowed_models: Vec::new(),
            limits: KeyLimits::default(),
        }
    }
}

impl NewKey {
    /// Why this key cannot be made, if it cannot.
    pub fn check(&self) -> Result<(), String> {
        check_roles_and_scope(
            &self.roles,
            self.org.as_deref(),
            self.project.as_deref(),
            self.user.as_deref(),
        )?;
        if self.expires_in.is_some_and(|d| d.is_zero()) {
            return Err("`expires_in` must be more than zero".into());
        }
        Ok(())
    }
}

/// A key as listed: never its secret, nor its hash.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct KeyInfo {
    pub id: String,
    pub name: Option<String>,
    pub roles: Vec<Role>,
    pub org: Option<String>,
    pub project: Option<String>,
    pub user: Option<String>,
    pub allowed_models: Vec<String>,
    pub limits: KeyLimits,
    pub created_unix_nanos: i64,
    pub revoked_unix_nanos: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub expires_unix_nanos: Option<i64>,
    /// Written in the config (`[[auth.keys]]`): not revocable through the API.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub from_config: bool,
}

impl From<&VirtualKey> for KeyInfo {
    fn from(k: &VirtualKey) -> Self {
        Self {
            id: k.id.clone(),
            name: k.name.clone(),
            roles: k.roles.clone(),
            org: k.org.clone(),
            project: k.project.clone(),
            user: k.user.clone(),
            allowed_models: k.allowed_models.clone(),
            limits: k.limits.clone(),
            created_unix_nanos: k.created_unix_nanos,
            revoked_unix_nanos: k.revoked_unix_nanos,
            expires_unix_nanos: k.expires_unix_nanos,
            from_config: k.id.starts_with(CONFIG_KEY_PREFIX),
        }
    }
}

/// Keys by hash, kept in memory and stored as admin actions.
pub struct KeyCache {
    by_hash: RwLock<HashMap<String, Arc<VirtualKey>>>,
    /// Keys from the config, kept across refreshes.
    fixed: Vec<VirtualKey>,
    log: Arc<dyn AdminLog>,
    /// Held while the log is written or read back, so that a refresh never
    /// replaces the map with a reading older than a key just made here.
    writes: tokio::sync::Mutex<()>,
}

impl KeyCache {
    /// Loads the keys created (and revoked) so far from `log`, plus `fixed`
    /// (keys written in the config).
    pub async fn load(log: Arc<dyn AdminLog>, fixed: Vec<VirtualKey>) -> Result<Self, QueryError> {
        let cache = Self {
            by_hash: RwLock::new(HashMap::new()),
            fixed,
            log,
            writes: tokio::sync::Mutex::new(()),
        };
        cache.refresh().await?;
        Ok(cache)
    }

    /// Reads every key again from the log, so that keys created or revoked
    /// by another process sharing the store are seen here too.
    pub async fn refresh(&self) -> Result<(), QueryError> {
        let _writes = self.writes.lock().await;
        let actions = self.log.load(now_nanos()).await?;
        let mut keys = HashMap::new();
        for k in &self.fixed {
            keys.insert(k.hash.clone(), Arc::new(k.clone()));
        }
        for action in &actions {
            apply(&mut keys, action);
        }
        *self.by_hash.write().unwrap_or_else(PoisonError::into_inner) = keys;
        Ok(())
    }

    /// Refreshes every `every` until `stop`.
    pub async fn watch(
        self: Arc<Self>,
        every: Duration,
        stop: tokio_util::sync::CancellationToken,
    ) {
        let mut warned = false;
        loop {
            tokio::select! {
                () = stop.cancelled() => return,
                () = tokio::time::sleep(every) => {}
            }
            match self.refresh().await {
                Ok(()) => warned = false,
                Err(e) if !warned => {
                    warned = true;
                    tracing::warn!(error = %e, "cannot read keys from the store; using the ones in memory");
                }
                Err(_) => {}
            }
        }
    }

    fn apply(&self, action: &AdminAction) {
        let mut keys = self.by_hash.write().unwrap_or_else(PoisonError::into_inner);
        apply(&mut keys, action);
    }
}

fn apply(keys: &mut HashMap<String, Arc<VirtualKey>>, action: &AdminAction) {
    {
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
}

impl KeyCache {
    /// Creates a key; returns its secret (shown once) and what is kept.
    /// `new` must pass [`NewKey::check`].
    pub async fn create(&self, new: NewKey) -> Result<(String, KeyInfo), QueryError> {
        let _writes = self.writes.lock().await;
        let secret = generate_key();
        let id = format!("key_{:016x}", rand::random::<u64>());
        let mut key = VirtualKey::new(id, &secret);
        key.name = new.name;
        key.roles = new.roles;
        key.expires_unix_nanos = new.expires_in.map(|d| {
            key.created_unix_nanos
                .saturating_add(i64::try_from(d.as_nanos()).unwrap_or(i64::MAX))
        });
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

    /// Revokes key `id`: `Ok(false)` if there is no such key. Keys from the
    /// config are not revoked here (remove them from the config).
    pub async fn revoke(&self, id: &str) -> Result<bool, QueryError> {
        let _writes = self.writes.lock().await;
        if !self.list().iter().any(|k| k.id == id && !k.from_config) {
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

    /// Applies a key created or revoked on another instance, and records it
    /// in `log` (the store's own log, which does not share it again) so that
    /// refreshes and restarts keep it. Idempotent: a key known here already,
    /// a revocation applied already, or the revocation of a key unknown here
    /// (refused here anyway) change nothing. Returns whether it changed
    /// something.
    pub async fn adopt(
        &self,
        action: &AdminAction,
        log: &dyn AdminLog,
    ) -> Result<bool, QueryError> {
        let _writes = self.writes.lock().await;
        let new = {
            let keys = self.by_hash.read().unwrap_or_else(PoisonError::into_inner);
            match action {
                AdminAction::CreateKey { key } => {
                    !keys.contains_key(&key.hash) && !keys.values().any(|k| k.id == key.id)
                }
                AdminAction::RevokeKey { id, .. } => keys.values().any(|k| {
                    &k.id == id
                        && k.revoked_unix_nanos.is_none()
                        && !k.id.starts_with(CONFIG_KEY_PREFIX)
                }),
                _ => false,
            }
        };
        if !new {
            return Ok(false);
        }
        log.record(action).await?;
        self.apply(action);
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
