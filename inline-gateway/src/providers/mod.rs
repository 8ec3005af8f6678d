//! Upstream providers: one pooled HTTP client per provider, the URLs and
//! auth headers of each kind, and a circuit breaker per provider.

mod breaker;
mod provider;
mod tls;

pub(crate) use breaker::Breaker;
pub(crate) use provider::Provider;
pub(crate) use tls::client_tls;
