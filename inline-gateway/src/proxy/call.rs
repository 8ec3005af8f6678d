//! One call's record and reservations, from the moment it is authenticated
//! until its row is handed over. Whatever ends the call — an answer, an
//! error, a refusal, a cut stream, the caller going away (the future or the
//! response body dropped) — ends here exactly once: the reservation is
//! settled against the usage (or released), the row priced and submitted.

use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use tollgate_rules::engine::{Engine, Reservation, Violation};
use tollgate_rules::pricing::{CallCost, PriceTable, TokenUsage};
use tollgate_rules::{CallRecord, CallStatus, Mode};

use super::state::{Link, Shared};
use crate::deps::RowRoom;
use crate::dialect::Dialect;
use crate::usage::{Usage, estimate_input_tokens, tokens_of_chars};

/// Label set on rows whose tokens are (partly) estimated.
pub(crate) const USAGE_ESTIMATED: &str = "usage_estimated";
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

pub(crate) struct CallLog {
    shared: Arc<Shared>,
    pub record: CallRecord,
    started: Instant,
    held: Option<Held>,
    /// An attempt reached a provider (or tried to): the call counts even
    /// when every attempt failed.
    attempted: bool,
    /// The engine of the key's own limits, if it has any.
    key_engine: Option<Engine>,
    /// For estimates when the provider reported no usage.
    client_dialect: Dialect,
    body: Bytes,
    finished: bool,
    /// The row's room in the collector's queue, taken before any provider.
    room: Option<RowRoom>,
}

impl CallLog {
    pub(crate) fn new(
        shared: Arc<Shared>,
        record: CallRecord,
        client_dialect: Dialect,
        body: Bytes,
        room: RowRoom,
    ) -> Self {
        Self {
            room: Some(room),
            shared,
            record,
            started: Instant::now(),
            held: None,
            attempted: false,
            key_engine: None,
            client_dialect,
            body,
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

    /// The attempt about to go to `link` holds `held` (what an earlier
    /// attempt held is released).
    pub(crate) fn attempt(&mut self, link: &Link, attempt: u32, held: Held) {
        self.held = Some(held);
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

    /// The input tokens the request's text stands for.
    fn estimated_input(&self) -> u64 {
        serde_json::from_slice(&self.body)
            .map(|v| estimate_input_tokens(self.client_dialect, &v))
            .unwrap_or_else(|_| tokens_of_chars(self.body.len() as u64).max(1))
    }

    /// The provider answered; `usage` is what it reported (`None`: it
    /// reported none, so the usage is estimated from `output_chars`).
    pub(crate) fn complete(&mut self, http_status: u16, usage: Option<Usage>, output_chars: u64) {
        self.record.status = CallStatus::Ok;
        self.record.http_status = Some(http_status);
        let usage = match usage {
            Some(u) => u,
            None => self.estimate(None, output_chars),
        };
        self.finish(usage);
    }

    /// The call ended without an answer (or with a provider error).
    pub(crate) fn fail(&mut self, http_status: u16, error_type: &str) {
        self.record.status = CallStatus::Error;
        self.record.http_status = Some(http_status);
        self.record.error_type = Some(error_type.to_owned());
        self.finish(Usage::default());
    }

    /// A refusal: nothing was reserved, nothing is counted.
    pub(crate) fn refuse(&mut self, http_status: u16, code: &str, rule_id: &str) {
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
    pub(crate) fn cut(&mut self, error_type: &str, reported: Option<Usage>, output_chars: u64) {
        self.shared
            .events
            .stream_cut(self.request_id_label(), error_type);
        self.record.status = CallStatus::Error;
        self.record.error_type = Some(error_type.to_owned());
        let usage = self.estimate(reported, output_chars);
        self.finish(usage);
    }

    fn request_id_label(&self) -> &str {
        self.record
            .labels
            .get(REQUEST_ID_LABEL)
            .map_or("", String::as_str)
    }

    fn estimate(&mut self, reported: Option<Usage>, output_chars: u64) -> Usage {
        self.record
            .labels
            .insert(USAGE_ESTIMATED.to_owned(), "true".to_owned());
        let mut u = reported.unwrap_or_default();
        if u.input == 0 {
            u.input = self.estimated_input();
        }
        u.output = u.output.max(tokens_of_chars(output_chars));
        u
    }

    fn finish(&mut self, usage: Usage) {
        if self.finished {
            return;
        }
        self.finished = true;
        let r = &mut self.record;
        r.duration_nanos = i64::try_from(self.started.elapsed().as_nanos()).unwrap_or(i64::MAX);
        r.input_tokens = usage.input;
        r.output_tokens = usage.output;
        r.cache_read_tokens = usage.cache_read;
        r.cache_write_tokens = usage.cache_write;
        r.reasoning_tokens = usage.reasoning;
        price(&self.shared, r);
        // Taken before the call is counted: its counters stay in memory
        // until its row is stored (see `Engine::unstored`).
        let unstored = self.shared.deps.engine.unstored();
        // Counted here, by `settle` or `observe`, or refused before any
        // attempt: the collector's rules stage does not count it again.
        r.settled = true;
        let mut violations: Vec<Violation> = Vec::new();
        if let Some(held) = self.held.take() {
            if let Some((engine, reservation)) = held.key {
                violations.extend(engine.settle(reservation, r));
            }
            violations.extend(self.shared.deps.engine.settle(held.main, r));
        } else if self.attempted {
            // Every attempt failed and gave its reservation back: the call
            // still counts (as a request, with no tokens).
            if let Some(engine) = &self.key_engine {
                violations.extend(engine.observe(r));
            }
            violations.extend(self.shared.deps.engine.observe(r));
        }
        for v in &violations {
            if !r.rules_fired.iter().any(|id| **id == *v.rule_id) {
                r.rules_fired.push(v.rule_id.to_string());
            }
        }
        self.shared.events.row();
        self.shared.deps.rows.submit(
            std::mem::take(&mut self.record),
            violations,
            unstored,
            self.room.take().unwrap_or_else(RowRoom::unbounded),
        );
    }
}

/// Prices `r` at the model that served it (the response's model, else the
/// link's), for the provider that served it. The gateway always knows the
/// call's usage (the provider's, or its estimate).
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
    let (cost, source) = PriceTable::row_cost(&call, prices.call_cost(&call), None);
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
