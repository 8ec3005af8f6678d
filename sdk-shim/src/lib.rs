//! `tollgate-sdk`: what a Rust agent links.
//!
//! - [`init_tracer_provider`] sets up the OTLP exporter with the resource
//!   attributes the collector reads (`service.name`,
//!   `deployment.environment.name`); [`ExporterConfig`] adds an `ingest`
//!   key for a collector that requires keys.
//! - [`record_model_call`] records one model call as a span named with the
//!   current OpenTelemetry GenAI conventions plus Tollgate's `tollgate.*`
//!   scope attributes. Only metadata is recorded, never prompt or response text.
//! - [`KillSwitch`] watches the collector's enforcement state for the
//!   agent's scope and refuses calls for a blocked scope with a typed
//!   [`Blocked`] error, before anything reaches the provider. Against a
//!   collector that requires keys it sends a `read` key
//!   ([`KillSwitchConfig::with_key`] or `TOLLGATE_KEY`).
//! - [`ModelRoute`] decides, from the gateway setting, whether model calls
//!   go straight to the provider (with a span each) or through Tollgate's
//!   inline gateway (which writes the row itself); `Auto` follows the
//!   collector's `gateway.enabled`.

mod attributes;
mod call;
mod exporter;
mod gateway;
mod key;
mod killswitch;

pub use attributes::names;
pub use call::{ModelCall, Scope, call_attributes, record_model_call};
pub use exporter::{ExporterConfig, ExporterProtocol, SdkError, init_tracer_provider};
pub use gateway::{Direct, GatewayError, GatewaySetting, ModelRoute, RouteConfig};
pub use key::{KEY_ENV, VirtualKey};
pub use killswitch::{
    BlockUsage, Blocked, EnforcementSnapshot, GuardError, KeyRefused, KillSwitch, KillSwitchConfig,
    KillSwitchError, StateSource,
};
