//! The load generator: an open-loop fixed rate for latency, a closed loop
//! of concurrent callers for throughput. Every request is the same
//! non-streaming chat completion; a request counts as answered only when
//! its status is 200 and its whole body has been read.

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use bytes::Bytes;
use reqwest::header::{CONTENT_TYPE, HeaderMap, HeaderValue};
use tokio::task::JoinSet;

/// Where and how to send the bench's chat completion.
#[derive(Debug, Clone)]
pub struct Endpoint {
    /// Full URL of `POST .../chat/completions`.
    pub url: String,
    /// Auth and routing headers of this target.
    pub headers: HeaderMap,
}

/// The request body every target gets.
pub fn chat_body(model: &str, max_tokens: u32) -> Bytes {
    Bytes::from(
        serde_json::json!({
            "model": model,
            "max_tokens": max_tokens,
            "messages": [
                {"role": "system", "content": "You are a terse assistant."},
                {"role": "user", "content": "Name three colours of the rainbow."}
            ],
        })
        .to_string(),
    )
}

/// One client for every run: HTTP/1.1 keep-alive pool, TCP_NODELAY.
pub fn client() -> anyhow::Result<reqwest::Client> {
    Ok(reqwest::Client::builder()
        .tcp_nodelay(true)
        .no_proxy()
        .pool_max_idle_per_host(1024)
        .timeout(Duration::from_secs(30))
        .build()?)
}

/// Latencies and failures of one run.
#[derive(Debug, Clone, Default)]
pub struct Samples {
    /// Latency of each answered request, µs (unsorted).
    pub latencies_us: Vec<u64>,
    /// Requests that failed (transport error or non-200).
    pub errors: u64,
    /// First failure, for the report.
    pub first_error: Option<String>,
    /// Wall time of the run.
    pub elapsed: Duration,
}

impl Samples {
    pub fn answered(&self) -> u64 {
        self.latencies_us.len() as u64
    }

    /// Answered requests per second.
    pub fn throughput(&self) -> f64 {
        self.answered() as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }

    fn merge(&mut self, one: Result<u64, String>) {
        match one {
            Ok(us) => self.latencies_us.push(us),
            Err(e) => {
                self.errors += 1;
                self.first_error.get_or_insert(e);
            }
        }
    }
}

/// The `q`-quantile (0..=1) of `values` in milliseconds, nearest rank.
pub fn quantile_ms(values: &[u64], q: f64) -> Option<f64> {
    if values.is_empty() {
        return None;
    }
    let mut sorted = values.to_vec();
    sorted.sort_unstable();
    let rank = ((q * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len());
    Some(sorted[rank - 1] as f64 / 1000.0)
}

async fn one(client: &reqwest::Client, endpoint: &Endpoint, body: &Bytes) -> Result<(), String> {
    let answer = client
        .post(&endpoint.url)
        .headers(endpoint.headers.clone())
        .header(CONTENT_TYPE, HeaderValue::from_static("application/json"))
        .body(body.clone())
        .send()
        .await
        .map_err(|e| e.without_url().to_string())?;
    let status = answer.status();
    let text = answer
        .bytes()
        .await
        .map_err(|e| e.without_url().to_string())?;
    if status != reqwest::StatusCode::OK {
        let text = String::from_utf8_lossy(&text);
        return Err(format!(
            "HTTP {status}: {}",
            text.chars().take(300).collect::<String>()
        ));
    }
    Ok(())
}

/// How long before a request is due the latency phase stops sleeping and
/// spins: tokio's timer fires on millisecond ticks, so a sleep ends up to
/// 1 ms after it was asked to, and since latency counts from when a request
/// was due, that lateness of the load generator would be in every sample
/// (0-1 ms, more than some proxies add).
const SPIN_BEFORE_DUE: Duration = Duration::from_micros(1500);

/// Waits until `due`, to the microsecond.
async fn sleep_until_precisely(due: Instant) {
    if let Some(early) = due.checked_sub(SPIN_BEFORE_DUE) {
        tokio::time::sleep_until(early.into()).await;
    }
    while Instant::now() < due {
        std::hint::spin_loop();
    }
}

/// Sends `rate` requests per second for `duration`, each on its own task,
/// whatever the previous ones are doing (open loop), each sent when due to
/// the microsecond. A request's latency counts from when it was due, so a
/// stalled server cannot hide its queue.
pub async fn fixed_rate(
    client: &reqwest::Client,
    endpoint: &Endpoint,
    body: &Bytes,
    rate: f64,
    duration: Duration,
) -> anyhow::Result<Samples> {
    let total = (rate * duration.as_secs_f64()).round().max(1.0) as u64;
    let period = Duration::from_secs_f64(1.0 / rate);
    let endpoint = Arc::new(endpoint.clone());
    let start = Instant::now();
    let mut tasks = JoinSet::new();
    for i in 0..total {
        let due = start + period.mul_f64(i as f64);
        sleep_until_precisely(due).await;
        let client = client.clone();
        let endpoint = Arc::clone(&endpoint);
        let body = body.clone();
        tasks.spawn(async move {
            one(&client, &endpoint, &body)
                .await
                .map(|()| due.elapsed().as_micros() as u64)
        });
    }
    let mut samples = Samples::default();
    while let Some(done) = tasks.join_next().await {
        samples.merge(done.context("a request task failed")?);
    }
    samples.elapsed = start.elapsed();
    Ok(samples)
}

/// `concurrency` callers each send the next request as soon as the previous
/// one is answered, for `duration` (closed loop): the target's throughput.
pub async fn closed_loop(
    client: &reqwest::Client,
    endpoint: &Endpoint,
    body: &Bytes,
    concurrency: usize,
    duration: Duration,
) -> anyhow::Result<Samples> {
    let endpoint = Arc::new(endpoint.clone());
    let start = Instant::now();
    let deadline = start + duration;
    let mut tasks = JoinSet::new();
    for _ in 0..concurrency {
        let client = client.clone();
        let endpoint = Arc::clone(&endpoint);
        let body = body.clone();
        tasks.spawn(async move {
            let mut samples = Samples::default();
            while Instant::now() < deadline {
                let sent = Instant::now();
                let result = one(&client, &endpoint, &body).await;
                samples.merge(result.map(|()| sent.elapsed().as_micros() as u64));
            }
            samples
        });
    }
    let mut all = Samples::default();
    while let Some(done) = tasks.join_next().await {
        let part = done.context("a caller task failed")?;
        all.latencies_us.extend(part.latencies_us);
        all.errors += part.errors;
        if all.first_error.is_none() {
            all.first_error = part.first_error;
        }
    }
    all.elapsed = start.elapsed();
    Ok(all)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_due_time_is_kept_to_well_under_a_timer_tick() {
        // Side by side with tokio's timer alone (half a millisecond late on
        // average, up to 1 ms), interleaved, so a loaded machine slows both.
        let (mut precise, mut plain) = (Vec::new(), Vec::new());
        for i in 1..=21u32 {
            let due = Instant::now() + Duration::from_micros(2_300 + 97 * u64::from(i));
            sleep_until_precisely(due).await;
            precise.push(Instant::now() - due);
            let due = Instant::now() + Duration::from_micros(2_300 + 97 * u64::from(i));
            tokio::time::sleep_until(due.into()).await;
            plain.push(Instant::now() - due);
        }
        precise.sort_unstable();
        plain.sort_unstable();
        assert!(
            precise[10] * 2 < plain[10],
            "precise {precise:?}, timer alone {plain:?}"
        );
    }

    #[test]
    fn quantiles_use_the_nearest_rank() {
        let values: Vec<u64> = (1..=100).map(|ms| ms * 1000).collect();
        assert_eq!(quantile_ms(&values, 0.5), Some(50.0));
        assert_eq!(quantile_ms(&values, 0.99), Some(99.0));
        assert_eq!(quantile_ms(&values, 1.0), Some(100.0));
        assert_eq!(quantile_ms(&[7000], 0.99), Some(7.0));
        assert_eq!(quantile_ms(&[], 0.5), None);
    }
}
