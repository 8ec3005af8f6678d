//! [`StateSync`]: replays the state stream at start-up, then appends this
//! instance's changes and applies the other instances' as they come.
//!
//! Applying is idempotent, so a replay (or an entry read twice) changes
//! nothing more: a block already set is not set again, a key already known
//! is one key, an override already stored here is not stored again, and the
//! revocation of a key unknown here is skipped (the stream orders a key's
//! creation before its revocation, and a key unknown here is refused here).
//! Keys and overrides from other instances are also recorded in this
//! instance's own admin log, so that key refreshes and restarts keep them
//! once the stream has trimmed them.
//!
//! When the server cannot be reached, appends wait and are retried in
//! order, and the tail resumes from the last entry it read: nothing is
//! missed (short of the stream trimming it meanwhile). The outage is logged
//! once, and its end.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tollgate_redis::RedisError;
use tollgate_rules::engine::Engine;

use super::stream::{Read, START, StateStream};
use super::wire::{Entry, Remote};
use crate::admin::{AdminAction, AdminLog, KeyCache};
use crate::killswitch::{Change, KillSwitch};

/// Longest wait between two attempts while the server is down.
const MAX_RETRY_DELAY: Duration = Duration::from_secs(1);
const FIRST_RETRY_DELAY: Duration = Duration::from_millis(50);

fn now_nanos() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_nanos()).unwrap_or(i64::MAX))
}

/// What entries of other instances change here.
#[derive(Clone)]
pub struct Targets {
    pub engine: Engine,
    pub killswitch: KillSwitch,
    pub keys: Arc<KeyCache>,
    /// The store's own admin log (not the [`super::SharingLog`] around it:
    /// what comes from the stream is not shared again).
    pub store_log: Arc<dyn AdminLog>,
}

/// Shares this instance's state changes until stopped.
pub struct StateSync {
    stop: CancellationToken,
    publisher: JoinHandle<()>,
    tail: JoinHandle<()>,
}

impl std::fmt::Debug for StateSync {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StateSync").finish_non_exhaustive()
    }
}

impl StateSync {
    /// Replays the stream into `targets` (returns once it is applied), then
    /// appends what `admin` receives (and the kill-switch's own changes when
    /// `share_killswitch`) as `origin`, and tails the stream.
    pub async fn start(
        stream: StateStream,
        origin: String,
        targets: Targets,
        admin: mpsc::Receiver<AdminAction>,
        share_killswitch: bool,
    ) -> Result<Self, RedisError> {
        let mut applier = Applier::new(origin.clone(), targets.clone()).await;
        let mut last = START.to_owned();
        let mut replayed = 0usize;
        loop {
            let batch = stream.read(&last, false).await?;
            let Some(end) = batch.last() else { break };
            last = end.id().to_owned();
            replayed += batch.len();
            for read in &batch {
                applier.apply(read).await;
            }
        }
        tracing::info!(
            stream = stream.key(),
            entries = replayed,
            share_killswitch,
            "kill-switch, keys and overrides shared through the ledger server"
        );

        // Subscribed after the replay: what the replay changed here is not
        // this instance's to publish.
        let (changes_tx, changes) = mpsc::unbounded_channel();
        if share_killswitch {
            targets.killswitch.publish_changes(changes_tx);
        }
        let stop = CancellationToken::new();
        let publisher = tokio::spawn(publish(
            stream.clone(),
            origin,
            changes,
            admin,
            stop.clone(),
        ));
        let tail = tokio::spawn(tail(stream, last, applier, stop.clone()));
        Ok(Self {
            stop,
            publisher,
            tail,
        })
    }

    /// Stops tailing; appends what is queued (one attempt each, within
    /// 5 s).
    pub async fn stop(self) {
        self.stop.cancel();
        let _ = self.tail.await;
        let _ = tokio::time::timeout(Duration::from_secs(5), self.publisher).await;
    }
}

/// Logs an outage once, and its end.
struct Outage {
    down: bool,
    delay: Duration,
    what: &'static str,
}

impl Outage {
    fn new(what: &'static str) -> Self {
        Self {
            down: false,
            delay: FIRST_RETRY_DELAY,
            what,
        }
    }

    fn ok(&mut self) {
        self.delay = FIRST_RETRY_DELAY;
        if std::mem::take(&mut self.down) {
            tracing::info!(
                what = self.what,
                "the shared state stream is reachable again"
            );
        }
    }

    /// Logs the first failure; waits before the next attempt (false: stop).
    async fn failed(&mut self, e: &RedisError, stop: &CancellationToken) -> bool {
        if !std::mem::replace(&mut self.down, true) {
            tracing::warn!(
                error = %e,
                what = self.what,
                "cannot reach the shared state stream: kill-switch, key and override changes \
                 are exchanged with the other instances once it is back"
            );
        }
        let delay = self.delay;
        self.delay = (self.delay * 2).min(MAX_RETRY_DELAY);
        tokio::select! {
            () = stop.cancelled() => false,
            () = tokio::time::sleep(delay) => true,
        }
    }
}

/// Appends this instance's changes, in the order they were made.
async fn publish(
    stream: StateStream,
    origin: String,
    mut changes: mpsc::UnboundedReceiver<Change>,
    mut admin: mpsc::Receiver<AdminAction>,
    stop: CancellationToken,
) {
    let mut outage = Outage::new("append");
    loop {
        let entry = tokio::select! {
            biased;
            Some(c) = changes.recv() => Entry::change(&origin, c),
            Some(a) = admin.recv() => Entry::admin(&origin, &a),
            () = stop.cancelled() => break,
        };
        append(&stream, entry, &mut outage, &stop).await;
    }
    // Stopping: what is queued gets one attempt each.
    while let Ok(c) = changes.try_recv() {
        append(&stream, Entry::change(&origin, c), &mut outage, &stop).await;
    }
    while let Ok(a) = admin.try_recv() {
        append(&stream, Entry::admin(&origin, &a), &mut outage, &stop).await;
    }
}

async fn append(
    stream: &StateStream,
    entry: Result<Entry, serde_json::Error>,
    outage: &mut Outage,
    stop: &CancellationToken,
) {
    let entry = match entry {
        Ok(e) => e,
        Err(e) => {
            tracing::error!(error = %e, "state change not shared: cannot encode it");
            return;
        }
    };
    loop {
        match stream.append(&entry).await {
            Ok(_) => return outage.ok(),
            Err(e) => {
                if !outage.failed(&e, stop).await {
                    tracing::warn!(
                        kind = entry.kind.as_str(),
                        "state change not shared: stopping"
                    );
                    return;
                }
            }
        }
    }
}

/// Applies the other instances' entries after `last` as they come.
async fn tail(
    stream: StateStream,
    mut last: String,
    mut applier: Applier,
    stop: CancellationToken,
) {
    let mut outage = Outage::new("read");
    loop {
        let read = tokio::select! {
            () = stop.cancelled() => return,
            r = stream.read(&last, true) => r,
        };
        match read {
            Ok(batch) => {
                outage.ok();
                for read in &batch {
                    applier.apply(read).await;
                    read.id().clone_into(&mut last);
                }
            }
            Err(e) => {
                if !outage.failed(&e, &stop).await {
                    return;
                }
            }
        }
    }
}

/// Applies entries of other instances, once each.
struct Applier {
    origin: String,
    targets: Targets,
    /// Admin actions in force here already (as JSON): loaded from the
    /// store's log at start-up, then each one applied.
    known: HashSet<String>,
}

impl Applier {
    async fn new(origin: String, targets: Targets) -> Self {
        let known = match targets.store_log.load(now_nanos()).await {
            Ok(actions) => actions
                .iter()
                .filter_map(|a| serde_json::to_string(a).ok())
                .collect(),
            Err(e) => {
                tracing::warn!(error = %e, "cannot read the admin log: keys and overrides of other instances may be stored again");
                HashSet::new()
            }
        };
        Self {
            origin,
            targets,
            known,
        }
    }

    async fn apply(&mut self, read: &Read) {
        let Read::Entry(entry) = read else {
            tracing::debug!(id = read.id(), "state entry of an unknown kind skipped");
            return;
        };
        if entry.origin == self.origin {
            return;
        }
        match entry.decode() {
            Ok(Remote::KillSwitch(change)) => self.targets.killswitch.apply_remote(change),
            Ok(Remote::Admin(action)) => self.adopt(action).await,
            Err(e) => {
                tracing::warn!(error = %e, id = %entry.id, "undecodable state entry skipped");
            }
        }
    }

    async fn adopt(&mut self, action: AdminAction) {
        if action.until().is_some_and(|until| until <= now_nanos()) {
            return;
        }
        let Ok(json) = serde_json::to_string(&action) else {
            return;
        };
        if self.known.contains(&json) {
            return;
        }
        let t = &self.targets;
        match &action {
            AdminAction::CreateKey { .. } | AdminAction::RevokeKey { .. } => {
                if let Err(e) = t.keys.adopt(&action, &*t.store_log).await {
                    tracing::warn!(error = %e, "key change of another instance not stored here");
                    return;
                }
            }
            AdminAction::Override { rule_id, .. } => {
                if !action.apply(&t.engine, &t.killswitch) {
                    tracing::warn!(rule = %rule_id, "override of another instance names a rule not configured here: skipped");
                } else if let Err(e) = t.store_log.record(&action).await {
                    tracing::warn!(error = %e, rule = %rule_id, "override of another instance applied here but not stored");
                }
            }
            // Their effect travels as kill-switch changes.
            AdminAction::Block { .. } | AdminAction::Lift { .. } => {}
        }
        self.known.insert(json);
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use futures::future::BoxFuture;
    use tollgate_gateway::{KeyStore, hash_key};
    use tollgate_redis::testing::{RedisServer, ServerOptions};
    use tollgate_rules::engine::{compile, parse_rules};

    use super::*;
    use crate::admin::NewKey;
    use crate::killswitch::{Block, Scope};
    use crate::query::QueryError;
    use crate::shared_state::SharingLog;

    #[derive(Default)]
    struct Memory(Mutex<Vec<AdminAction>>);

    impl AdminLog for Memory {
        fn record(&self, action: &AdminAction) -> BoxFuture<'_, Result<(), QueryError>> {
            self.0.lock().unwrap().push(action.clone());
            Box::pin(async { Ok(()) })
        }
        fn load(&self, _: i64) -> BoxFuture<'_, Result<Vec<AdminAction>, QueryError>> {
            let all = self.0.lock().unwrap().clone();
            Box::pin(async move { Ok(all) })
        }
    }

    struct Instance {
        killswitch: KillSwitch,
        keys: Arc<KeyCache>,
        store: Arc<Memory>,
        sync: StateSync,
    }

    async fn instance(redis: &RedisServer, name: &str, store: Arc<Memory>) -> Instance {
        let stream = StateStream::connect(&redis.config()).await.unwrap();
        let (log, admin) = SharingLog::new(store.clone());
        let keys = Arc::new(KeyCache::load(log, Vec::new()).await.unwrap());
        let killswitch = KillSwitch::new();
        let targets = Targets {
            engine: Engine::new(compile(&parse_rules(Vec::new()).unwrap()).unwrap()),
            killswitch: killswitch.clone(),
            keys: Arc::clone(&keys),
            store_log: store.clone(),
        };
        let sync = StateSync::start(stream, name.to_owned(), targets, admin, true)
            .await
            .unwrap();
        Instance {
            killswitch,
            keys,
            store,
            sync,
        }
    }

    fn block(project: &str) -> Block {
        Block::new("admin", [("project", project)], "admin", 0)
    }

    fn blocked(ks: &KillSwitch, project: &str) -> bool {
        ks.state_for(&Scope {
            project: Some(project.into()),
            ..Default::default()
        })
        .blocked
    }

    async fn eventually(within: Duration, what: &str, check: impl Fn() -> bool) {
        let deadline = tokio::time::Instant::now() + within;
        while !check() {
            assert!(
                tokio::time::Instant::now() < deadline,
                "{what}: not within {within:?}"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn changes_reach_the_other_instance_through_an_outage_and_replay_once() {
        let test = "changes_reach_the_other_instance_through_an_outage_and_replay_once";
        let options = ServerOptions {
            persistent: true,
            ..Default::default()
        };
        let Some(mut redis) = RedisServer::start_own(test, options) else {
            return;
        };
        let a = instance(&redis, "a", Arc::default()).await;
        let b = instance(&redis, "b", Arc::default()).await;

        a.killswitch.set(block("p1"));
        eventually(Duration::from_secs(1), "a block", || {
            blocked(&b.killswitch, "p1")
        })
        .await;
        let (secret, info) = a.keys.create(NewKey::default()).await.unwrap();
        let hash = hash_key(&secret);
        eventually(Duration::from_secs(1), "a key", || {
            b.keys.lookup(&hash).is_some()
        })
        .await;
        // Stored in B's own log (its hash only), once.
        let stored = b.store.0.lock().unwrap().clone();
        assert!(matches!(&stored[..], [AdminAction::CreateKey { key }] if key.id == info.id));

        // An outage: what A changes meanwhile reaches B once the server is back.
        redis.stop();
        a.killswitch.set(block("p2"));
        assert!(a.keys.revoke(&info.id).await.unwrap());
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert!(!blocked(&b.killswitch, "p2"));
        redis.start_again();
        eventually(
            Duration::from_secs(5),
            "a change made during the outage",
            || blocked(&b.killswitch, "p2") && b.keys.lookup(&hash).is_some_and(|k| k.is_revoked()),
        )
        .await;

        // A later instance replays it all, before it starts; one that knows
        // the key from its own log already does not store it again.
        let c = instance(&redis, "c", Arc::new(Memory(Mutex::new(stored)))).await;
        assert!(blocked(&c.killswitch, "p1") && blocked(&c.killswitch, "p2"));
        assert!(c.keys.lookup(&hash).is_some_and(|k| k.is_revoked()));
        let kinds: Vec<bool> = c
            .store
            .0
            .lock()
            .unwrap()
            .iter()
            .map(|a| matches!(a, AdminAction::CreateKey { .. }))
            .collect();
        assert_eq!(kinds, [true, false], "one creation, one revocation");

        // A lift on C reaches A (C's own changes are shared too).
        c.killswitch.lift(
            &Scope {
                project: Some("p1".into()),
                ..Default::default()
            },
            None,
        );
        eventually(Duration::from_secs(1), "a lift", || {
            !blocked(&a.killswitch, "p1")
        })
        .await;

        for i in [a, b, c] {
            i.killswitch.close();
            i.sync.stop().await;
        }
    }
}
