//! Alerts: rule events delivered to webhooks (generic JSON or
//! Slack-compatible), once per (rule, scope, threshold, window), with retries.

mod dispatch;
mod webhook;

pub use dispatch::{Alerts, AlertsHandle};
pub use webhook::{Webhook, summary};
