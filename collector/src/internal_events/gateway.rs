//! The gateway's counters in the collector's `/metrics`, read from the
//! running gateway at scrape time (`tollgate_gateway_*`). Absent while the
//! gateway is off.

use std::fmt;
use std::sync::{Arc, OnceLock};

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::counter::ConstCounter;
use tollgate_gateway::{Gateway, GatewayStats};

/// A slot the gateway is put in once it runs; registered with the
/// collector's metrics registry at start-up.
#[derive(Clone, Default)]
pub struct GatewayMetrics(Arc<OnceLock<Arc<Gateway>>>);

impl fmt::Debug for GatewayMetrics {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("GatewayMetrics")
            .field("attached", &self.0.get().is_some())
            .finish()
    }
}

impl GatewayMetrics {
    /// Reports `gateway`'s counters from now on (the first call wins).
    pub fn attach(&self, gateway: Arc<Gateway>) {
        let _ = self.0.set(gateway);
    }
}

/// (name, help, value) of every counter.
fn counters(s: &GatewayStats) -> [(&'static str, &'static str, u64); 8] {
    [
        (
            "gateway_requests",
            "Authenticated model calls the gateway received",
            s.requests,
        ),
        (
            "gateway_refused",
            "Gateway calls refused by a rule, a key limit, a key's model list or the kill-switch",
            s.refused,
        ),
        (
            "gateway_auth_failures",
            "Gateway requests without a valid virtual key",
            s.auth_failures,
        ),
        (
            "gateway_attempts_failed",
            "Upstream attempts that failed (timeout, connection, 429, 5xx)",
            s.attempts_failed,
        ),
        (
            "gateway_fallbacks",
            "Gateway calls served by another attempt than their first",
            s.fallbacks,
        ),
        (
            "gateway_breakers_opened",
            "Times a provider's circuit breaker opened",
            s.breakers_opened,
        ),
        (
            "gateway_streams_cut",
            "Streams cut by the caller or the upstream, settled on an estimate",
            s.streams_cut,
        ),
        (
            "gateway_rows",
            "Rows the gateway handed to the row pipeline",
            s.rows,
        ),
    ]
}

impl Collector for GatewayMetrics {
    fn encode(&self, mut encoder: DescriptorEncoder<'_>) -> Result<(), fmt::Error> {
        let Some(gateway) = self.0.get() else {
            return Ok(());
        };
        for (name, help, value) in counters(&gateway.stats()) {
            let counter = ConstCounter::new(value);
            let metric = encoder.encode_descriptor(name, help, None, counter.metric_type())?;
            counter.encode(metric)?;
        }
        Ok(())
    }
}
