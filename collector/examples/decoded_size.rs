//! Bytes a decoded OTLP export request takes on the heap per byte of its
//! protobuf encoding, for every golden fixture: the figure behind
//! `memory::DECODED_PER_BODY_BYTE`, what a request body reserves from the
//! memory limiter's in-flight budget for its decoding. Counts the capacity
//! of every vector and string of the decoded message (the allocator's own
//! rounding comes on top).
//!
//! `cargo run --release -p tollgate-collector --example decoded_size`

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::print_stdout)]

use std::mem::size_of;

use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::{AnyValue, KeyValue, any_value};
use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Span, span};
use prost::Message;

fn vec<T>(v: &Vec<T>) -> usize {
    v.capacity() * size_of::<T>()
}

fn value(v: &AnyValue) -> usize {
    match &v.value {
        Some(any_value::Value::StringValue(s)) => s.capacity(),
        Some(any_value::Value::BytesValue(b)) => b.capacity(),
        Some(any_value::Value::ArrayValue(a)) => {
            vec(&a.values) + a.values.iter().map(value).sum::<usize>()
        }
        Some(any_value::Value::KvlistValue(l)) => attributes(&l.values),
        _ => 0,
    }
}

fn attributes(kvs: &Vec<KeyValue>) -> usize {
    vec(kvs)
        + kvs
            .iter()
            .map(|kv| kv.key.capacity() + kv.value.as_ref().map_or(0, value))
            .sum::<usize>()
}

fn span(s: &Span) -> usize {
    s.trace_id.capacity()
        + s.span_id.capacity()
        + s.parent_span_id.capacity()
        + s.trace_state.capacity()
        + s.name.capacity()
        + attributes(&s.attributes)
        + vec(&s.events)
        + s.events
            .iter()
            .map(|e| e.name.capacity() + attributes(&e.attributes))
            .sum::<usize>()
        + vec(&s.links)
        + s.links
            .iter()
            .map(|l: &span::Link| {
                l.trace_id.capacity()
                    + l.span_id.capacity()
                    + l.trace_state.capacity()
                    + attributes(&l.attributes)
            })
            .sum::<usize>()
        + s.status.as_ref().map_or(0, |st| st.message.capacity())
}

fn scope(s: &ScopeSpans) -> usize {
    s.scope.as_ref().map_or(0, |sc| {
        sc.name.capacity() + sc.version.capacity() + attributes(&sc.attributes)
    }) + s.schema_url.capacity()
        + vec(&s.spans)
        + s.spans.iter().map(span).sum::<usize>()
}

fn resource(r: &ResourceSpans) -> usize {
    r.resource
        .as_ref()
        .map_or(0, |res| attributes(&res.attributes))
        + r.schema_url.capacity()
        + vec(&r.scope_spans)
        + r.scope_spans.iter().map(scope).sum::<usize>()
}

fn main() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/otlp");
    let mut paths: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "pb"))
        .collect();
    paths.sort();
    let mut worst: f64 = 0.0;
    for path in paths {
        let body = std::fs::read(&path).unwrap();
        let decoded = ExportTraceServiceRequest::decode(&body[..]).unwrap();
        let heap = vec(&decoded.resource_spans)
            + decoded.resource_spans.iter().map(resource).sum::<usize>();
        let ratio = heap as f64 / body.len() as f64;
        worst = worst.max(ratio);
        println!(
            "{:45} {:>7} bytes encoded, {:>7} decoded: {ratio:.1}x",
            path.file_stem().unwrap().to_string_lossy(),
            body.len(),
            heap
        );
    }
    println!("largest: {worst:.1}x");
}
