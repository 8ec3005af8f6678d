//! The shared ledger on Redis: [`LeasePool::apply`]'s semantics in a Lua
//! script (`ledger.lua`), one call per counter, every counter of an
//! exchange in one pipeline (one round trip).
//!
//! [`LeasePool::apply`]: tollgate_rules::engine::lease::LeasePool::apply

use std::time::Duration;

use redis::{ErrorKind, ServerErrorKind};
use tollgate_rules::engine::lease::{LeaseReply, LeaseRequest};
use tollgate_rules::engine::ledger::CounterKey;
use tollgate_rules::engine::window::ROLLING_BUCKETS;

use crate::client::Redis;
use crate::error::RedisError;

/// The largest amount (and limit) the ledger keeps exactly: Lua numbers
/// are doubles. Larger amounts and limits are clamped to it, which changes
/// no decision (a spend of `MAX_AMOUNT` exhausts any limit it allows).
/// In nano-dollars it is about 9 million dollars per counter and window.
pub const MAX_AMOUNT: u64 = 1 << 53;

/// How long a counter's hash outlives its window (and its last holds), so
/// that late reports still find it.
pub const KEY_GRACE: Duration = Duration::from_secs(5 * 60);

const LEDGER_LUA: &str = include_str!("ledger.lua");

/// The shared ledger of every instance, on one Redis-protocol server.
/// Cheap to clone.
#[derive(Debug, Clone)]
pub struct RedisLedger {
    redis: Redis,
    script: redis::Script,
}

impl RedisLedger {
    pub fn new(redis: Redis) -> Self {
        Self {
            redis,
            script: redis::Script::new(LEDGER_LUA),
        }
    }

    pub fn redis(&self) -> &Redis {
        &self.redis
    }

    /// The hash that keeps `key`'s counter.
    pub fn key(&self, key: &CounterKey) -> String {
        format!(
            "{}ledger:{:016x}:{:016x}:{}",
            self.redis.key_prefix(),
            key.rule,
            key.scope,
            key.window_start
        )
    }

    /// Loads the script on the server (one round trip), so that the first
    /// exchange needs no more than the next ones. Optional: an exchange
    /// loads it when the server does not know it (after a restart, say).
    pub async fn load_script(&self) -> Result<(), RedisError> {
        let mut pipe = redis::pipe();
        pipe.cmd("SCRIPT").arg("LOAD").arg(LEDGER_LUA);
        let _: Vec<String> = self.redis.query(&pipe).await?;
        Ok(())
    }

    /// Applies `requests` of `instance` atomically per counter, at the
    /// server's time, in one round trip; the holds they leave expire
    /// `ttl_ms` later. The replies are in the order of the requests.
    ///
    /// On an error the exchange may have been applied in part or whole (a
    /// timeout says nothing about the server's side); re-reporting its
    /// spend then counts it twice, which errs on the safe side.
    pub async fn exchange(
        &self,
        instance: &str,
        ttl_ms: i64,
        requests: &[LeaseRequest],
    ) -> Result<Vec<LeaseReply>, RedisError> {
        self.run(instance, None, ttl_ms, requests).await
    }

    /// [`RedisLedger::exchange`] at server time `now_ms` instead of the
    /// server's clock: for tests that compare with `LeasePool`.
    #[cfg(feature = "testing")]
    pub async fn exchange_at(
        &self,
        instance: &str,
        now_ms: i64,
        ttl_ms: i64,
        requests: &[LeaseRequest],
    ) -> Result<Vec<LeaseReply>, RedisError> {
        self.run(instance, Some(now_ms), ttl_ms, requests).await
    }

    async fn run(
        &self,
        instance: &str,
        now_ms: Option<i64>,
        ttl_ms: i64,
        requests: &[LeaseRequest],
    ) -> Result<Vec<LeaseReply>, RedisError> {
        if requests.is_empty() {
            return Ok(Vec::new());
        }
        let mut invocations = Vec::with_capacity(requests.len());
        for req in requests {
            invocations.push(self.invocation(instance, now_ms, ttl_ms, req)?);
        }
        let mut replies: Vec<Option<LeaseReply>> = vec![None; requests.len()];
        let mut pending: Vec<usize> = (0..requests.len()).collect();
        // The second pass only after the server lost the script (NOSCRIPT:
        // those calls did not run).
        for pass in 0..2 {
            let mut pipe = redis::pipe();
            pipe.ignore_errors();
            for &i in &pending {
                pipe.invoke_script(&invocations[i]);
            }
            let results: Vec<redis::RedisResult<Vec<i64>>> = self.redis.query(&pipe).await?;
            if results.len() != pending.len() {
                return Err(self.reply_error(format!(
                    "{} replies to {} calls",
                    results.len(),
                    pending.len()
                )));
            }
            let mut missing = Vec::new();
            for (&i, result) in pending.iter().zip(results) {
                match result {
                    Ok(v) => replies[i] = Some(self.decode(&v)?),
                    Err(e) if e.kind() == ErrorKind::Server(ServerErrorKind::NoScript) => {
                        missing.push(i);
                    }
                    Err(e) if e.kind() == ErrorKind::Server(ServerErrorKind::ResponseError) => {
                        return Err(RedisError::Script {
                            server: self.redis.server().to_owned(),
                            detail: self.redis.scrub(e.to_string()),
                        });
                    }
                    Err(e) => return Err(self.redis.error(&e)),
                }
            }
            if missing.is_empty() {
                break;
            }
            if pass == 1 {
                return Err(self.reply_error(
                    "the server forgot the ledger script right after loading it".to_owned(),
                ));
            }
            self.load_script().await?;
            pending = missing;
        }
        replies
            .into_iter()
            .map(|r| r.ok_or_else(|| self.reply_error("a call got no reply".to_owned())))
            .collect()
    }

    fn invocation<'s>(
        &'s self,
        instance: &str,
        now_ms: Option<i64>,
        ttl_ms: i64,
        req: &LeaseRequest,
    ) -> Result<redis::ScriptInvocation<'s>, RedisError> {
        let exact = |bucket: i64| {
            if bucket.unsigned_abs() > MAX_AMOUNT {
                Err(RedisError::Invalid(format!(
                    "bucket {bucket} is beyond 2^53, the ledger script's exact range"
                )))
            } else {
                Ok(bucket)
            }
        };
        let clamp = |amount: u64| amount.min(MAX_AMOUNT);
        let mut inv = self.script.key(self.key(&req.key));
        inv.arg(instance)
            .arg(ttl_ms)
            .arg(now_ms.map_or_else(String::new, |n| n.to_string()))
            .arg(req.window.ends_at.div_euclid(1_000_000))
            .arg(i64::try_from(KEY_GRACE.as_millis()).unwrap_or(i64::MAX))
            .arg(if req.window.rolling {
                ROLLING_BUCKETS.to_string()
            } else {
                String::new()
            })
            .arg(exact(req.now_bucket)?)
            .arg(req.limit.map_or_else(String::new, |l| clamp(l).to_string()))
            .arg(clamp(req.give_back))
            .arg(clamp(req.want))
            .arg(req.from_hold.len());
        for (bucket, amount) in &req.from_hold {
            inv.arg(exact(*bucket)?).arg(clamp(*amount));
        }
        inv.arg(req.direct.len());
        for (bucket, amount) in &req.direct {
            inv.arg(exact(*bucket)?).arg(clamp(*amount));
        }
        Ok(inv)
    }

    fn decode(&self, v: &[i64]) -> Result<LeaseReply, RedisError> {
        let field = |i: usize| {
            v.get(i)
                .and_then(|n| u64::try_from(*n).ok())
                .ok_or_else(|| self.reply_error(format!("ledger script answered {v:?}")))
        };
        if v.len() != 5 {
            return Err(self.reply_error(format!("ledger script answered {v:?}")));
        }
        Ok(LeaseReply {
            granted: field(0)?,
            hold: field(1)?,
            spent: field(2)?,
            held_elsewhere: field(3)?,
            spent_before: field(4)?,
        })
    }

    fn reply_error(&self, detail: String) -> RedisError {
        RedisError::Reply {
            server: self.redis.server().to_owned(),
            detail,
        }
    }
}
