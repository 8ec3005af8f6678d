//! The gateway's configuration: `[gateway]` as written ([`GatewayConfig`]),
//! and validated with provider keys loaded ([`ValidConfig`]).

mod raw;
mod validate;

#[cfg(test)]
mod tests;

pub use raw::{
    CircuitBreakerConfig, GatewayConfig, InlineKey, ProviderConfig, ProviderKind, RouteConfig,
    TargetConfig,
};
pub(crate) use validate::ProviderSettings;
pub use validate::ValidConfig;
