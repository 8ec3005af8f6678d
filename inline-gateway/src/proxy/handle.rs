//! One model call, from the authenticated request to the answer: read the
//! few fields the gateway needs, resolve `model` to a chain, check the key's
//! model list and the kill-switch, then for each link (and retry) admit the
//! worst case, send, and either answer or fall back.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::response::Response;
use bytes::Bytes;
use http::{HeaderMap, HeaderName, HeaderValue, StatusCode, header};
use serde::Deserialize;
use serde_json::Value;
use tokio::time::Instant;
use tollgate_rules::CallRecord;
use tollgate_rules::engine::config::Metric;
use tollgate_rules::engine::{CallIntent, Decision, Engine, Refusal, RefusalReason, Scope};
use tollgate_rules::pricing::{CallCost, TokenUsage};

use super::attempt::{self, Failure};
use super::call::{CallLog, Held, KEY_LABEL, REQUEST_ID_LABEL, new_record, random_hex};
use super::error::{ApiError, RefusalInfo, upstream_message};
use super::relay::{Relay, RelayBody};
use super::state::{Chain, Link, Shared};
use crate::clock::now_unix_nanos;
use crate::deps::Leased;
use crate::dialect::{Dialect, Operation};
use crate::keys::VirtualKey;
use crate::providers::Provider;
use crate::translate::responses::ResponseFrame;
use crate::translate::{self, RequestPeek, ResponsePeek, StreamTranslator};
use crate::usage::{AnthropicUsage, OpenAiUsage, ResponsesUsage, Usage};
use crate::worst_case::{self, InputBound};

pub(crate) const USER_HEADER: &str = "x-tollgate-user";
pub(crate) const SESSION_HEADER: &str = "x-tollgate-session";
pub(crate) const ROUTE_HEADER: &str = "x-tollgate-route";
/// The calling app (`service.name` in observe mode) and its environment.
pub(crate) const APP_HEADER: &str = "x-tollgate-app";
pub(crate) const ENVIRONMENT_HEADER: &str = "x-tollgate-environment";

/// Caller headers passed to an Anthropic upstream when the caller speaks Anthropic.
const ANTHROPIC_FORWARDED: [&str; 2] = ["anthropic-version", "anthropic-beta"];

/// Longest metadata header value taken into a row.
const MAX_META_LEN: usize = 256;

fn meta(headers: &HeaderMap, name: &str) -> Option<String> {
    headers
        .get(name)
        .and_then(|v| v.to_str().ok())
        .map(str::trim)
        .filter(|v| !v.is_empty() && v.len() <= MAX_META_LEN)
        .map(str::to_owned)
}

/// W3C `traceparent`: the caller's trace id, so the gateway's row joins its trace.
fn trace_id(headers: &HeaderMap) -> Option<String> {
    let v = headers.get("traceparent")?.to_str().ok()?;
    let mut parts = v.split('-');
    let (_version, trace) = (parts.next()?, parts.next()?);
    (trace.len() == 32 && trace.bytes().all(|b| b.is_ascii_hexdigit()) && trace != "0".repeat(32))
        .then(|| trace.to_ascii_lowercase())
}

/// Longest `model` accepted.
const MAX_MODEL_BYTES: usize = 512;

pub(crate) async fn handle(
    shared: Arc<Shared>,
    op: Operation,
    key: Arc<VirtualKey>,
    request_id: HeaderValue,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let dialect = op.dialect();
    shared.events.request();
    let body = match read_body(&shared, body).await {
        Ok(b) => b,
        Err(e) => return (*e).into_response(dialect),
    };
    let peek = match peek_request(&body) {
        Ok(p) => p,
        Err(e) => return (*e).into_response(dialect),
    };
    // Not empty: `peek_request` checked.
    let model = peek.model.as_deref().unwrap_or_default();
    // Model names are short (the longest, Bedrock inference-profile ARNs,
    // are about 120 bytes); matching model lists costs time per byte.
    if model.len() > MAX_MODEL_BYTES {
        return ApiError::BadRequest(format!(
            "`model` is {} bytes long; at most {MAX_MODEL_BYTES} are accepted",
            model.len()
        ))
        .into_response(dialect);
    }
    // The whole body, for the input bound and for translation.
    let request: Value = match serde_json::from_slice(&body) {
        Ok(v) => v,
        Err(e) => {
            return ApiError::BadRequest(format!("the request body is not a JSON object ({e})"))
                .into_response(dialect);
        }
    };
    let stream = peek.stream() && op != Operation::Embeddings;
    let request_id_str = request_id.to_str().unwrap_or_default().to_owned();

    let chain = shared.resolve(model);
    let mut record = new_record(now_unix_nanos(), op.genai_name(), stream);
    record.trace_id = trace_id(&headers).unwrap_or_else(|| random_hex(16));
    record.span_id = random_hex(8);
    record.org = key.org.clone();
    record.project = key.project.clone();
    record.user = key.user.clone().or_else(|| meta(&headers, USER_HEADER));
    record.session = meta(&headers, SESSION_HEADER);
    record.app = meta(&headers, APP_HEADER);
    record.environment = meta(&headers, ENVIRONMENT_HEADER);
    record.route = meta(&headers, ROUTE_HEADER).or_else(|| {
        chain
            .as_ref()
            .and_then(|c| c.route.as_deref().map(str::to_owned))
    });
    record.request_model = Some(model.to_owned());
    record.labels = BTreeMap::from([
        (KEY_LABEL.to_owned(), key.id.clone()),
        (REQUEST_ID_LABEL.to_owned(), request_id_str.clone()),
    ]);
    // Room for the row first: a call the store could not record is refused
    // before any provider sees it, never served and then dropped.
    let Some(room) = shared.deps.rows.reserve() else {
        shared.events.refused_store_behind();
        return ApiError::Overloaded {
            message: "the collector's store is behind; retry shortly",
            retry_after_s: 1,
        }
        .into_response(dialect);
    };
    let mut log = CallLog::new(Arc::clone(&shared), record, room);

    let Some(chain) = chain else {
        let err = ApiError::ModelNotFound(model.to_owned());
        log.fail(err.status().as_u16(), err.error_type());
        return err.into_response(dialect);
    };

    if !key_allows(&key, &chain, model) {
        let info = RefusalInfo::key_model(model);
        return refuse(&shared, &mut log, &request_id_str, info, dialect);
    }

    // The caller as the kill-switch knows it: org, project, user, key
    // (a label of the row), route...
    let block = shared.deps.blocks.blocked(&log.record);
    if let Some(b) = block {
        let info = RefusalInfo::from_block(&b, now_unix_nanos());
        return refuse(&shared, &mut log, &request_id_str, info, dialect);
    }

    let key_engine = shared.key_limits.engine(&key);
    if let (Some(k), Some(rebuild)) = (&key_engine, &shared.deps.rebuild) {
        // The key's first call in this process: its stored calls first.
        let restored = k
            .restored
            .get_or_try_init(|| async {
                rebuild.replay_key(&k.engine, &key.id).await.map(|n| {
                    tracing::debug!(key = %key.id, calls = n, "key limits read back from the store");
                })
            })
            .await;
        if let Err(e) = restored {
            tracing::warn!(key = %key.id, error = %e, "could not read a key's usage back from the store");
            return ApiError::Overloaded {
                message: "the key's usage could not be read back from the store; retry shortly",
                retry_after_s: 1,
            }
            .into_response(dialect);
        }
    }
    log.set_key_engine(key_engine.map(|k| k.engine));
    let responses = (op == Operation::Responses).then(|| ResponsesCall {
        stateful: translate::responses::stateful_field(&request),
        id: format!("resp_{}", random_hex(16)),
    });
    let call = Call {
        responses,
        shared: &shared,
        op,
        dialect,
        peek: &peek,
        body: &body,
        headers: &headers,
        stream,
        key_id: &key.id,
        request_id: &request_id_str,
        input: InputBound::of(op, &request),
        request: &request,
        // The cap (the caller's, or the default the gateway then sends)
        // for each of the `n` choices.
        max_output_tokens: if op == Operation::Embeddings {
            0
        } else {
            worst_case::output_tokens(peek.cap(op).unwrap_or(shared.default_max_tokens), peek.n)
        },
    };
    call.run(&chain, log).await
}

/// Whether `key`'s model list lets it ask for `model`, resolved to `chain`.
pub(crate) fn key_allows(key: &VirtualKey, chain: &Chain, model: &str) -> bool {
    match (&chain.route, chain.links.first()) {
        (Some(route), _) => key.allows_model([route.as_ref()]),
        (None, Some(link)) => {
            let qualified = format!("{}/{}", link.provider.name, link.model);
            key.allows_model([model, qualified.as_str(), link.model.as_ref()])
        }
        (None, None) => false,
    }
}

fn refuse(
    shared: &Shared,
    log: &mut CallLog,
    request_id: &str,
    info: RefusalInfo,
    dialect: Dialect,
) -> Response {
    shared.events.refused(request_id, &info.rule_id, info.code);
    log.refuse(info.status.as_u16(), info.code, &info.rule_id);
    ApiError::Refused(info).into_response(dialect)
}

/// What a Responses call needs beyond the others.
struct ResponsesCall {
    /// The field that needs the provider's own Responses API, if any.
    stateful: Option<&'static str>,
    /// The id of the response when the gateway writes it (translated).
    id: String,
}

struct Call<'a> {
    responses: Option<ResponsesCall>,
    shared: &'a Arc<Shared>,
    op: Operation,
    dialect: Dialect,
    peek: &'a RequestPeek<'a>,
    body: &'a Bytes,
    headers: &'a HeaderMap,
    stream: bool,
    key_id: &'a str,
    request_id: &'a str,
    /// The parsed body.
    request: &'a Value,
    /// What the input can be billed at most (see `worst_case`).
    input: InputBound,
    /// What the output can be billed at most: the cap times `n`.
    max_output_tokens: u64,
}

/// Where admission stands with the leases of shared budgets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Lease {
    /// Admit against the leases held (more may be asked for).
    Held,
    /// More was asked for: a budget still short is exceeded.
    Asked,
    /// More could not be asked for: each budget's `on_ledger_error`.
    Unreachable,
}

/// A successful attempt.
enum Served {
    Json(Bytes, Answer),
    Stream(Box<Relay>),
}

impl Call<'_> {
    async fn run(&self, chain: &Chain, mut log: CallLog) -> Response {
        let mut attempt: u32 = 0;
        let mut last_failure: Option<(Failure, Arc<Provider>, Dialect)> = None;
        let mut first_refusal: Option<RefusalInfo> = None;
        let mut breaker_wait: Option<Duration> = None;
        let mut unsupported = false;
        let mut stateless: Option<&'static str> = None;
        'links: for link in &chain.links {
            let provider = &link.provider;
            let Some(up_op) = self.op.upstream(provider.dialect, provider.responses_api) else {
                unsupported = true;
                continue;
            };
            // The dialect this link is spoken to in.
            let wire = up_op.dialect();
            if let Some(field) = self.responses.as_ref().and_then(|r| r.stateful)
                && wire != Dialect::Responses
            {
                stateless = Some(field);
                continue;
            }
            for retry in 0..=chain.retries {
                if retry > 0 {
                    tokio::time::sleep(attempt::backoff(chain.backoff, retry)).await;
                }
                // A skipped link still counts as an attempt: the row's
                // index says which link of the chain served.
                if let Err(wait) = link.provider.breaker.try_pass() {
                    breaker_wait = Some(breaker_wait.map_or(wait, |w| w.min(wait)));
                    attempt += 1;
                    continue 'links;
                }
                let (held, worst) = match self.admit(link, &log).await {
                    Ok(h) => h,
                    Err(info) => {
                        if first_refusal.is_none() {
                            log.record.provider = Some(link.provider.system.to_string());
                            log.record.request_model = Some(link.model.to_string());
                            log.record.upstream = Some(link.provider.upstream.to_string());
                            first_refusal = Some(*info);
                        }
                        attempt += 1;
                        continue 'links;
                    }
                };
                log.attempt(link, attempt, held, worst);
                let upstream_body = match self.upstream_body(link, wire) {
                    Ok(b) => b,
                    Err(message) => {
                        let err = ApiError::BadRequest(message);
                        log.fail(err.status().as_u16(), err.error_type());
                        return err.into_response(self.dialect);
                    }
                };
                let forwarded = self.forwarded(link);
                let req = match link.provider.request(
                    up_op,
                    &link.model,
                    upstream_body,
                    self.stream,
                    &forwarded,
                ) {
                    Ok(r) => r,
                    Err(_) => {
                        log.release();
                        unsupported = true;
                        continue 'links;
                    }
                };
                let deadline = Instant::now() + link.timeout;
                match self.try_link(wire, req, deadline).await {
                    Ok(served) => {
                        link.provider.breaker.success();
                        if attempt > 0 {
                            self.shared.events.served_by_fallback(
                                self.request_id,
                                &link.provider.name,
                                attempt,
                            );
                        }
                        return self.answer(wire, link, served, log);
                    }
                    Err(f) => {
                        self.shared.events.attempt_failed(
                            self.request_id,
                            &link.provider.name,
                            &link.model,
                            attempt,
                            f.label(),
                        );
                        if !f.is_retryable() {
                            // The provider is up; the request is the problem.
                            link.provider.breaker.success();
                            let err = upstream_error(
                                f,
                                &link.provider,
                                wire.envelope() == self.dialect.envelope(),
                            );
                            log.fail(err.status().as_u16(), err.error_type());
                            return err.into_response(self.dialect);
                        }
                        if link.provider.breaker.failure() {
                            self.shared.events.breaker_opened(&link.provider.name);
                        }
                        // A provider that may have taken the call on may
                        // bill it: it stays counted at its worst case.
                        match f.unanswered() {
                            Some((status, kind)) => log.unanswered(status, kind),
                            None => log.release(),
                        }
                        let again = f.may_pass_on_retry();
                        last_failure = Some((f, Arc::clone(&link.provider), wire));
                        attempt += 1;
                        if !again {
                            continue 'links;
                        }
                    }
                }
            }
        }
        let err = match (last_failure, first_refusal) {
            (Some((f, provider, wire)), _) => {
                upstream_error(f, &provider, wire.envelope() == self.dialect.envelope())
            }
            (None, Some(info)) => {
                self.shared
                    .events
                    .refused(self.request_id, &info.rule_id, info.code);
                log.refuse(info.status.as_u16(), info.code, &info.rule_id);
                return ApiError::Refused(info).into_response(self.dialect);
            }
            (None, None) => match breaker_wait {
                Some(wait) => ApiError::NoHealthyUpstream {
                    retry_after_s: wait.as_secs().max(1),
                },
                None => match stateless {
                    Some(field) => {
                        ApiError::BadRequest(translate::responses::stateless_message(field))
                    }
                    None if unsupported => ApiError::Unsupported(format!(
                        "no provider of `{}` serves this endpoint",
                        self.peek.model.as_deref().unwrap_or_default()
                    )),
                    None => ApiError::UpstreamUnreachable,
                },
            },
        };
        log.fail(err.status().as_u16(), err.error_type());
        err.into_response(self.dialect)
    }

    fn intent(&self, link: &Link, record: &CallRecord) -> CallIntent {
        let image_tokens = worst_case::image_tokens(&link.model, self.shared.image_input_tokens);
        let input_tokens = self
            .input
            .tokens_with_unseen(image_tokens, self.shared.unseen_input_tokens);
        let worst = TokenUsage {
            input: input_tokens,
            output: self.max_output_tokens,
            cache_read: 0,
            cache_write: 0,
        };
        let cost = CallCost {
            provider: Some(&link.provider.system),
            response_model: None,
            request_model: Some(&link.model),
            usage: worst,
            has_usage: true,
            failed: false,
        };
        CallIntent {
            at_unix_nanos: now_unix_nanos(),
            scope: Scope {
                key: Some(self.key_id.to_owned()),
                ..record.scope()
            },
            provider: Some(link.provider.system.to_string()),
            model: Some(link.model.to_string()),
            upstream: Some(link.provider.upstream.to_string()),
            labels: BTreeMap::from([(KEY_LABEL.to_owned(), self.key_id.to_owned())]),
            input_tokens,
            max_output_tokens: self.max_output_tokens,
            worst_case_cost_usd: self
                .shared
                .deps
                .prices
                .call_cost_or(&cost, self.shared.unpriced_price.as_ref()),
        }
    }

    /// A budget on cost that would refuse calls, met by `intent` whose
    /// model has no price: such a call cannot be counted against it.
    fn unpriced_under(&self, intent: &CallIntent, log: &CallLog) -> Option<RefusalInfo> {
        if intent.worst_case_cost_usd.is_some() {
            return None;
        }
        let engines = log
            .key_engine()
            .into_iter()
            .chain([&self.shared.deps.engine]);
        for engine in engines {
            let rules = engine.rules();
            if let Some(rule) = rules.blocking_budget(Metric::CostUsd, intent) {
                return Some(RefusalInfo::unpriced(
                    intent.model.as_deref().unwrap_or_default(),
                    &rule.id,
                    tollgate_rules::engine::scope_label(&rule.scope, intent),
                ));
            }
        }
        None
    }

    /// Reserves the worst case on the key's limits, then on the rules. The
    /// intent is built from the row's own scope, so `settle` meets the
    /// counters `admit` reserved on.
    async fn admit(&self, link: &Link, log: &CallLog) -> Result<(Held, Usage), Box<RefusalInfo>> {
        /// Rounds of leasing before a budget still short is judged
        /// exceeded: a call short on several counters can find one of them
        /// taken by concurrent calls while it waited for another.
        const LEASE_ROUNDS: usize = 3;
        let intent = self.intent(link, &log.record);
        if let Some(info) = self.unpriced_under(&intent, log) {
            return Err(Box::new(info));
        }
        let worst = Usage {
            input: intent.input_tokens,
            output: intent.max_output_tokens,
            ..Usage::default()
        };
        let refused = |r: Refusal| Box::new(RefusalInfo::from_refusal(&r));
        let mut lease = Lease::Held;
        let (mut rebuilds, mut rounds) = (0, 0);
        loop {
            match self.try_admit(&intent, log, lease) {
                // Counters evicted from memory are read back from the store
                // first; once more if one was evicted again meanwhile.
                Err(r) if r.reason == RefusalReason::Rebuilding && rebuilds < 2 => {
                    rebuilds += 1;
                    self.rebuild(&intent).await;
                }
                // Shared budgets the instance's leases do not cover are
                // leased first; once the server is out of room, or after a
                // few rounds lost to concurrent calls, a budget still short
                // is exceeded.
                Err(r) if r.reason == RefusalReason::LeaseNeeded => {
                    let Some(leases) = &self.shared.deps.leases else {
                        return Err(refused(r));
                    };
                    rounds += 1;
                    match leases.lease(&r.short).await {
                        Ok(Leased::Granted) if rounds <= LEASE_ROUNDS => {}
                        Ok(_) => lease = Lease::Asked,
                        Err(e) => {
                            tracing::debug!(error = %e, "no lease from the shared ledger");
                            lease = Lease::Unreachable;
                        }
                    }
                }
                other => return other.map(|held| (held, worst)).map_err(refused),
            }
        }
    }

    /// Reads back the counters of `intent` the engine evicted, if any.
    async fn rebuild(&self, intent: &CallIntent) {
        let Some(rebuild) = &self.shared.deps.rebuild else {
            return;
        };
        let engine = &self.shared.deps.engine;
        let mut plan = engine.rebuild_plan();
        engine.plan_rebuild(&mut plan, intent, intent.at_unix_nanos);
        if plan.is_empty() {
            return;
        }
        if let Err(e) = rebuild.rebuild(engine, plan).await {
            tracing::warn!(error = %e, "could not read evicted counters back from the store");
        }
    }

    /// `lease` says what became of the shared budgets' leases.
    fn try_admit(&self, intent: &CallIntent, log: &CallLog, lease: Lease) -> Result<Held, Refusal> {
        let admit = |engine: &Engine| match lease {
            Lease::Held => engine.admit(intent),
            Lease::Asked => engine.admit_leased(intent),
            Lease::Unreachable => engine.admit_unleased(intent),
        };
        let key = match log.key_engine() {
            Some(engine) => match admit(engine) {
                Decision::Allow(r) => Some((engine.clone(), r)),
                Decision::Deny(refusal) => return Err(refusal),
            },
            None => None,
        };
        match admit(&self.shared.deps.engine) {
            Decision::Allow(main) => Ok(Held { main, key }),
            // Dropping `key` gives its reservation back.
            Decision::Deny(refusal) => Err(refusal),
        }
    }

    /// The request body for `link`, in its dialect, naming its model, its
    /// output capped: a call without a cap of its own gets the gateway's
    /// default in the link's field, so the provider stops where the
    /// reservation does.
    fn upstream_body(&self, link: &Link, wire: Dialect) -> Result<Bytes, String> {
        let model = link.model.as_ref();
        let invalid = |e: serde_json::Error| format!("the request body is not valid JSON ({e})");
        let default_cap = self.shared.default_max_tokens;
        let uncapped = self.op != Operation::Embeddings && self.peek.cap(self.op).is_none();
        let cap_field = match wire {
            Dialect::Responses => "max_output_tokens",
            Dialect::OpenAi | Dialect::Anthropic => link.provider.output_cap_field(),
        };
        let cap = uncapped.then_some((cap_field, default_cap));
        match (self.dialect, wire) {
            (Dialect::Responses, Dialect::Responses) => {
                translate::upstream_body(self.body, self.peek, model, false, cap)
                    .map(Bytes::from)
                    .map_err(invalid)
            }
            (Dialect::Responses, Dialect::OpenAi) => {
                let out = translate::responses::responses_to_chat(
                    self.request,
                    model,
                    link.provider.output_cap_field(),
                    default_cap,
                )?;
                serde_json::to_vec(&out).map(Bytes::from).map_err(invalid)
            }
            (Dialect::Responses, Dialect::Anthropic) => {
                let chat = translate::responses::responses_to_chat(
                    self.request,
                    model,
                    "max_tokens",
                    default_cap,
                )?;
                let out = translate::request::openai_to_anthropic(&chat, model, default_cap);
                serde_json::to_vec(&out).map(Bytes::from).map_err(invalid)
            }
            // Only Responses calls are sent to the Responses API.
            (Dialect::OpenAi | Dialect::Anthropic, Dialect::Responses) => {
                Err("this endpoint cannot be served by the Responses API".to_owned())
            }
            (Dialect::OpenAi, Dialect::OpenAi) => {
                translate::upstream_body(self.body, self.peek, model, self.stream, cap)
                    .map(Bytes::from)
                    .map_err(invalid)
            }
            (Dialect::Anthropic, Dialect::Anthropic) => {
                translate::upstream_body(self.body, self.peek, model, false, cap)
                    .map(Bytes::from)
                    .map_err(invalid)
            }
            (Dialect::OpenAi, Dialect::Anthropic) => {
                let out = translate::request::openai_to_anthropic(self.request, model, default_cap);
                serde_json::to_vec(&out).map(Bytes::from).map_err(invalid)
            }
            (Dialect::Anthropic, Dialect::OpenAi) => {
                let out = translate::request::anthropic_to_openai(
                    self.request,
                    model,
                    link.provider.output_cap_field(),
                    default_cap,
                );
                serde_json::to_vec(&out).map(Bytes::from).map_err(invalid)
            }
        }
    }

    /// Caller headers the link may see: Anthropic's version and betas, when
    /// caller and link both speak Anthropic. Nothing else is forwarded.
    fn forwarded(&self, link: &Link) -> Vec<(HeaderName, HeaderValue)> {
        if self.dialect != Dialect::Anthropic || link.provider.dialect != Dialect::Anthropic {
            return Vec::new();
        }
        ANTHROPIC_FORWARDED
            .iter()
            .filter_map(|name| {
                let v = self.headers.get(*name)?.clone();
                Some((HeaderName::from_static(name), v))
            })
            .collect()
    }

    async fn try_link(
        &self,
        wire: Dialect,
        req: reqwest::RequestBuilder,
        deadline: Instant,
    ) -> Result<Served, Failure> {
        let resp = attempt::send(req, deadline).await?;
        if !self.stream {
            let bytes = attempt::read_json(resp, deadline).await?;
            let answer = match read_answer(self.op, wire, &bytes) {
                Some(a) => a,
                // A success that is not JSON is a broken provider: try the next.
                None if serde_json::from_slice::<serde::de::IgnoredAny>(&bytes).is_err() => {
                    return Err(Failure::Body);
                }
                // JSON, but not the answer's shape: nothing to read from it.
                None => Answer::default(),
            };
            return Ok(Served::Json(bytes, answer));
        }
        let created = u64::try_from(now_unix_nanos() / 1_000_000_000).unwrap_or(0);
        let wants_usage = self.peek.wants_usage();
        let translator = match &self.responses {
            Some(r) if wire != Dialect::Responses => StreamTranslator::to_responses(
                wire,
                ResponseFrame::new(self.request, r.id.clone(), created),
            ),
            _ => StreamTranslator::between(self.dialect, wire, wants_usage, created),
        };
        let mut relay = Relay::new(resp, translator);
        attempt::prime(&mut relay, deadline).await?;
        Ok(Served::Stream(Box::new(relay)))
    }

    fn answer(&self, wire: Dialect, link: &Link, served: Served, mut log: CallLog) -> Response {
        match served {
            Served::Stream(relay) => {
                let body = RelayBody::new(*relay, log, link.timeout);
                let mut r = Response::new(Body::from_stream(body));
                let h = r.headers_mut();
                h.insert(
                    header::CONTENT_TYPE,
                    HeaderValue::from_static("text/event-stream"),
                );
                h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
                r
            }
            Served::Json(bytes, read) => {
                let r = &mut log.record;
                r.response_model = read.model;
                r.request_id = read.id;
                r.finish_reason = read.finish_reason;
                let out = if self.dialect == wire {
                    bytes
                } else {
                    let usage = read.usage.unwrap_or_default();
                    let v: Value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
                    let created = u64::try_from(now_unix_nanos() / 1_000_000_000).unwrap_or(0);
                    let frame = || {
                        let id = self.responses.as_ref().map(|r| r.id.clone());
                        ResponseFrame::new(self.request, id.unwrap_or_default(), created)
                    };
                    let translated = match (self.dialect, wire) {
                        (Dialect::OpenAi, _) => {
                            translate::response::anthropic_to_openai(&v, &usage, created)
                        }
                        (Dialect::Anthropic, _) => {
                            translate::response::openai_to_anthropic(&v, &usage)
                        }
                        (Dialect::Responses, Dialect::Anthropic) => {
                            let chat =
                                translate::response::anthropic_to_openai(&v, &usage, created);
                            translate::responses::chat_to_responses(&chat, &usage, &frame())
                        }
                        (Dialect::Responses, _) => {
                            translate::responses::chat_to_responses(&v, &usage, &frame())
                        }
                    };
                    Bytes::from(serde_json::to_vec(&translated).unwrap_or_default())
                };
                // Without usage, the answer's bytes bound its tokens.
                let bytes = if read.usage.is_none() {
                    out.len() as u64
                } else {
                    0
                };
                complete_after_answer(log, read.usage, bytes, read.pending);
                let mut resp = Response::new(Body::from(out));
                resp.headers_mut().insert(
                    header::CONTENT_TYPE,
                    HeaderValue::from_static("application/json"),
                );
                resp
            }
        }
    }
}

/// What the caller gets when `f` was the provider's last word: its own
/// error body, scrubbed, when the caller speaks the provider's envelope
/// (`same_envelope`), else a message in the caller's.
pub(crate) fn upstream_error(f: Failure, provider: &Provider, same_envelope: bool) -> ApiError {
    match f {
        Failure::Timeout => ApiError::UpstreamTimeout,
        Failure::Connect | Failure::Body => ApiError::UpstreamUnreachable,
        Failure::Redirect => ApiError::UpstreamRedirect,
        Failure::Status { status, .. } if status == StatusCode::UNAUTHORIZED => {
            ApiError::UpstreamAuth
        }
        Failure::Status {
            status,
            body,
            retry_after,
        } => {
            let text = String::from_utf8_lossy(&body);
            let scrubbed = provider.scrub(&text);
            if same_envelope && !scrubbed.trim().is_empty() {
                ApiError::UpstreamRaw {
                    status,
                    body: Bytes::from(scrubbed.into_owned()),
                    retry_after,
                }
            } else {
                let message = upstream_message(scrubbed.as_bytes())
                    .unwrap_or_else(|| format!("the provider answered {status}"));
                ApiError::Upstream {
                    status,
                    message: format!("{}: {message}", provider.name),
                    retry_after,
                }
            }
        }
    }
}

/// What rows need from a JSON answer.
#[derive(Debug, Default)]
pub(crate) struct Answer {
    pub(crate) id: Option<String>,
    pub(crate) model: Option<String>,
    pub(crate) finish_reason: Option<String>,
    pub(crate) usage: Option<Usage>,
    /// A Responses API background run, queued or in progress: the
    /// provider bills it later, out of the gateway's sight.
    pub(crate) pending: bool,
}

#[derive(Deserialize)]
struct OpenAiAnswer {
    #[serde(default)]
    id: Option<String>,
    #[serde(default)]
    model: Option<String>,
    #[serde(default)]
    choices: Option<Vec<OpenAiChoice>>,
    #[serde(default)]
    usage: Option<OpenAiUsage>,
}

#[derive(Deserialize)]
struct OpenAiChoice {
    #[serde(default)]
    finish_reason: Option<String>,
}

#[derive(Deserialize)]
struct AnthropicAnswer {
    #[serde(default)]
    id: Option<String>,
    #[serde(default)]
    model: Option<String>,
    #[serde(default)]
    stop_reason: Option<String>,
    #[serde(default)]
    usage: Option<AnthropicUsage>,
}

/// What rows need from a JSON answer, or `None` when it does not parse as one.
pub(crate) fn read_answer(op: Operation, dialect: Dialect, bytes: &[u8]) -> Option<Answer> {
    Some(match dialect {
        Dialect::OpenAi => {
            let a = serde_json::from_slice::<OpenAiAnswer>(bytes).ok()?;
            Answer {
                // Embeddings carry no id worth deduplicating on.
                id: a.id.filter(|_| op != Operation::Embeddings),
                model: a.model,
                finish_reason: a
                    .choices
                    .and_then(|c| c.into_iter().next())
                    .and_then(|c| c.finish_reason),
                usage: a.usage.map(|u| u.to_usage()),
                pending: false,
            }
        }
        Dialect::Anthropic => {
            let a = serde_json::from_slice::<AnthropicAnswer>(bytes).ok()?;
            Answer {
                id: a.id,
                model: a.model,
                finish_reason: a.stop_reason,
                usage: a.usage.map(AnthropicUsage::to_usage),
                pending: false,
            }
        }
        Dialect::Responses => {
            let a = serde_json::from_slice::<ResponsePeek>(bytes).ok()?;
            Answer {
                pending: matches!(a.status.as_deref(), Some("queued" | "in_progress")),
                finish_reason: a.finish_reason(),
                usage: a.usage.map(ResponsesUsage::to_usage),
                id: a.id,
                model: a.model,
            }
        }
    })
}

/// Settles a JSON answer and submits its row on a task of its own, so the
/// answer is written to the caller first. Until then the call's reservation
/// stays held: a limit reads high for those microseconds, never low. The row
/// is not lost if the task never runs (the runtime shutting down): dropping
/// it settles all the same.
fn complete_after_answer(log: CallLog, usage: Option<Usage>, output_bytes: u64, pending: bool) {
    struct Completion {
        log: CallLog,
        usage: Option<Usage>,
        output_bytes: u64,
        pending: bool,
    }
    impl Drop for Completion {
        fn drop(&mut self) {
            if self.pending {
                self.log.complete_pending(200);
            } else {
                self.log.complete(200, self.usage.take(), self.output_bytes);
            }
        }
    }
    let completion = Completion {
        log,
        usage,
        output_bytes,
        pending,
    };
    tokio::spawn(async move { drop(completion) });
}

/// The request body, at most `max_request_bytes` of it.
pub(crate) async fn read_body(shared: &Shared, body: Body) -> Result<Bytes, Box<ApiError>> {
    let limit = shared.max_request_bytes;
    axum::body::to_bytes(body, limit).await.map_err(|e| {
        let too_large = std::error::Error::source(&e)
            .is_some_and(|s| s.is::<http_body_util::LengthLimitError>());
        Box::new(if too_large {
            ApiError::TooLarge(limit)
        } else {
            ApiError::BadRequest("the request body could not be read".to_owned())
        })
    })
}

/// What the gateway reads of a request body before routing it; its
/// `model` is required and not empty.
pub(crate) fn peek_request(body: &[u8]) -> Result<RequestPeek<'_>, Box<ApiError>> {
    let peek: RequestPeek<'_> = serde_json::from_slice(body).map_err(|e| {
        Box::new(ApiError::BadRequest(format!(
            "the request body is not a JSON object ({e})"
        )))
    })?;
    if peek.model.as_deref().is_none_or(str::is_empty) {
        return Err(Box::new(ApiError::BadRequest(
            "`model` is required".to_owned(),
        )));
    }
    Ok(peek)
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use tollgate_rules::CallStatus;
    use tollgate_rules::engine::{Engine, compile};
    use tollgate_rules::pricing::PriceTable;

    use super::*;
    use crate::{GatewayConfig, GatewayDeps, MemoryKeyStore, MemoryRows, RowRoom, StaticBlocks};

    fn shared(rows: Arc<MemoryRows>) -> Arc<Shared> {
        #[derive(serde::Deserialize)]
        struct File {
            gateway: GatewayConfig,
        }
        let text = r#"
[gateway]
enabled = true
[[gateway.providers]]
name = "local"
kind = "openai_compatible"
base_url = "http://127.0.0.1:9/v1"
"#;
        let config = toml::from_str::<File>(text)
            .unwrap()
            .gateway
            .validate_with(&|_| None)
            .unwrap();
        let deps = GatewayDeps {
            engine: Engine::new(compile(&[]).unwrap()),
            prices: Arc::new(PriceTable::builtin().unwrap()),
            rows,
            keys: Arc::new(MemoryKeyStore::new()),
            blocks: Arc::new(StaticBlocks::new()),
            rebuild: None,
            leases: None,
        };
        Arc::new(Shared::new(&config, deps).unwrap())
    }

    /// The row of a JSON answer is submitted after the handler returns, and
    /// still submitted when the runtime stops before the task that would
    /// submit it runs.
    #[test]
    fn json_answer_row_follows_the_answer_and_survives_shutdown() {
        let rows = Arc::new(MemoryRows::new());
        let mut record = new_record(now_unix_nanos(), "chat", false);
        record.provider = Some("openai".to_owned());
        record.request_model = Some("gpt-4o-mini".to_owned());
        let log = CallLog::new(shared(Arc::clone(&rows)), record, RowRoom::unbounded());
        let usage = Usage {
            input: 12,
            output: 7,
            ..Usage::default()
        };
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        rt.block_on(async { complete_after_answer(log, Some(usage), 0, false) });
        assert_eq!(rows.len(), 0, "settled before the answer was written");
        drop(rt);
        let stored = rows.records();
        assert_eq!(stored.len(), 1);
        let r = &stored[0];
        assert_eq!(r.status, CallStatus::Ok);
        assert_eq!(r.http_status, Some(200));
        assert_eq!((r.input_tokens, r.output_tokens), (12, 7));
        assert!(r.cost_usd.is_some_and(|c| c > 0.0));
        assert!(!r.labels.contains_key(crate::proxy::call::USAGE_ESTIMATED));
    }
}
