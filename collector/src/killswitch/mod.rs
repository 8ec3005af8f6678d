//! The kill-switch: scopes blocked by `block` rules in observe mode (or by
//! an admin), served to agents as JSON, SSE and a gRPC stream.

mod grpc;
mod http;
mod state;

pub use grpc::{EnforcementService, enforcement_service};
pub use http::enforcement_router;
pub use state::{Block, Change, EnforcementState, KillSwitch, Scope, within};
