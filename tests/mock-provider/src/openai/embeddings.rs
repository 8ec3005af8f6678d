//! `POST /v1/embeddings` (also `/embeddings`, `/openai/v1/…` and Azure's
//! deployment path): one small deterministic unit vector per input, as float
//! arrays or, when `encoding_format` is `base64` (the OpenAI Python SDK's
//! default), as base64 of little-endian `f32`s.

use std::sync::Arc;

use axum::Json;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, Uri};
use axum::response::{IntoResponse, Response};
use base64::Engine;
use bytes::Bytes;
use serde_json::{Value, json};

use crate::error::ApiError;
use crate::server::{Admitted, Dialect, Incoming, Shared};
use crate::stats::Endpoint;
use crate::usage::{Api, usage_for};

/// Vector length when the request sets no `dimensions`; small on purpose,
/// the content of the vectors is never what a test checks.
pub const DEFAULT_EMBEDDING_DIMENSIONS: usize = 8;

/// Bound on `dimensions` so a typo cannot make the mock allocate gigabytes.
const MAX_DIMENSIONS: usize = 4096;

pub(crate) async fn handle(
    State(shared): State<Arc<Shared>>,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    respond(&shared, uri.path(), &headers, &body, None).await
}

pub(crate) async fn handle_azure(
    State(shared): State<Arc<Shared>>,
    Path(deployment): Path<String>,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    respond(&shared, uri.path(), &headers, &body, Some(deployment)).await
}

async fn respond(
    shared: &Arc<Shared>,
    path: &str,
    headers: &HeaderMap,
    body: &[u8],
    deployment: Option<String>,
) -> Response {
    let incoming = Incoming {
        endpoint: Endpoint::Embeddings,
        dialect: Dialect::OpenAi,
        path,
        headers,
        body,
    };
    shared
        .serve(incoming, |admitted, _| {
            embed(shared, &admitted, deployment).map(|value| Json(value).into_response())
        })
        .await
}

fn embed(
    shared: &Shared,
    admitted: &Admitted,
    deployment: Option<String>,
) -> Result<Value, ApiError> {
    let body = &admitted.body;
    let model = match (body.get("model").and_then(Value::as_str), deployment) {
        (Some(model), _) => model.to_owned(),
        (None, Some(deployment)) => deployment,
        (None, None) => {
            return Err(ApiError::InvalidRequest(
                "you must provide a model parameter".into(),
            ));
        }
    };
    let seeds = input_seeds(body.get("input"))?;
    let dimensions = match body.get("dimensions").and_then(Value::as_u64) {
        Some(n) if (1..=MAX_DIMENSIONS as u64).contains(&n) => {
            usize::try_from(n).unwrap_or(DEFAULT_EMBEDDING_DIMENSIONS)
        }
        Some(n) => {
            return Err(ApiError::InvalidRequest(format!(
                "Invalid value for 'dimensions' = {n}. Must be between 1 and {MAX_DIMENSIONS}."
            )));
        }
        None => DEFAULT_EMBEDDING_DIMENSIONS,
    };
    let base64 = match body.get("encoding_format").and_then(Value::as_str) {
        None | Some("float") => false,
        Some("base64") => true,
        Some(other) => {
            return Err(ApiError::InvalidRequest(format!(
                "Invalid value for 'encoding_format': '{other}'. Supported values are: 'float' and 'base64'."
            )));
        }
    };
    let data: Vec<Value> = seeds
        .iter()
        .enumerate()
        .map(|(index, seed)| {
            let vector = unit_vector(seed, dimensions);
            let embedding = if base64 {
                let bytes: Vec<u8> = vector.iter().flat_map(|x| x.to_le_bytes()).collect();
                Value::from(base64::engine::general_purpose::STANDARD.encode(bytes))
            } else {
                Value::from(vector)
            };
            json!({"object": "embedding", "index": index, "embedding": embedding})
        })
        .collect();
    let usage = usage_for(
        Api::OpenAiEmbeddings,
        body,
        &admitted.knobs,
        shared.config.default_output_tokens,
    );
    Ok(json!({
        "object": "list",
        "data": data,
        "model": model,
        "usage": {
            "prompt_tokens": usage.openai_prompt_tokens(),
            "total_tokens": usage.openai_prompt_tokens()
        }
    }))
}

/// One seed string per input, in the four shapes `input` may take.
fn input_seeds(input: Option<&Value>) -> Result<Vec<String>, ApiError> {
    let invalid = || {
        ApiError::InvalidRequest(
            "'input' must be a string, an array of strings, an array of token ids, \
             or an array of token-id arrays."
                .into(),
        )
    };
    match input {
        Some(Value::String(text)) => Ok(vec![text.clone()]),
        Some(Value::Array(items)) if items.is_empty() => Err(invalid()),
        Some(Value::Array(items)) if items.iter().all(Value::is_number) => {
            Ok(vec![Value::Array(items.clone()).to_string()])
        }
        Some(Value::Array(items)) => items
            .iter()
            .map(|item| match item {
                Value::String(text) => Ok(text.clone()),
                Value::Array(_) => Ok(item.to_string()),
                _ => Err(invalid()),
            })
            .collect(),
        None => Err(ApiError::InvalidRequest(
            "Missing required parameter: 'input'.".into(),
        )),
        Some(_) => Err(invalid()),
    }
}

/// A unit-length vector that depends only on `seed`: FNV-1a of the seed, fed
/// through SplitMix64 for each component.
fn unit_vector(seed: &str, dimensions: usize) -> Vec<f32> {
    let mut state = seed.bytes().fold(0xcbf2_9ce4_8422_2325_u64, |hash, byte| {
        (hash ^ u64::from(byte)).wrapping_mul(0x0000_0100_0000_01b3)
    });
    let raw: Vec<f64> = (0..dimensions)
        .map(|_| {
            state = state.wrapping_add(0x9e37_79b9_7f4a_7c15);
            let mut z = state;
            z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
            z ^= z >> 31;
            // Top 53 bits as a fraction in [0, 1), then shifted to [-1, 1).
            #[allow(clippy::cast_precision_loss)]
            let unit = (z >> 11) as f64 / (1u64 << 53) as f64;
            unit * 2.0 - 1.0
        })
        .collect();
    let norm = raw
        .iter()
        .map(|x| x * x)
        .sum::<f64>()
        .sqrt()
        .max(f64::MIN_POSITIVE);
    #[allow(clippy::cast_possible_truncation)]
    raw.iter().map(|x| (x / norm) as f32).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn vectors_are_deterministic_unit_length() {
        let a = unit_vector("hello", 8);
        assert_eq!(a.len(), 8);
        assert_eq!(a, unit_vector("hello", 8));
        assert_ne!(a, unit_vector("hellp", 8));
        let norm: f32 = a.iter().map(|x| x * x).sum::<f32>().sqrt();
        assert!((norm - 1.0).abs() < 1e-5, "norm = {norm}");
    }

    #[test]
    fn inputs_of_every_shape() {
        assert_eq!(input_seeds(Some(&json!("a"))).ok(), Some(vec!["a".into()]));
        assert_eq!(
            input_seeds(Some(&json!(["a", "b"]))).ok().map(|v| v.len()),
            Some(2)
        );
        assert_eq!(
            input_seeds(Some(&json!([1, 2, 3]))).ok().map(|v| v.len()),
            Some(1)
        );
        assert_eq!(
            input_seeds(Some(&json!([[1], [2]]))).ok().map(|v| v.len()),
            Some(2)
        );
        assert!(input_seeds(Some(&json!([]))).is_err());
        assert!(input_seeds(None).is_err());
        assert!(input_seeds(Some(&json!({"a": 1}))).is_err());
    }
}
