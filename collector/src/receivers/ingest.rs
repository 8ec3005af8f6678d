//! What both receivers do with a decoded export request.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTracePartialSuccess, ExportTraceServiceRequest, ExportTraceServiceResponse,
};

use crate::internal_events::{InternalEvents, Refusal, Transport};
use crate::kafka::{CallProducer, ProduceError};
use crate::normalize::{NormalizeOutcome, Normalizer};
use crate::pipeline::{QueueError, RowQueue};
use crate::query::Tenant;

/// Seconds a client is told to wait when the queue is full.
pub const RETRY_AFTER_SECS: u64 = 1;

/// Why a whole request was refused after decoding.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum IngestRefusal {
    /// The queue has no room: retry after [`RETRY_AFTER_SECS`].
    QueueFull,
    /// More model calls in one request than the queue can ever hold.
    TooManyRows(String),
    /// Shutdown in progress: retry elsewhere or later.
    ShuttingDown,
    /// Kafka did not take the calls: retry after [`RETRY_AFTER_SECS`].
    Unavailable(String),
}

/// Where accepted calls go.
#[derive(Debug)]
pub enum Destination {
    /// The local row queue (then the store).
    Queue(RowQueue),
    /// The Kafka topic (ingest role); answered once Kafka acknowledged.
    Kafka(CallProducer),
}

/// Normalise, price, queue. Shared by the gRPC and HTTP receivers.
#[derive(Debug)]
pub struct Ingest {
    normalizer: Normalizer,
    destination: Destination,
    events: Arc<InternalEvents>,
    /// Model calls in the last request queued: a request is refused before
    /// it is decoded when the queue has less room than that.
    last_rows: AtomicUsize,
}

impl Ingest {
    pub fn new(normalizer: Normalizer, queue: RowQueue, events: Arc<InternalEvents>) -> Self {
        Self::with_destination(normalizer, Destination::Queue(queue), events)
    }

    pub fn with_destination(
        normalizer: Normalizer,
        destination: Destination,
        events: Arc<InternalEvents>,
    ) -> Self {
        Self {
            normalizer,
            destination,
            events,
            last_rows: AtomicUsize::new(1),
        }
    }

    /// Whether a request should be refused as "queue full" before it is
    /// decoded (gRPC: before tonic reads the message; HTTP: once the body
    /// is read): the queue has less room than the last request
    /// queued took (at least one row). Under sustained overload this turns
    /// away the requests that would be refused anyway after decoding, at
    /// almost no cost, and leaves the CPU to the writer that makes room.
    /// The refusal is counted here.
    pub fn refuse_before_decode(&self, transport: Transport) -> bool {
        let Destination::Queue(queue) = &self.destination else {
            return false;
        };
        let need = self
            .last_rows
            .load(Ordering::Relaxed)
            .clamp(1, queue.capacity().max(1));
        if queue.room() >= need {
            return false;
        }
        self.events.request_refused(
            transport,
            Refusal::QueueFull,
            "the row queue is full (refused before decoding)",
        );
        true
    }

    pub fn events(&self) -> &InternalEvents {
        &self.events
    }

    /// Queues the model calls of `request`, sent by `tenant`; the response
    /// reports spans refused for bad values, or for claiming another
    /// tenant, the OTLP way (partial success).
    pub async fn export(
        &self,
        transport: Transport,
        tenant: &Tenant,
        request: ExportTraceServiceRequest,
    ) -> Result<ExportTraceServiceResponse, IngestRefusal> {
        let mut outcome = self.normalizer.normalize(request);
        within_tenant(tenant, &mut outcome);
        let accepted = outcome.records.len() as u64;
        let queue = match &self.destination {
            Destination::Queue(queue) => queue,
            Destination::Kafka(producer) => {
                let n = outcome.records.len();
                if let Err(e) = producer.send(&outcome.records).await {
                    let refusal = match e {
                        ProduceError::Full => IngestRefusal::QueueFull,
                        ProduceError::Failed(_) => IngestRefusal::Unavailable(e.to_string()),
                    };
                    self.events.kafka_produce_failed(n, &e.to_string());
                    self.events
                        .request_refused(transport, Refusal::Unavailable, &e.to_string());
                    return Err(refusal);
                }
                self.events.kafka_produced(n);
                return Ok(self.accepted(transport, accepted, outcome));
            }
        };
        let rows = outcome.records.len();
        let logged = match queue.try_push(std::mem::take(&mut outcome.records)) {
            Ok(end) => {
                if rows > 0 {
                    self.last_rows.store(rows, Ordering::Relaxed);
                }
                end
            }
            Err(e) => {
                let (refusal, answer) = match e {
                    QueueError::Full => (Refusal::QueueFull, IngestRefusal::QueueFull),
                    QueueError::Closed => (Refusal::ShuttingDown, IngestRefusal::ShuttingDown),
                    QueueError::TooLarge { .. } => {
                        (Refusal::TooLarge, IngestRefusal::TooManyRows(e.to_string()))
                    }
                    QueueError::Disk(_) => (
                        Refusal::Unavailable,
                        IngestRefusal::Unavailable(e.to_string()),
                    ),
                };
                self.events
                    .request_refused(transport, refusal, &e.to_string());
                return Err(answer);
            }
        };
        self.events.queue_depth(queue.depth());
        // Answered once the rows survive what the durability level promises.
        queue.durable(logged).await;
        Ok(self.accepted(transport, accepted, outcome))
    }

    fn accepted(
        &self,
        transport: Transport,
        accepted: u64,
        outcome: crate::normalize::NormalizeOutcome,
    ) -> ExportTraceServiceResponse {
        self.events.request_accepted(
            transport,
            accepted,
            outcome.skipped_spans,
            outcome.rejected_spans,
        );
        let non_calls = crate::normalize::NonCallKind::ALL
            .iter()
            .zip(outcome.non_calls)
            .map(|(kind, n)| (kind.as_str(), n));
        self.events
            .spans_classified(non_calls, outcome.costs_replaced);
        self.events
            .labels_dropped(self.normalizer.take_labels_dropped());
        // OTLP: a message with no rejected spans is a warning.
        let partial_success =
            (outcome.rejected_spans > 0 || outcome.warning.is_some()).then(|| {
                ExportTracePartialSuccess {
                    rejected_spans: i64::try_from(outcome.rejected_spans).unwrap_or(i64::MAX),
                    error_message: outcome.first_error.or(outcome.warning).unwrap_or_default(),
                }
            });
        ExportTraceServiceResponse { partial_success }
    }
}

/// Gives each call the key's org, project and user when it names none, and
/// refuses (as rejected spans) the calls that name another: a key's spans
/// are never counted under another tenant.
fn within_tenant(tenant: &Tenant, outcome: &mut NormalizeOutcome) {
    if tenant.is_everything() {
        return;
    }
    let mut refused = 0u64;
    let mut first = None;
    outcome.records.retain_mut(
        |r| match tenant.claim(&mut r.org, &mut r.project, &mut r.user) {
            Ok(()) => true,
            Err(why) => {
                refused += 1;
                first.get_or_insert(why);
                false
            }
        },
    );
    if refused > 0 {
        outcome.rejected_spans += refused;
        if outcome.first_error.is_none() {
            outcome.first_error = first;
        }
    }
}
