//! Shared budgets (`[ledger] type = "redis"`): keeps this instance's lease
//! book in touch with the shared ledger.
//!
//! The engine admits calls against the leases in its book without I/O
//! (see `tollgate_rules::engine::lease`). This module does the I/O:
//!
//! - [`SharedBudgets::lease`]: a call the leases do not cover waits for one
//!   exchange asking for more (calls short on the same counter share it);
//! - [`SharedBudgets::run`]: every `sync_interval`, one round trip carries
//!   whatever is due for every counter: spend to report, idle capacity to
//!   give back, holds to extend; at shutdown, every hold is given back.
//!
//! - [`SharedBudgets::report_observed`]: the spend of calls counted after
//!   the fact (spans) is reported before they are stored, so an instance
//!   killed once they are stored has lost none of it.
//!
//! Every exchange tells how far it moved each counter's spend, every
//! instance together; the engine turns that into the thresholds crossed
//! ([`Engine::crossings`]), and [`SharedBudgets::on_crossings`] hands them
//! on. Each increase is in exactly one exchange, so a crossing is
//! reported once, by one instance.
//!
//! When the server cannot be reached, what was to be reported is kept and
//! sent again; the outage is logged once (and its end), and counted.
//!
//! [`Engine::crossings`]: tollgate_rules::engine::Engine::crossings

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock, PoisonError};
use std::time::Duration;

use futures::future::BoxFuture;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;
use tollgate_gateway::{BudgetLeases, Leased};
use tollgate_rules::clock::now_unix_nanos as wall_nanos;
use tollgate_rules::engine::lease::{
    CallRef, LeaseBook, LeasePolicy, LeaseReply, LeaseRequest, LeaseShort, monotonic_ms,
};
use tollgate_rules::engine::{Engine, Violation};

/// Thresholds of shared budgets crossed by an exchange, each with the last
/// call of this instance counted on its counter.
pub type Crossings = Vec<(Violation, CallRef)>;

type CrossingHook = Box<dyn Fn(Crossings) + Send + Sync>;

/// The shared ledger as this module needs it: one atomic exchange of any
/// number of requests, in one round trip.
pub trait LeaseServer: Send + Sync + 'static {
    fn exchange<'a>(
        &'a self,
        instance: &'a str,
        ttl_ms: i64,
        requests: &'a [LeaseRequest],
    ) -> BoxFuture<'a, Result<Vec<LeaseReply>, String>>;
}

impl LeaseServer for tollgate_redis::RedisLedger {
    fn exchange<'a>(
        &'a self,
        instance: &'a str,
        ttl_ms: i64,
        requests: &'a [LeaseRequest],
    ) -> BoxFuture<'a, Result<Vec<LeaseReply>, String>> {
        Box::pin(async move {
            tollgate_redis::RedisLedger::exchange(self, instance, ttl_ms, requests)
                .await
                .map_err(|e| e.to_string())
        })
    }
}

/// `[ledger] type = "redis"`, validated.
#[derive(Debug, Clone)]
pub struct SharedLedgerConfig {
    pub redis: tollgate_redis::RedisConfig,
    /// This instance's name, unique to this start.
    pub instance: String,
    pub policy: LeasePolicy,
    pub sync_interval: Duration,
}

/// Connects to the shared ledger of `config` and loads its script: one
/// line saying why when it cannot (start-up stops on it).
pub async fn connect(config: &SharedLedgerConfig) -> Result<Arc<SharedBudgets>, String> {
    let redis = tollgate_redis::Redis::connect(&config.redis)
        .await
        .map_err(|e| format!("cannot reach the shared ledger ([ledger.redis]): {e}"))?;
    let ledger = tollgate_redis::RedisLedger::new(redis);
    ledger
        .load_script()
        .await
        .map_err(|e| format!("cannot load the shared ledger's script: {e}"))?;
    Ok(Arc::new(SharedBudgets::new(
        Arc::new(ledger),
        config.instance.clone(),
        config.policy,
    )))
}

/// Exchanges with the shared ledger, for `/metrics`.
#[derive(Debug, Default)]
pub struct LedgerStats {
    /// Round trips that succeeded.
    pub exchanges: AtomicU64,
    /// Round trips that failed (server unreachable, timed out).
    pub failures: AtomicU64,
    /// Counters carried by the successful round trips.
    pub requests: AtomicU64,
    /// Exchanges made because a call was short of lease.
    pub short: AtomicU64,
}

/// This instance's side of the shared ledger.
pub struct SharedBudgets {
    book: Arc<Mutex<LeaseBook>>,
    server: Arc<dyn LeaseServer>,
    /// Unique per process start: a restarted instance must not take over
    /// the holds of the one that died (its calls may have used them).
    instance: String,
    exchanged: Notify,
    down: AtomicBool,
    stats: LedgerStats,
    /// How long a call waits for an exchange on its way before giving up.
    wait: Duration,
    /// The engine that judges crossings, and who follows them.
    crossings: OnceLock<(Engine, CrossingHook)>,
}

impl std::fmt::Debug for SharedBudgets {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SharedBudgets")
            .field("instance", &self.instance)
            .finish_non_exhaustive()
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// A name for this process start: `name` (the host's by default) and a
/// random suffix.
pub fn instance_name(name: Option<&str>) -> String {
    let base = name
        .map(str::to_owned)
        .or_else(|| std::env::var("HOSTNAME").ok())
        .unwrap_or_else(|| "tollgate".to_owned());
    let suffix: u32 = rand::random();
    format!("{base}-{suffix:08x}")
}

impl SharedBudgets {
    pub fn new(server: Arc<dyn LeaseServer>, instance: String, policy: LeasePolicy) -> Self {
        Self {
            book: Arc::new(Mutex::new(LeaseBook::new(policy))),
            server,
            instance,
            exchanged: Notify::new(),
            down: AtomicBool::new(false),
            stats: LedgerStats::default(),
            wait: Duration::from_millis(u64::try_from(policy.margin_ms).unwrap_or(1_000)),
            crossings: OnceLock::new(),
        }
    }

    /// Shares `engine`'s budgets through this ledger: it admits against
    /// this instance's leases and reports its spend here; the thresholds
    /// that exchanges move its budgets past go to `follow`. Once; later
    /// calls change nothing.
    pub fn attach(&self, engine: &Engine, follow: impl Fn(Crossings) + Send + Sync + 'static) {
        engine.share_budgets(self.book());
        let _ = self.crossings.set((engine.clone(), Box::new(follow)));
    }

    /// The book the engine admits against (`Engine::share_budgets`).
    pub fn book(&self) -> Arc<Mutex<LeaseBook>> {
        Arc::clone(&self.book)
    }

    pub fn instance(&self) -> &str {
        &self.instance
    }

    pub fn stats(&self) -> &LedgerStats {
        &self.stats
    }

    /// The exchanges so far, for `/metrics`.
    pub fn snapshot(&self) -> crate::internal_events::SharedLedgerStats {
        let s = &self.stats;
        crate::internal_events::SharedLedgerStats {
            exchanges: s.exchanges.load(Ordering::Relaxed),
            failures: s.failures.load(Ordering::Relaxed),
            requests: s.requests.load(Ordering::Relaxed),
            short: s.short.load(Ordering::Relaxed),
            down: self.is_down(),
        }
    }

    /// Whether the last exchange failed.
    pub fn is_down(&self) -> bool {
        self.down.load(Ordering::Relaxed)
    }

    fn ttl_ms(&self) -> i64 {
        lock(&self.book).policy().ttl_ms
    }

    /// Sends `requests` (sent at `sent_ms`) and files the replies; on
    /// failure, gives the book back what the requests carried.
    /// Returns what each request was granted.
    async fn send(&self, requests: Vec<LeaseRequest>, sent_ms: i64) -> Result<Vec<u64>, String> {
        if requests.is_empty() {
            return Ok(Vec::new());
        }
        let outcome = self
            .server
            .exchange(&self.instance, self.ttl_ms(), &requests)
            .await
            .and_then(|replies| {
                if replies.len() == requests.len() {
                    Ok(replies)
                } else {
                    Err(format!(
                        "the shared ledger answered {} of {} requests",
                        replies.len(),
                        requests.len()
                    ))
                }
            });
        let mut moved = Vec::new();
        let result = {
            let mut book = lock(&self.book);
            match outcome {
                Ok(replies) => {
                    for (req, reply) in requests.iter().zip(&replies) {
                        book.reply(&req.key, reply, sent_ms);
                        moved.extend(book.moved(&req.key, reply));
                    }
                    self.stats.exchanges.fetch_add(1, Ordering::Relaxed);
                    self.stats
                        .requests
                        .fetch_add(requests.len() as u64, Ordering::Relaxed);
                    Ok(replies.iter().map(|r| r.granted).collect())
                }
                Err(e) => {
                    for req in requests {
                        let key = req.key;
                        book.failed(&key, req);
                    }
                    self.stats.failures.fetch_add(1, Ordering::Relaxed);
                    Err(e)
                }
            }
        };
        match &result {
            Ok(_) => {
                if self.down.swap(false, Ordering::Relaxed) {
                    tracing::info!("the shared ledger is reachable again");
                }
            }
            Err(e) => {
                if !self.down.swap(true, Ordering::Relaxed) {
                    tracing::warn!(
                        error = %e,
                        "cannot reach the shared ledger: calls are admitted from the leases \
                         held, then as each rule's on_ledger_error says; spend is reported \
                         once it is back"
                    );
                }
            }
        }
        self.exchanged.notify_waiters();
        if let Some((engine, follow)) = self.crossings.get().filter(|_| !moved.is_empty()) {
            let crossed = engine.crossings(&moved);
            if !crossed.is_empty() {
                follow(crossed);
            }
        }
        result
    }

    /// Reports now the spend of calls counted after the fact (observed
    /// spans), waiting for an exchange already on its way for one of their
    /// counters: called before those calls are stored. Gives up after the
    /// wait a short call gets (the spend stays to be reported).
    pub async fn report_observed(&self) -> Result<(), String> {
        let deadline = tokio::time::Instant::now() + self.wait;
        loop {
            let notified = self.exchanged.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            let now = monotonic_ms();
            let (requests, busy) = {
                let mut book = lock(&self.book);
                let mut busy = false;
                let mut requests = Vec::new();
                for key in book.observed() {
                    if book.syncing(&key) {
                        busy = true;
                    } else if let Some(r) = book.request(&key, 0, now, wall_nanos()) {
                        requests.push(r);
                    }
                }
                (requests, busy)
            };
            self.send(requests, now).await?;
            if !busy {
                return Ok(());
            }
            if tokio::time::timeout_at(deadline, notified).await.is_err() {
                return Err("timed out waiting for the shared ledger".to_owned());
            }
        }
    }

    /// Asks for enough lease to cover `short`: one exchange for the
    /// counters nobody is asking for yet, and a wait for the others (whose
    /// need is added to their next exchange). Counters the lease covers
    /// already (an exchange landed meanwhile) are not asked for.
    pub async fn lease(&self, short: &[LeaseShort]) -> Result<Leased, String> {
        self.stats.short.fetch_add(1, Ordering::Relaxed);
        let now = monotonic_ms();
        let (requests, waiting) = {
            let mut book = lock(&self.book);
            let mut requests = Vec::new();
            let mut waiting = Vec::new();
            for s in short {
                if book.covers(&s.key, s.amount, now) {
                    continue;
                }
                if book.syncing(&s.key) {
                    book.note_demand(&s.key, s.amount);
                    waiting.push(s.key);
                } else if let Some(r) = book.request(&s.key, s.amount, now, wall_nanos()) {
                    requests.push(r);
                }
            }
            (requests, waiting)
        };
        let wants: Vec<u64> = requests.iter().map(|r| r.want).collect();
        let granted = self.send(requests, now).await?;
        if !waiting.is_empty() {
            let deadline = tokio::time::Instant::now() + self.wait;
            loop {
                let notified = self.exchanged.notified();
                tokio::pin!(notified);
                notified.as_mut().enable();
                if !waiting.iter().any(|k| lock(&self.book).syncing(k)) {
                    break;
                }
                if tokio::time::timeout_at(deadline, notified).await.is_err() {
                    return Err("timed out waiting for the shared ledger".to_owned());
                }
            }
        }
        let full = granted.iter().zip(&wants).all(|(g, w)| g >= w);
        Ok(if full {
            Leased::Granted
        } else {
            Leased::Exhausted
        })
    }

    /// One round trip for everything due now.
    async fn sync_due(&self) -> Result<(), String> {
        let now = monotonic_ms();
        let requests: Vec<LeaseRequest> = {
            let mut book = lock(&self.book);
            book.due(now)
                .into_iter()
                .filter_map(|k| book.request(&k, 0, now, wall_nanos()))
                .collect()
        };
        self.send(requests, now).await.map(|_| ())
    }

    /// Exchanges what is due every `interval` until `stop`, then gives
    /// every hold back.
    pub async fn run(self: Arc<Self>, interval: Duration, stop: CancellationToken) {
        let mut tick = tokio::time::interval(interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut sweeps = 0u32;
        loop {
            tokio::select! {
                _ = tick.tick() => {}
                () = stop.cancelled() => break,
            }
            let _ = self.sync_due().await;
            sweeps += 1;
            if sweeps >= 100 {
                sweeps = 0;
                lock(&self.book).sweep(wall_nanos());
            }
        }
        // Give everything back: spend reported, idle holds returned.
        lock(&self.book).close();
        for _ in 0..3 {
            if self.sync_due().await.is_ok() {
                break;
            }
        }
    }
}

impl BudgetLeases for SharedBudgets {
    fn lease<'a>(&'a self, short: &'a [LeaseShort]) -> BoxFuture<'a, Result<Leased, String>> {
        Box::pin(SharedBudgets::lease(self, short))
    }
}
