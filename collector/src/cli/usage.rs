//! `tollgate usage`: asks a running collector and prints a table or JSON.

use comfy_table::presets::UTF8_FULL_CONDENSED;
use comfy_table::{CellAlignment, Table};
use serde_json::Value;

use super::ClientError;
use super::args::UsageArgs;

/// Fetches `/v1/usage` and renders it; returns what to print.
pub async fn run_usage(args: &UsageArgs) -> Result<String, ClientError> {
    let mut query: Vec<(String, String)> = vec![
        ("by".into(), args.by.clone()),
        ("since".into(), args.since.clone()),
    ];
    for f in &args.filters {
        let (k, v) = f
            .split_once('=')
            .ok_or_else(|| ClientError::BadFilter(f.clone()))?;
        query.push((k.trim().to_owned(), v.trim().to_owned()));
    }
    let url = format!("{}/v1/usage", args.api.trim_end_matches('/'));
    let client = super::http_client(args.ca_file.as_deref()).map_err(ClientError::Tls)?;
    let mut request = client.get(&url).query(&query);
    if let Some(key) = &args.key {
        request = request.bearer_auth(key);
    }
    let body = super::send(request, &args.api).await?;
    if args.json {
        return Ok(serde_json::to_string_pretty(&body).unwrap_or_default());
    }
    let dims: Vec<&str> = args
        .by
        .split(',')
        .map(str::trim)
        .filter(|d| !d.is_empty())
        .collect();
    Ok(render_table(&dims, &body, &args.since))
}

fn render_table(dims: &[&str], body: &Value, since: &str) -> String {
    let mut out = render_rows(dims, body, since);
    // What the collector changed in the question, e.g. a `since` longer
    // than it answers for.
    for w in body["warnings"].as_array().into_iter().flatten() {
        if let Some(w) = w.as_str() {
            out.push_str(&format!("\nnote: {w}"));
        }
    }
    out
}

fn render_rows(dims: &[&str], body: &Value, since: &str) -> String {
    let empty = Vec::new();
    let rows = body["rows"].as_array().unwrap_or(&empty);
    if rows.is_empty() {
        return format!("no model calls in the last {since}");
    }
    let mut table = Table::new();
    table.load_preset(UTF8_FULL_CONDENSED);
    let mut header: Vec<String> = dims.iter().map(|d| d.to_uppercase()).collect();
    header.extend(["REQUESTS", "ERRORS", "INPUT TOK", "OUTPUT TOK", "COST USD"].map(String::from));
    table.set_header(header);
    let (mut requests, mut input, mut output, mut cost, mut unpriced) =
        (0u64, 0u64, 0u64, 0f64, 0u64);
    for r in rows {
        let mut cells: Vec<String> = dims
            .iter()
            .map(|d| r[*d].as_str().unwrap_or("-").to_owned())
            .collect();
        let n = |k: &str| r[k].as_u64().unwrap_or(0);
        requests += n("requests");
        input += n("input_tokens");
        output += n("output_tokens");
        cost += r["cost_usd"].as_f64().unwrap_or(0.0);
        unpriced += n("unpriced_requests");
        let cost_cell = if n("unpriced_requests") > 0 {
            format!(
                "{:.4} (+{} unpriced)",
                r["cost_usd"].as_f64().unwrap_or(0.0),
                n("unpriced_requests")
            )
        } else {
            format!("{:.4}", r["cost_usd"].as_f64().unwrap_or(0.0))
        };
        cells.extend([
            n("requests").to_string(),
            n("errors").to_string(),
            n("input_tokens").to_string(),
            n("output_tokens").to_string(),
            cost_cell,
        ]);
        table.add_row(cells);
    }
    for i in dims.len()..dims.len() + 5 {
        if let Some(col) = table.column_mut(i) {
            col.set_cell_alignment(CellAlignment::Right);
        }
    }
    let mut out = table.to_string();
    out.push_str(&format!(
        "\n{requests} requests, {input} input tokens, {output} output tokens, ${cost:.4} in the last {since}"
    ));
    if unpriced > 0 {
        out.push_str(&format!(
            " ({unpriced} calls unpriced: model not in the price table)"
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_rows_and_totals() {
        let body = serde_json::json!({"rows": [
            {"project": "search", "model": "gpt-4o", "requests": 3, "errors": 1, "input_tokens": 100,
             "output_tokens": 50, "cost_usd": 0.0125, "unpriced_requests": 0},
            {"project": "ops", "model": "mystery", "requests": 1, "errors": 0, "input_tokens": 10,
             "output_tokens": 5, "cost_usd": 0.0, "unpriced_requests": 1}
        ]});
        let text = render_table(&["project", "model"], &body, "1h");
        assert!(
            text.contains("PROJECT") && text.contains("search") && text.contains("gpt-4o"),
            "{text}"
        );
        assert!(text.contains("0.0125"), "{text}");
        assert!(
            text.contains("4 requests, 110 input tokens, 55 output tokens, $0.0125 in the last 1h"),
            "{text}"
        );
        assert!(text.contains("1 calls unpriced"), "{text}");
        assert_eq!(
            render_table(&["project"], &serde_json::json!({"rows": []}), "1h"),
            "no model calls in the last 1h"
        );
        let clamped = serde_json::json!({"rows": [], "warnings": ["answered for the last 400d"]});
        assert_eq!(
            render_table(&["project"], &clamped, "100000w"),
            "no model calls in the last 100000w\nnote: answered for the last 400d"
        );
    }
}
