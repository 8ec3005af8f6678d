//! `GET /v1/models`: the routes and provider models the caller's key may
//! use, in OpenAI's list format, or Anthropic's when `anthropic-version` is sent.

use axum::Json;
use axum::response::{IntoResponse, Response};
use http::HeaderMap;
use serde_json::{Value, json};

use super::state::Shared;
use crate::glob;
use crate::keys::VirtualKey;

pub(crate) fn list_models(shared: &Shared, key: &VirtualKey, headers: &HeaderMap) -> Response {
    let mut seen = std::collections::HashSet::new();
    let mut entries: Vec<(String, String)> = Vec::new();
    for route in &shared.route_order {
        if key.allows_model([route.as_ref()]) && seen.insert(route.to_string()) {
            entries.push((route.to_string(), "tollgate".to_owned()));
        }
    }
    for p in &shared.providers {
        for m in p.models.iter().filter(|m| glob::is_literal(m)) {
            let qualified = format!("{}/{m}", p.name);
            if key.allows_model([m.as_str(), qualified.as_str()]) && seen.insert(m.clone()) {
                entries.push((m.clone(), p.name.to_string()));
            }
        }
    }
    if headers.contains_key("anthropic-version") {
        let data: Vec<Value> = entries
            .iter()
            .map(|(id, _)| {
                json!({"type": "model", "id": id, "display_name": id,
                       "created_at": "1970-01-01T00:00:00Z"})
            })
            .collect();
        return Json(json!({
            "data": data,
            "has_more": false,
            "first_id": entries.first().map(|e| e.0.clone()),
            "last_id": entries.last().map(|e| e.0.clone()),
        }))
        .into_response();
    }
    let data: Vec<Value> = entries
        .iter()
        .map(|(id, owner)| json!({"id": id, "object": "model", "created": 0, "owned_by": owner}))
        .collect();
    Json(json!({"object": "list", "data": data})).into_response()
}
