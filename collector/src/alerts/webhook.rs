//! Delivering one alert to one webhook, with retries.

use serde_json::json;
use tollgate_rules::RuleEvent;

use crate::config::{WebhookFormat, WebhookSection};
use crate::sinks::OutboxEntry;

/// A configured webhook. Its URL may itself be a secret (Slack's are): it is
/// never logged, only its name.
#[derive(Debug, Clone)]
pub struct Webhook {
    pub name: String,
    url: String,
    format: WebhookFormat,
    pub default: bool,
}

impl From<&WebhookSection> for Webhook {
    fn from(w: &WebhookSection) -> Self {
        Self {
            name: w.name.clone(),
            url: w.url.clone(),
            format: w.format,
            default: w.default,
        }
    }
}

fn human(n: f64) -> String {
    if n.fract() == 0.0 && n.abs() < 1e15 {
        let digits = format!("{}", n as i64);
        let mut out = String::new();
        for (i, c) in digits.chars().enumerate() {
            if i > 0 && (digits.len() - i) % 3 == 0 && c != '-' {
                out.push(',');
            }
            out.push(c);
        }
        out
    } else {
        format!("{n:.4}")
    }
}

/// One line for people: what happened, to whom, how much.
pub fn summary(e: &RuleEvent) -> String {
    let metric = e.metric.as_deref().unwrap_or("usage");
    let amounts = match (e.used, e.limit) {
        (Some(u), Some(l)) => format!("{} of {} {metric}", human(u), human(l)),
        _ => String::new(),
    };
    match e.kind.as_str() {
        "threshold" => format!(
            "Tollgate: {} reached {:.0}% of rule `{}` ({amounts})",
            e.scope,
            e.threshold.unwrap_or(0.0) * 100.0,
            e.rule_id
        ),
        "limit_exceeded" => format!(
            "Tollgate: {} exceeded rule `{}` ({amounts}){}",
            e.scope,
            e.rule_id,
            if e.action == "block" {
                "; calls are blocked until the window ends"
            } else {
                ""
            }
        ),
        other => format!(
            "Tollgate: rule `{}` ({other}) fired for {}",
            e.rule_id, e.scope
        ),
    }
}

impl Webhook {
    fn body(&self, e: &RuleEvent) -> serde_json::Value {
        match self.format {
            WebhookFormat::Slack => json!({ "text": summary(e) }),
            WebhookFormat::Json => json!({
                "source": "tollgate",
                "summary": summary(e),
                "event": e,
            }),
        }
    }

    /// One attempt at delivering `entry`, with its `Idempotency-Key`.
    pub async fn post(&self, client: &reqwest::Client, entry: &OutboxEntry) -> Result<(), Attempt> {
        let answer = client
            .post(&self.url)
            .header("idempotency-key", &entry.key)
            .json(&self.body(&entry.event))
            .send()
            .await;
        match answer {
            Ok(r) if r.status().is_success() => Ok(()),
            Ok(r) if r.status().is_redirection() => {
                tracing::warn!(webhook = %self.name, status = r.status().as_u16(), "alert webhook answered a redirect; not followed");
                Err(Attempt::Refused(format!(
                    "the webhook answered {} (a redirect is not followed)",
                    r.status().as_u16()
                )))
            }
            // A client error other than a timeout or a rate limit will not
            // get better by retrying.
            Ok(r) if r.status().is_client_error() && !matches!(r.status().as_u16(), 408 | 429) => {
                tracing::warn!(webhook = %self.name, status = r.status().as_u16(), "alert refused by the webhook");
                Err(Attempt::Refused(format!(
                    "the webhook answered {}",
                    r.status().as_u16()
                )))
            }
            Ok(r) => Err(Attempt::Failed(format!(
                "the webhook answered {}",
                r.status().as_u16()
            ))),
            // reqwest errors name the URL, which may be a secret: say only what kind.
            Err(e) => Err(Attempt::Failed(
                if e.is_timeout() {
                    "timed out"
                } else if e.is_connect() {
                    "could not connect"
                } else {
                    "the request failed"
                }
                .to_owned(),
            )),
        }
    }
}

/// Why an attempt did not deliver.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Attempt {
    /// Worth trying again later.
    Failed(String),
    /// Will not be accepted however often it is tried.
    Refused(String),
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(kind: &str) -> RuleEvent {
        RuleEvent {
            time_unix_nanos: 0,
            rule_id: "daily".into(),
            kind: kind.into(),
            scope: "project=search".into(),
            metric: Some("tokens".into()),
            limit: Some(10_000.0),
            used: Some(8_000.0),
            threshold: Some(0.8),
            action: "block".into(),
            window_end_unix_nanos: None,
            trace_id: String::new(),
            span_id: String::new(),
        }
    }

    /// A webhook that answers 503 twice, then 200, counting what it got.
    async fn flaky_receiver() -> (String, std::sync::Arc<std::sync::atomic::AtomicUsize>) {
        use std::sync::Arc;
        use std::sync::atomic::{AtomicUsize, Ordering};
        let hits = Arc::new(AtomicUsize::new(0));
        let seen = Arc::clone(&hits);
        let app = axum::Router::new().route(
            "/hook",
            axum::routing::post(move || {
                let seen = Arc::clone(&seen);
                async move {
                    if seen.fetch_add(1, Ordering::SeqCst) < 2 {
                        http::StatusCode::SERVICE_UNAVAILABLE
                    } else {
                        http::StatusCode::OK
                    }
                }
            }),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/hook", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        (url, hits)
    }

    fn entry(e: RuleEvent) -> OutboxEntry {
        OutboxEntry {
            webhook: "ops".into(),
            key: "k-1".into(),
            event: e,
            created_unix_nanos: 0,
        }
    }

    #[tokio::test]
    async fn one_attempt_tells_a_failure_worth_retrying_from_a_refusal() {
        let (url, hits) = flaky_receiver().await;
        let w = Webhook {
            name: "ops".into(),
            url,
            format: WebhookFormat::Json,
            default: true,
        };
        let client = reqwest::Client::new();
        let e = entry(event("threshold"));
        assert!(matches!(w.post(&client, &e).await, Err(Attempt::Failed(_))));
        assert!(matches!(w.post(&client, &e).await, Err(Attempt::Failed(_))));
        assert_eq!(w.post(&client, &e).await, Ok(()));
        assert_eq!(hits.load(std::sync::atomic::Ordering::SeqCst), 3);
        let gone = Webhook {
            url: "http://127.0.0.1:9/nothing".into(),
            ..w
        };
        assert_eq!(
            gone.post(&client, &e).await,
            Err(Attempt::Failed("could not connect".into()))
        );
    }

    #[test]
    fn summaries_read_well() {
        assert_eq!(
            summary(&event("threshold")),
            "Tollgate: project=search reached 80% of rule `daily` (8,000 of 10,000 tokens)"
        );
        assert!(summary(&event("limit_exceeded")).contains("calls are blocked"));
        let w = Webhook {
            name: "s".into(),
            url: "http://x".into(),
            format: WebhookFormat::Slack,
            default: true,
        };
        assert!(
            w.body(&event("threshold"))["text"]
                .as_str()
                .unwrap()
                .contains("80%")
        );
        let j = Webhook {
            format: WebhookFormat::Json,
            ..w
        };
        assert_eq!(j.body(&event("threshold"))["event"]["rule_id"], "daily");
    }
}
