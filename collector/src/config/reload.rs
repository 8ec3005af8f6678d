//! Hot reload of rules: on `POST /admin/v1/reload` and when the config file
//! changes. A file that does not load keeps the rules in force and says why.

use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, SystemTime};

use tokio_util::sync::CancellationToken;
use tollgate_rules::engine::Engine;

use super::load;

/// Reloads rules from the config file into the engine.
#[derive(Debug)]
pub struct Reloader {
    path: Option<PathBuf>,
    engine: Engine,
    last_seen: Mutex<Option<SystemTime>>,
}

fn modified(path: &Path) -> Option<SystemTime> {
    std::fs::metadata(path).and_then(|m| m.modified()).ok()
}

impl Reloader {
    pub fn new(path: Option<PathBuf>, engine: Engine) -> Self {
        let last_seen = Mutex::new(path.as_deref().and_then(modified));
        Self {
            path,
            engine,
            last_seen,
        }
    }

    /// Loads the file again and swaps the rules in; returns how many.
    pub fn reload(&self) -> Result<usize, String> {
        let Some(path) = &self.path else {
            return Err("the collector runs without a config file; nothing to reload".to_owned());
        };
        match load::load(Some(path)) {
            Ok(c) => {
                let n = c.rules.rules.len();
                self.engine.replace_rules((*c.rules).clone());
                tracing::info!(rules = n, "rules reloaded");
                Ok(n)
            }
            Err(e) => {
                tracing::error!(error = %e, "config reload refused; the previous rules stay in force");
                Err(e.to_string())
            }
        }
    }

    /// Polls the file's modification time and reloads on change, until cancelled.
    pub async fn watch(&self, every: Duration, stop: CancellationToken) {
        let Some(path) = self.path.clone() else {
            return;
        };
        loop {
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = tokio::time::sleep(every) => {}
            }
            let now = modified(&path);
            let changed = {
                let mut last = self
                    .last_seen
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner);
                let changed = now.is_some() && now != *last;
                *last = now;
                changed
            };
            if changed {
                let _ = self.reload();
            }
        }
    }
}
