//! The inline gateway: an OpenAI- and Anthropic-compatible proxy that the
//! `tollgate` binary mounts when `gateway.enabled = true`.
//!
//! It runs the same compiled rules as the collector, synchronously, and hands
//! every call to the collector's row pipeline as a [`tollgate_rules::CallRecord`]
//! with mode `gateway`. This crate holds its configuration today; the proxy
//! itself (routes, fallback, virtual keys) is built on top of it.

use serde::Deserialize;

/// `[gateway]` section of `tollgate.toml`.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct GatewayConfig {
    /// Start the inline gateway inside `tollgate serve`. Default: false.
    #[serde(default)]
    pub enabled: bool,
    /// Address the gateway listens on. Default: 127.0.0.1:7071.
    #[serde(default = "default_listen")]
    pub listen: String,
}

fn default_listen() -> String {
    "127.0.0.1:7071".to_owned()
}

impl Default for GatewayConfig {
    fn default() -> Self {
        Self {
            enabled: false,
            listen: default_listen(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gateway_is_off_by_default() {
        let c = GatewayConfig::default();
        assert!(!c.enabled);
        assert_eq!(c.listen, "127.0.0.1:7071");
    }
}
