//! Calls on what a Responses API provider stores: retrieve a response
//! (`GET /v1/responses/{id}`, JSON, or its events again with
//! `?stream=true`), delete it, cancel a background run, list its input
//! items, and count a request's input tokens (`POST
//! /v1/responses/input_tokens`). They are authenticated like every call and
//! passed to a provider that serves the Responses API; the provider's
//! answer goes back as it came. None of them generates tokens, so none is
//! admitted against the rules nor recorded as a row.
//!
//! The provider of a stored response is the one named by the
//! `x-tollgate-provider` header, else the first configured provider that
//! serves the Responses API. Counting input tokens goes to the first link
//! of the request's `model` that serves the API.

use std::sync::Arc;

use axum::body::Body;
use axum::response::Response;
use bytes::Bytes;
use http::{HeaderMap, HeaderValue, Method, header};
use tokio::time::Instant;

use super::attempt;
use super::error::{ApiError, RefusalInfo};
use super::handle::{key_allows, peek_request, read_body, upstream_error};
use super::state::Shared;
use crate::dialect::Dialect;
use crate::keys::VirtualKey;
use crate::providers::Provider;
use crate::translate::rewrite_top_level;

/// The header naming the provider that stores a response.
pub(crate) const PROVIDER_HEADER: &str = "x-tollgate-provider";

/// Longest response id accepted.
const MAX_ID_BYTES: usize = 128;

/// A call on stored responses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum StoredCall {
    Retrieve,
    Delete,
    Cancel,
    InputItems,
}

impl StoredCall {
    fn method(self) -> Method {
        match self {
            StoredCall::Retrieve | StoredCall::InputItems => Method::GET,
            StoredCall::Delete => Method::DELETE,
            StoredCall::Cancel => Method::POST,
        }
    }

    fn tail(self, id: &str) -> Vec<&str> {
        match self {
            StoredCall::Retrieve | StoredCall::Delete => vec![id],
            StoredCall::Cancel => vec![id, "cancel"],
            StoredCall::InputItems => vec![id, "input_items"],
        }
    }
}

/// Response ids are `resp_` and letters, digits, `_` or `-`: nothing that
/// could reach another path of the provider.
fn valid_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= MAX_ID_BYTES
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

/// The provider `headers` name, else the first that serves the API.
fn provider_for(shared: &Shared, headers: &HeaderMap) -> Result<Arc<Provider>, Box<ApiError>> {
    let named = headers
        .get(PROVIDER_HEADER)
        .map(|v| v.to_str().map(str::trim).unwrap_or_default());
    let found = match named {
        Some(name) => shared.providers.iter().find(|p| &*p.name == name),
        None => shared.providers.iter().find(|p| p.responses_api),
    };
    match (found, named) {
        (Some(p), _) if p.responses_api => Ok(Arc::clone(p)),
        (Some(p), _) => Err(Box::new(ApiError::BadRequest(format!(
            "provider `{}` does not serve the Responses API, so it stores no responses",
            p.name
        )))),
        (None, Some(name)) => Err(Box::new(ApiError::BadRequest(format!(
            "`{PROVIDER_HEADER}` names no configured provider (`{name}`)"
        )))),
        (None, None) => Err(Box::new(ApiError::Unsupported(
            "no configured provider serves the Responses API, so none stores responses".to_owned(),
        ))),
    }
}

/// `GET`/`DELETE /v1/responses/{id}`, `POST …/cancel`, `GET …/input_items`.
pub(crate) async fn stored_response(
    shared: Arc<Shared>,
    call: StoredCall,
    id: &str,
    query: Option<&str>,
    headers: &HeaderMap,
) -> Response {
    let dialect = Dialect::Responses;
    shared.events.request();
    if !valid_id(id) {
        return ApiError::BadRequest(format!(
            "`{}` is not a response id (letters, digits, `_` and `-`, at most {MAX_ID_BYTES})",
            id.chars().take(MAX_ID_BYTES).collect::<String>()
        ))
        .into_response(dialect);
    }
    let provider = match provider_for(&shared, headers) {
        Ok(p) => p,
        Err(e) => return (*e).into_response(dialect),
    };
    let req = match provider.responses_resource(call.method(), &call.tail(id), query, None) {
        Ok(r) => r,
        Err(message) => return ApiError::Unsupported(message).into_response(dialect),
    };
    relay(&provider, req).await
}

/// `POST /v1/responses/input_tokens`: the request's `model` chooses the
/// provider, as for a call.
pub(crate) async fn count_input_tokens(
    shared: Arc<Shared>,
    key: Arc<VirtualKey>,
    body: Body,
) -> Response {
    let dialect = Dialect::Responses;
    shared.events.request();
    let body = match read_body(&shared, body).await {
        Ok(b) => b,
        Err(e) => return (*e).into_response(dialect),
    };
    let peek = match peek_request(&body) {
        Ok(p) => p,
        Err(e) => return (*e).into_response(dialect),
    };
    // Not empty: `peek_request` checked.
    let model = peek.model.as_deref().unwrap_or_default();
    let Some(chain) = shared.resolve(model) else {
        return ApiError::ModelNotFound(model.to_owned()).into_response(dialect);
    };
    if !key_allows(&key, &chain, model) {
        return ApiError::Refused(RefusalInfo::key_model(model)).into_response(dialect);
    }
    let Some(link) = chain.links.iter().find(|l| l.provider.responses_api) else {
        return ApiError::Unsupported(format!(
            "no provider of `{model}` serves the Responses API, which counts input tokens"
        ))
        .into_response(dialect);
    };
    let model_json = match serde_json::to_string(link.model.as_ref()) {
        Ok(m) => m,
        Err(e) => return ApiError::BadRequest(e.to_string()).into_response(dialect),
    };
    let upstream = match rewrite_top_level(&body, &[("model", &model_json)], &[]) {
        Ok(b) => Bytes::from(b),
        Err(e) => {
            return ApiError::BadRequest(format!("the request body is not a JSON object ({e})"))
                .into_response(dialect);
        }
    };
    let req = match link.provider.responses_resource(
        Method::POST,
        &["input_tokens"],
        None,
        Some(upstream),
    ) {
        Ok(r) => r,
        Err(message) => return ApiError::Unsupported(message).into_response(dialect),
    };
    relay(&link.provider, req).await
}

/// Sends `req` and passes the provider's answer on: a success as it
/// comes (JSON, or SSE for a retrieved stream), an error in OpenAI's
/// envelope with the provider's key scrubbed.
async fn relay(provider: &Provider, req: reqwest::RequestBuilder) -> Response {
    let dialect = Dialect::Responses;
    let deadline = Instant::now() + provider.timeout;
    let resp = match attempt::send(req, deadline).await {
        Ok(r) => r,
        // The caller speaks the Responses API, as the provider does.
        Err(f) => return upstream_error(f, provider, true).into_response(dialect),
    };
    let status = resp.status();
    let content_type = resp
        .headers()
        .get(header::CONTENT_TYPE)
        .cloned()
        .unwrap_or_else(|| HeaderValue::from_static("application/json"));
    let mut r = Response::new(Body::from_stream(resp.bytes_stream()));
    *r.status_mut() = status;
    r.headers_mut().insert(header::CONTENT_TYPE, content_type);
    r
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_plain_ids_reach_the_provider() {
        assert!(valid_id(
            "resp_67ccd2bed1ec8190b14f964abc0542670bb6a6b452d3795b"
        ));
        assert!(valid_id("resp-1_A"));
        for bad in [
            "",
            "..",
            "resp_1/../../files",
            "resp 1",
            "resp_1?x=1",
            "resp%2F",
        ] {
            assert!(!valid_id(bad), "{bad}");
        }
        assert!(!valid_id(&"a".repeat(MAX_ID_BYTES + 1)));
    }

    #[test]
    fn each_call_has_its_method_and_path() {
        assert_eq!(StoredCall::Retrieve.method(), Method::GET);
        assert_eq!(StoredCall::Delete.method(), Method::DELETE);
        assert_eq!(StoredCall::Cancel.tail("resp_1"), ["resp_1", "cancel"]);
        assert_eq!(
            StoredCall::InputItems.tail("resp_1"),
            ["resp_1", "input_items"]
        );
    }
}
