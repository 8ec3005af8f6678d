//! Sending the demo traffic.

use std::time::Duration;

use opentelemetry::trace::TracerProvider as _;
use opentelemetry_sdk::trace::SdkTracerProvider;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use tokio_util::sync::CancellationToken;
use tollgate_sdk::{ExporterProtocol, SdkError, init_tracer_provider, record_model_call};

use super::fleet::{FLEET, call};
use crate::cli::DemoArgs;

/// Why the demo stopped early.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DemoError {
    #[error(transparent)]
    Sdk(#[from] SdkError),
    #[error("exporting spans to {endpoint} failed: {message}")]
    Export { endpoint: String, message: String },
}

/// Sends a burst of `args.calls` calls spread over the last hour, then
/// `args.rate` calls per second until `stop`. Returns how many were sent.
pub async fn run_until(args: DemoArgs, stop: CancellationToken) -> Result<usize, DemoError> {
    let mut providers: Vec<(SdkTracerProvider, opentelemetry_sdk::trace::SdkTracer)> = Vec::new();
    for app in FLEET {
        let provider = init_tracer_provider(
            &args.endpoint,
            ExporterProtocol::Grpc,
            app.app,
            Some(app.environment),
        )?;
        let tracer = provider.tracer("tollgate-demo");
        providers.push((provider, tracer));
    }
    let mut rng = StdRng::seed_from_u64(args.seed);
    let mut sent = 0usize;
    for _ in 0..args.calls {
        let i = rng.random_range(0..FLEET.len());
        let ago = Duration::from_secs(rng.random_range(0..3000));
        let (c, scope) = call(&mut rng, &FLEET[i], ago);
        record_model_call(&providers[i].1, &c, &scope);
        sent += 1;
    }
    flush(&providers, &args.endpoint).await?;

    if args.rate > 0.0 {
        let mut tick = tokio::time::interval(Duration::from_secs_f64(1.0 / args.rate));
        let mut since_flush = 0;
        loop {
            tokio::select! {
                _ = stop.cancelled() => break,
                _ = tick.tick() => {}
            }
            let i = rng.random_range(0..FLEET.len());
            let (c, scope) = call(&mut rng, &FLEET[i], Duration::ZERO);
            record_model_call(&providers[i].1, &c, &scope);
            sent += 1;
            since_flush += 1;
            if since_flush >= 10 {
                since_flush = 0;
                if let Err(e) = flush(&providers, &args.endpoint).await {
                    tracing::warn!(error = %e, "demo export failed; continuing");
                }
            }
        }
    }
    let all: Vec<SdkTracerProvider> = providers.into_iter().map(|(p, _)| p).collect();
    // Shutdown flushes and blocks on the exporter thread: keep it off the runtime's workers.
    let _ = tokio::task::spawn_blocking(move || {
        for p in all {
            let _ = p.shutdown();
        }
    })
    .await;
    Ok(sent)
}

/// Waits until every span recorded so far was exported (or refused).
async fn flush(
    providers: &[(SdkTracerProvider, opentelemetry_sdk::trace::SdkTracer)],
    endpoint: &str,
) -> Result<(), DemoError> {
    let all: Vec<SdkTracerProvider> = providers.iter().map(|(p, _)| p.clone()).collect();
    let export_err = |message: String| DemoError::Export {
        endpoint: endpoint.to_owned(),
        message,
    };
    tokio::task::spawn_blocking(move || {
        for p in &all {
            p.force_flush().map_err(|e| e.to_string())?;
        }
        Ok::<(), String>(())
    })
    .await
    .map_err(|e| export_err(e.to_string()))?
    .map_err(export_err)
}
