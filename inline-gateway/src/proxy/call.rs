//! One call's record and reservations, from the moment it is authenticated
//! until its row is handed over. Whatever ends the call — an answer, an
//! error, a refusal, a cut stream, the caller going away (the future or the
//! response body dropped) — ends here exactly once: the reservation is
//! settled against the usage (or released), the row priced and submitted.
//!
//! An attempt the provider may have taken on without answering (it timed
//! out after the request went out, or its answer broke off) is never
//! released at 0: the provider may bill it. It is settled at the worst case
//! it reserved, labelled `usage_estimated`: as the call's own row when it
//! was the last attempt, else as a row of its own (another span of the
//! call's trace) before the next attempt goes out.

use std::sync::Arc;
use std::time::Instant;

use tollgate_rules::engine::{Engine, Reservation, Violation};
use tollgate_rules::pricing::{CallCost, PriceTable, TokenUsage};
use tollgate_rules::{CallRecord, CallStatus, Mode};

use super::state::{Link, Shared};
use crate::deps::RowRoom;
use crate::usage::Usage;

/// Label set on rows whose tokens are (partly) estimated.
pub(crate) const USAGE_ESTIMATED: &str = "usage_estimated";
/// Label set on rows of Responses API background runs, settled at their
/// worst case.
pub(crate) const BACKGROUND: &str = "background";
/// Label set on rows priced at `gateway.unpriced_cost_per_mtok`.
pub(crate) const UNPRICED_PRICE: &str = "unpriced_price";
/// Label carrying the virtual key id (what `scope = ["key"]` reads on rows).
pub(crate) const KEY_LABEL: &str = "key";
/// Label carrying the gateway's `x-request-id`.
pub(crate) const REQUEST_ID_LABEL: &str = "request_id";

/// What an admitted attempt holds on the engines.
#[derive(Debug)]
pub(crate) struct Held {
    pub main: Reservation,
    pub key: Option<(Engine, Reservation)>,
}

/// An attempt the provider may bill although it never answered.
#[derive(Debug)]
struct Unanswered {
    held: Held,
    worst: Usage,
    attempt: u32,
    provider: Option<String>,
    request_model: Option<String>,
    upstream: Option<String>,
    http_status: u16,
    error_type: &'static str,
}

pub(crate) struct CallLog {
    shared: Arc<Shared>,
    pub record: CallRecord,
    started: Instant,
    held: Option<Held>,
    /// The worst case the current attempt reserved: what estimates never
    /// exceed, and what an attempt left unanswered is settled at.
    worst: Usage,
    /// The last attempt, if the provider may have taken it on without
    /// answering.
    unanswered: Option<Unanswered>,
    /// An attempt reached a provider (or tried to): the call counts even
    /// when every attempt failed.
    attempted: bool,
    /// The engine of the key's own limits, if it has any.
    key_engine: Option<Engine>,
    finished: bool,
    /// The row's room in the collector's queue, taken before any provider.
    room: Option<RowRoom>,
}

impl CallLog {
    pub(crate) fn new(shared: Arc<Shared>, record: CallRecord, room: RowRoom) -> Self {
        Self {
            room: Some(room),
            shared,
            record,
            started: Instant::now(),
            held: None,
            worst: Usage::default(),
            unanswered: None,
            attempted: false,
            key_engine: None,
            finished: false,
        }
    }

    pub(crate) fn set_key_engine(&mut self, engine: Option<Engine>) {
        self.key_engine = engine;
    }

    pub(crate) fn key_engine(&self) -> Option<&Engine> {
        self.key_engine.as_ref()
    }

    pub(crate) fn started(&self) -> Instant {
        self.started
    }

    /// The attempt about to go to `link` holds `held`, reserved for `worst`
    /// (what an earlier attempt held is released, or settled on a row of
    /// its own if that attempt was left unanswered).
    pub(crate) fn attempt(&mut self, link: &Link, attempt: u32, held: Held, worst: Usage) {
        self.settle_unanswered_apart();
        self.held = Some(held);
        self.worst = worst;
        self.attempted = true;
        self.record.attempt = attempt;
        self.record.provider = Some(link.provider.system.to_string());
        self.record.request_model = Some(link.model.to_string());
        self.record.upstream = Some(link.provider.upstream.to_string());
        self.record.decision = Some("allow".to_owned());
    }

    /// The current attempt failed and another may follow: give back what it held.
    pub(crate) fn release(&mut self) {
        self.held = None;
    }

    /// The current attempt failed after the provider may have taken it on
    /// (`http_status` and `error_type` say how): what it holds stays held,
    /// to be settled at its worst case.
    pub(crate) fn unanswered(&mut self, http_status: u16, error_type: &'static str) {
        self.settle_unanswered_apart();
        let Some(held) = self.held.take() else {
            return;
        };
        let r = &self.record;
        self.unanswered = Some(Unanswered {
            held,
            worst: self.worst,
            attempt: r.attempt,
            provider: r.provider.clone(),
            request_model: r.request_model.clone(),
            upstream: r.upstream.clone(),
            http_status,
            error_type,
        });
    }

    /// An unanswered attempt that is not the call's last: its own row, a
    /// span of its own in the call's trace.
    fn settle_unanswered_apart(&mut self) {
        let Some(u) = self.unanswered.take() else {
            return;
        };
        let mut r = self.record.clone();
        r.span_id = random_hex(8);
        r.attempt = u.attempt;
        r.provider = u.provider;
        r.request_model = u.request_model;
        r.upstream = u.upstream;
        r.response_model = None;
        r.request_id = None;
        r.finish_reason = None;
        r.ttft_nanos = None;
        r.decision = Some("allow".to_owned());
        r.status = CallStatus::Error;
        r.http_status = Some(u.http_status);
        r.error_type = Some(u.error_type.to_owned());
        r.labels
            .insert(USAGE_ESTIMATED.to_owned(), "true".to_owned());
        let room = self
            .shared
            .deps
            .rows
            .reserve()
            .unwrap_or_else(RowRoom::unbounded);
        self.shared.events.row();
        submit(
            &self.shared,
            r,
            Some(u.held),
            false,
            None,
            self.started,
            u.worst,
            room,
        );
    }

    /// The provider answered; `usage` is what it reported (`None`: it
    /// reported none, so the usage is estimated from `output_bytes`, the
    /// UTF-8 bytes of the answer's text).
    pub(crate) fn complete(&mut self, http_status: u16, usage: Option<Usage>, output_bytes: u64) {
        self.record.status = CallStatus::Ok;
        self.record.http_status = Some(http_status);
        let usage = match usage {
            Some(u) => u,
            None => self.estimate(None, output_bytes),
        };
        self.finish(usage);
    }

    /// The provider took on a background run (Responses API,
    /// `background: true`) that it bills later, out of the gateway's
    /// sight: settled at the worst case the attempt reserved, labelled
    /// `usage_estimated` and `background`.
    pub(crate) fn complete_pending(&mut self, http_status: u16) {
        self.record.status = CallStatus::Ok;
        self.record.http_status = Some(http_status);
        for label in [USAGE_ESTIMATED, BACKGROUND] {
            self.record
                .labels
                .insert(label.to_owned(), "true".to_owned());
        }
        let worst = self.worst;
        self.finish(worst);
    }

    /// The call ended without an answer (or with a provider error). When
    /// its last attempt went unanswered, the call is that attempt, settled
    /// at its worst case.
    pub(crate) fn fail(&mut self, http_status: u16, error_type: &str) {
        self.record.status = CallStatus::Error;
        self.record.http_status = Some(http_status);
        self.record.error_type = Some(error_type.to_owned());
        let usage = match self.unanswered.take() {
            Some(u) if self.held.is_none() => {
                let r = &mut self.record;
                r.attempt = u.attempt;
                r.provider = u.provider;
                r.request_model = u.request_model;
                r.upstream = u.upstream;
                r.labels
                    .insert(USAGE_ESTIMATED.to_owned(), "true".to_owned());
                self.held = Some(u.held);
                u.worst
            }
            other => {
                self.unanswered = other;
                Usage::default()
            }
        };
        self.finish(usage);
    }

    /// A refusal: nothing was reserved, nothing is counted.
    pub(crate) fn refuse(&mut self, http_status: u16, code: &str, rule_id: &str) {
        self.settle_unanswered_apart();
        self.held = None;
        self.attempted = false;
        self.record.status = CallStatus::Error;
        self.record.http_status = Some(http_status);
        self.record.error_type = Some(code.to_owned());
        self.record.decision = Some("block".to_owned());
        if !self.record.rules_fired.iter().any(|r| r == rule_id) {
            self.record.rules_fired.push(rule_id.to_owned());
        }
        self.finish(Usage::default());
    }

    /// A stream (or a pending answer) was cut: settle on what the provider
    /// reported so far plus an estimate from the text sent, marked estimated.
    pub(crate) fn cut(&mut self, error_type: &str, reported: Option<Usage>, output_bytes: u64) {
        self.shared
            .events
            .stream_cut(self.request_id_label(), error_type);
        self.record.status = CallStatus::Error;
        self.record.error_type = Some(error_type.to_owned());
        let usage = self.estimate(reported, output_bytes);
        self.finish(usage);
    }

    fn request_id_label(&self) -> &str {
        self.record
            .labels
            .get(REQUEST_ID_LABEL)
            .map_or("", String::as_str)
    }

    /// A stream stalled past the link's timeout: the provider may still be
    /// generating, and billing, up to the cap. Settled at the worst case
    /// (or what the provider reported, if more).
    pub(crate) fn stalled(&mut self, reported: Option<Usage>) {
        self.shared
            .events
            .stream_cut(self.request_id_label(), "upstream_idle_timeout");
        self.record.status = CallStatus::Error;
        self.record.error_type = Some("upstream_idle_timeout".to_owned());
        self.record
            .labels
            .insert(USAGE_ESTIMATED.to_owned(), "true".to_owned());
        let mut u = reported.unwrap_or_default();
        u.input = u.input.max(self.worst.input);
        u.output = u.output.max(self.worst.output);
        self.finish(u);
    }

    /// What the provider reported, completed from the worst case the
    /// attempt reserved: its input bound, and the output text seen (its
    /// UTF-8 bytes bound its tokens) up to the cap.
    fn estimate(&mut self, reported: Option<Usage>, output_bytes: u64) -> Usage {
        self.record
            .labels
            .insert(USAGE_ESTIMATED.to_owned(), "true".to_owned());
        let mut u = reported.unwrap_or_default();
        if u.input == 0 {
            u.input = self.worst.input;
        }
        u.output = u.output.max(output_bytes.min(self.worst.output));
        u
    }

    fn finish(&mut self, usage: Usage) {
        if self.finished {
            return;
        }
        self.finished = true;
        self.settle_unanswered_apart();
        self.shared.events.row();
        let key_engine = self.key_engine.as_ref().filter(|_| self.attempted);
        submit(
            &self.shared,
            std::mem::take(&mut self.record),
            self.held.take(),
            self.attempted,
            key_engine,
            self.started,
            usage,
            self.room.take().unwrap_or_else(RowRoom::unbounded),
        );
    }
}

/// Counts row `r` with `usage` and hands it over: settles what it `held`
/// or, when its attempts gave everything back but one was `attempted`,
/// counts it as a request with no tokens (on the key's engine too).
#[allow(clippy::too_many_arguments)]
fn submit(
    shared: &Shared,
    mut r: CallRecord,
    held: Option<Held>,
    attempted: bool,
    key_engine: Option<&Engine>,
    started: Instant,
    usage: Usage,
    room: RowRoom,
) {
    r.duration_nanos = i64::try_from(started.elapsed().as_nanos()).unwrap_or(i64::MAX);
    r.input_tokens = usage.input;
    r.output_tokens = usage.output;
    r.cache_read_tokens = usage.cache_read;
    r.cache_write_tokens = usage.cache_write;
    r.reasoning_tokens = usage.reasoning;
    price(shared, &mut r);
    // Taken before the call is counted: its counters stay in memory
    // until its row is stored (see `Engine::unstored`).
    let unstored = shared.deps.engine.unstored();
    // Counted here, by `settle` or `observe`, or refused before any
    // attempt: the collector's rules stage does not count it again.
    r.settled = true;
    let mut violations: Vec<Violation> = Vec::new();
    if let Some(held) = held {
        if let Some((engine, reservation)) = held.key {
            violations.extend(engine.settle(reservation, &r));
        }
        violations.extend(shared.deps.engine.settle(held.main, &r));
    } else if attempted {
        // Every attempt failed and gave its reservation back: the call
        // still counts (as a request, with no tokens).
        if let Some(engine) = key_engine {
            violations.extend(engine.observe(&r));
        }
        violations.extend(shared.deps.engine.observe(&r));
    }
    for v in &violations {
        if !r.rules_fired.iter().any(|id| **id == *v.rule_id) {
            r.rules_fired.push(v.rule_id.to_string());
        }
    }
    shared.deps.rows.submit(r, violations, unstored, room);
}

/// `bytes` random bytes (at most 16), hex-encoded: trace and span ids.
pub(crate) fn random_hex(bytes: usize) -> String {
    use rand::RngCore;
    let mut b = [0u8; 16];
    let b = &mut b[..bytes.min(16)];
    rand::rng().fill_bytes(b);
    hex::encode(b)
}

/// Prices `r` at the model that served it (the response's model, else the
/// link's), for the provider that served it; a model the table lacks at
/// `gateway.unpriced_cost_per_mtok`, when set (labelled `unpriced_price`).
/// The gateway always knows the call's usage (the provider's, or its
/// estimate).
fn price(shared: &Shared, r: &mut CallRecord) {
    let prices = &shared.deps.prices;
    let call = CallCost {
        provider: r.provider.as_deref(),
        response_model: r.response_model.as_deref(),
        request_model: r.request_model.as_deref(),
        usage: TokenUsage {
            input: r.input_tokens,
            output: r.output_tokens,
            cache_read: r.cache_read_tokens,
            cache_write: r.cache_write_tokens,
        },
        has_usage: true,
        failed: r.status == CallStatus::Error,
    };
    let table = prices.call_cost(&call);
    let cost = match (table, &shared.unpriced_price) {
        (None, Some(fallback)) => {
            r.labels
                .insert(UNPRICED_PRICE.to_owned(), "true".to_owned());
            prices.call_cost_or(&call, Some(fallback))
        }
        _ => table,
    };
    let (cost, source) = PriceTable::row_cost(&call, cost, None);
    r.cost_usd = cost;
    r.cost_source = source;
    r.price_version = Some(prices.version().to_owned());
}

impl Drop for CallLog {
    /// The caller went away (the handler's future or the response body was
    /// dropped) before the call ended. If a provider may have started on
    /// it, the row is settled on an estimate rather than lost.
    fn drop(&mut self) {
        if self.finished {
            return;
        }
        if self.held.is_some() {
            self.cut("client_disconnected", None, 0);
        } else if self.attempted {
            self.fail(499, "client_disconnected");
        }
    }
}

/// The skeleton row of a call.
pub(crate) fn new_record(
    start_unix_nanos: i64,
    operation: &'static str,
    stream: bool,
) -> CallRecord {
    CallRecord {
        start_unix_nanos,
        mode: Mode::Gateway,
        operation: Some(operation.to_owned()),
        stream,
        ..CallRecord::default()
    }
}
