//! Custom rules: a CEL expression (the `cel` crate) over `call`.
//!
//! `call` has: model, provider, operation, input_tokens, output_tokens,
//! cache_read_tokens, total_tokens, cost_usd, priced, stream, status,
//! error_type, org, project, app, environment, user, session, route,
//! upstream and labels (a map). Missing strings are "", counts are ints.
//! Before a call runs (`admit`), output_tokens is the most it may produce.

use std::collections::HashMap;
use std::sync::{Arc, OnceLock};

use cel::objects::Key;
use cel::{Context, Env, Program, Value};

use super::call_view::CallView;
use super::guard::{Guard, guards};
use crate::CallRecord;

/// A compiled CEL expression that must yield a bool.
pub struct CustomExpression {
    program: Program,
    source: String,
    /// The `call` fields the expression reads: only these are built per call.
    fields: Vec<&'static str>,
    /// Terms of the top-level conjunction checked without the interpreter.
    guards: Vec<Guard>,
    /// The guards are the whole expression: the interpreter never runs.
    guarded_fully: bool,
}

/// The CEL standard library, built once: building it is most of what a
/// fresh `Context::default()` costs.
fn stdlib() -> Arc<Env> {
    static STDLIB: OnceLock<Arc<Env>> = OnceLock::new();
    Arc::clone(STDLIB.get_or_init(|| Arc::new(Env::stdlib())))
}

impl std::fmt::Debug for CustomExpression {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_tuple("CustomExpression")
            .field(&self.source)
            .finish()
    }
}

/// Field names of [`CallView`], for checking `call.<field>` references.
const CALL_FIELDS: [&str; 21] = [
    "model",
    "provider",
    "operation",
    "input_tokens",
    "output_tokens",
    "cache_read_tokens",
    "total_tokens",
    "cost_usd",
    "priced",
    "stream",
    "status",
    "error_type",
    "org",
    "project",
    "app",
    "environment",
    "user",
    "session",
    "route",
    "upstream",
    "labels",
];

/// How an expression uses `call`, outside string literals and comments: the fields it
/// names as `call.<field>`, and whether `call` also appears on its own
/// (e.g. `"labels" in call`), which needs every field.
#[derive(Debug, Default, PartialEq)]
struct CallUse<'a> {
    fields: Vec<&'a str>,
    whole: bool,
}

/// Whether `b` may continue a CEL identifier.
fn is_ident(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'_'
}

/// The end (exclusive) of the string literal whose opening quote is at
/// `open`: `'…'`, `"…"` or their tripled forms, escapes honoured unless the
/// literal is raw. An unterminated literal runs to the end.
fn string_end(bytes: &[u8], open: usize, raw: bool) -> usize {
    let q = bytes[open];
    let triple = bytes.get(open..open + 3) == Some(&[q, q, q][..]);
    let mut i = open + if triple { 3 } else { 1 };
    while i < bytes.len() {
        match bytes[i] {
            b'\\' if !raw => i += 2,
            b if b == q && !triple => return i + 1,
            b if b == q && bytes.get(i..i + 3) == Some(&[q, q, q][..]) => return i + 3,
            _ => i += 1,
        }
    }
    bytes.len()
}

/// Scans `source` as CEL tokens (comments, string literals with their
/// `r`/`b` prefixes, numbers, identifiers). Only ASCII bytes are ever
/// compared, and slices start and end next to ASCII bytes, so any UTF-8 in
/// comments or strings is skipped whole.
fn call_use(source: &str) -> CallUse<'_> {
    let mut out = CallUse::default();
    let bytes = source.as_bytes();
    // The last byte of the previous token, outside whitespace.
    let mut previous: Option<u8> = None;
    let mut i = 0;
    while let Some(&b) = bytes.get(i) {
        let start = i;
        match b {
            b'/' if bytes.get(i + 1) == Some(&b'/') => {
                i = bytes[i..]
                    .iter()
                    .position(|&c| c == b'\n')
                    .map_or(bytes.len(), |n| i + n);
                continue;
            }
            b'"' | b'\'' => i = string_end(bytes, i, false),
            b'0'..=b'9' => {
                i += bytes[i..].iter().take_while(|&&c| is_ident(c)).count();
            }
            b if is_ident(b) => {
                i += bytes[i..].iter().take_while(|&&c| is_ident(c)).count();
                let word = &bytes[start..i];
                let quoted = matches!(bytes.get(i), Some(b'"' | b'\''));
                if quoted && word.len() <= 2 && word.iter().all(|c| b"rRbB".contains(c)) {
                    // A prefixed literal: r"…" (raw), b'…', rb"…".
                    i = string_end(bytes, i, word.iter().any(|c| b"rR".contains(c)));
                } else if word == b"call" && previous != Some(b'.') {
                    // `call` itself, not a field `x.call` of something else.
                    let name_start = i + 1;
                    let name_len = match bytes.get(i) {
                        Some(b'.') => bytes[name_start..]
                            .iter()
                            .take_while(|&&c| is_ident(c))
                            .count(),
                        _ => 0,
                    };
                    match source.get(name_start..name_start + name_len) {
                        Some(name) if name_len > 0 => {
                            out.fields.push(name);
                            i = name_start + name_len;
                        }
                        _ => out.whole = true,
                    }
                }
            }
            _ => i += 1,
        }
        if !b.is_ascii_whitespace() {
            previous = bytes.get(i.saturating_sub(1)).copied();
        }
    }
    out
}

/// [`call_use`] as plain values, for `crate::fuzzing`.
pub(crate) fn call_fields(source: &str) -> (Vec<&str>, bool) {
    let used = call_use(source);
    (used.fields, used.whole)
}

fn string(s: &str) -> Value {
    Value::String(Arc::new(s.to_owned()))
}

impl CallView<'_> {
    /// The value of one field of [`CALL_FIELDS`].
    fn field(&self, name: &str) -> Value {
        match name {
            "model" => string(self.model),
            "provider" => string(self.provider),
            "operation" => string(self.operation),
            "input_tokens" => Value::Int(self.input_tokens),
            "output_tokens" => Value::Int(self.output_tokens),
            "cache_read_tokens" => Value::Int(self.cache_read_tokens),
            "total_tokens" => Value::Int(self.total_tokens),
            "cost_usd" => Value::Float(self.cost_usd),
            "priced" => Value::Bool(self.priced),
            "stream" => Value::Bool(self.stream),
            "status" => string(self.status),
            "error_type" => string(self.error_type),
            "org" => string(self.org),
            "project" => string(self.project),
            "app" => string(self.app),
            "environment" => string(self.environment),
            "user" => string(self.user),
            "session" => string(self.session),
            "route" => string(self.route),
            "upstream" => string(self.upstream),
            "labels" => {
                let labels: HashMap<Key, Value> = self
                    .labels
                    .iter()
                    .map(|(k, v)| (Key::String(Arc::new(k.clone())), string(v)))
                    .collect();
                Value::from(labels)
            }
            _ => Value::Null,
        }
    }
}

impl CustomExpression {
    /// Parses `source`, checks that every `call.<field>` exists, and runs it
    /// on a sample call so that a type error (e.g. comparing a string with a
    /// number) fails at start-up. A missing map key (`call.labels["team"]` on
    /// a call without labels) is not an error: such calls do not match.
    pub fn compile(source: &str) -> Result<Self, String> {
        let program = Program::compile(source).map_err(|e| e.to_string().replace('\n', " "))?;
        let mut fields = Vec::new();
        let used = call_use(source);
        for field in used.fields {
            let Some(known) = CALL_FIELDS.iter().find(|f| **f == field) else {
                return Err(format!(
                    "`call.{field}` does not exist; call has: {}",
                    CALL_FIELDS.join(", ")
                ));
            };
            if !fields.contains(known) {
                fields.push(*known);
            }
        }
        // `call` used as a whole (e.g. `has(call.x)` spelled another way, or
        // `call` passed to a function): give it every field.
        if used.whole {
            fields = CALL_FIELDS.to_vec();
        }
        let (guards, guarded_fully) = guards(&program.expression().expr);
        let expr = Self {
            program,
            source: source.to_owned(),
            fields,
            guards,
            guarded_fully,
        };
        let sample = CallRecord::default();
        // The interpreter checks types on the sample, guards or not.
        match expr.run(&CallView::of_record(&sample)) {
            Ok(cel::Value::Bool(_)) | Err(cel::ExecutionError::NoSuchKey(_)) => Ok(expr),
            Ok(other) => Err(format!("must yield a bool, got {other:?}")),
            Err(e) => Err(e.to_string()),
        }
    }

    fn run(&self, call: &CallView<'_>) -> Result<cel::Value, cel::ExecutionError> {
        let mut ctx = Context::with_env(stdlib());
        let view: HashMap<Key, Value> = self
            .fields
            .iter()
            .map(|f| (Key::String(Arc::new((*f).to_owned())), call.field(f)))
            .collect();
        ctx.add_variable_from_value("call", Value::from(view));
        self.program.execute(&ctx)
    }

    /// Whether the expression holds for `call`; an evaluation error (e.g. a
    /// label the call does not have) means it does not.
    pub(crate) fn eval(&self, call: &CallView<'_>) -> bool {
        if !self.guards.iter().all(|g| g.holds(call)) {
            return false;
        }
        self.guarded_fully || self.interpret(call)
    }

    /// The interpreter's answer alone.
    fn interpret(&self, call: &CallView<'_>) -> bool {
        matches!(self.run(call), Ok(cel::Value::Bool(true)))
    }

    pub fn source(&self) -> &str {
        &self.source
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn evaluates_over_the_call() {
        let e = CustomExpression::compile(
            r#"call.output_tokens > 8000 && call.model.startsWith("gpt-4")"#,
        )
        .unwrap();
        let mut r = CallRecord {
            request_model: Some("gpt-4o".into()),
            output_tokens: 9000,
            ..Default::default()
        };
        assert!(e.eval(&CallView::of_record(&r)));
        r.output_tokens = 10;
        assert!(!e.eval(&CallView::of_record(&r)));
        r.output_tokens = 9000;
        r.request_model = Some("claude-sonnet-4-5".into());
        assert!(!e.eval(&CallView::of_record(&r)));
    }

    #[test]
    fn labels_and_cost_are_visible() {
        let e =
            CustomExpression::compile(r#"call.labels["team"] == "core" && call.cost_usd > 0.5"#)
                .unwrap();
        let mut r = CallRecord {
            cost_usd: Some(0.75),
            labels: [("team".to_owned(), "core".to_owned())].into(),
            ..Default::default()
        };
        assert!(e.eval(&CallView::of_record(&r)));
        // A call without the label does not match (no error escapes).
        r.labels.clear();
        assert!(!e.eval(&CallView::of_record(&r)));
    }

    #[test]
    fn guards_are_extracted_from_top_level_conjunctions() {
        let count = |src: &str| {
            let e = CustomExpression::compile(src).unwrap();
            (e.guards.len(), e.guarded_fully)
        };
        assert_eq!(
            count(r#"call.output_tokens > 8000 && call.model.startsWith("gpt-4")"#),
            (2, true)
        );
        assert_eq!(
            count(r#"call.cost_usd > 2.0 && call.environment != "batch""#),
            (2, true)
        );
        assert_eq!(
            count(r#"call.labels["team"] == "research" && call.total_tokens > 100000"#),
            (2, true)
        );
        assert_eq!(count(r#"8000 < call.output_tokens"#), (1, true));
        // A term the interpreter must decide keeps it in the loop.
        assert_eq!(
            count(r#"call.input_tokens > 10 && size(call.model) > 3"#),
            (1, false)
        );
        // Mixed int/double and `!=` on a double are left to the interpreter.
        assert_eq!(count(r#"call.cost_usd != 1.5"#), (0, false));
        assert_eq!(count(r#"call.output_tokens > 1.5 || true"#), (0, false));
        assert_eq!(
            count(r#"call.input_tokens > 1 || call.output_tokens > 1"#),
            (0, false)
        );
    }

    /// Guards never change an answer: every expression gives what the
    /// interpreter alone gives, on calls that meet and miss each term.
    #[test]
    fn guarded_answers_equal_the_interpreter() {
        let sources = [
            r#"call.output_tokens > 8000 && call.model.startsWith("gpt-4")"#,
            r#"call.cost_usd > 2.0 && call.environment != "batch""#,
            r#"call.cost_usd <= 2.0"#,
            r#"call.labels["team"] == "research" && call.total_tokens > 100000"#,
            r#"call.labels["team"] != "research""#,
            r#"100 >= call.input_tokens && call.provider == "openai""#,
            r#"call.model.endsWith("-mini") && call.user.contains("bob")"#,
            r#"call.input_tokens < 500 && size(call.model) > 5"#,
            r#"call.cache_read_tokens == 0 && call.session != "" && call.org == "acme""#,
        ];
        let models = ["gpt-4o", "gpt-4o-mini", "claude-sonnet-4-5", ""];
        let mut records = Vec::new();
        for (i, model) in models.iter().enumerate() {
            for tokens in [0u64, 100, 8_001, 200_000] {
                for labelled in [None, Some("research"), Some("core")] {
                    let mut r = CallRecord {
                        request_model: (!model.is_empty()).then(|| (*model).to_owned()),
                        provider: Some(if i % 2 == 0 { "openai" } else { "anthropic" }.into()),
                        input_tokens: tokens / 2,
                        output_tokens: tokens,
                        cache_read_tokens: tokens % 3,
                        cost_usd: Some(tokens as f64 / 10_000.0),
                        environment: Some(if tokens > 100 { "batch" } else { "prod" }.into()),
                        user: Some(format!("bob-{i}")),
                        session: (tokens > 0).then(|| "s1".to_owned()),
                        org: Some("acme".into()),
                        ..Default::default()
                    };
                    if let Some(team) = labelled {
                        r.labels.insert("team".into(), team.into());
                    }
                    records.push(r);
                }
            }
        }
        let mut held = [0usize; 2];
        for src in sources {
            let e = CustomExpression::compile(src).unwrap();
            assert!(!e.guards.is_empty(), "{src}: no guard");
            for r in &records {
                let view = CallView::of_record(r);
                let (fast, slow) = (e.eval(&view), e.interpret(&view));
                assert_eq!(fast, slow, "{src} on {r:?}");
                held[usize::from(fast)] += 1;
            }
        }
        // Both answers occur, so the comparison means something.
        assert!(held[0] > 50 && held[1] > 50, "{held:?}");
    }

    #[test]
    fn bad_expressions_fail_at_compile_time() {
        assert!(CustomExpression::compile("call.output_tokens >").is_err());
        assert!(
            CustomExpression::compile("call.output_tokens")
                .unwrap_err()
                .contains("bool")
        );
        assert!(CustomExpression::compile(r#"call.model > 3"#).is_err());
        let typo = CustomExpression::compile(r#"call.modle == "gpt-4o""#).unwrap_err();
        assert!(typo.contains("call.modle"), "{typo}");
        // Text inside strings is not a field reference.
        assert!(CustomExpression::compile(r#"call.route == "call.nothing""#).is_ok());
    }

    #[test]
    fn only_referenced_fields_are_built_unless_call_is_used_whole() {
        let e = CustomExpression::compile(r#"call.model == "x" && call.input_tokens > 1"#).unwrap();
        assert_eq!(e.fields, vec!["model", "input_tokens"]);
        let whole = CustomExpression::compile(r#""labels" in call && size(call) > 3"#).unwrap();
        assert_eq!(whole.fields.len(), CALL_FIELDS.len());
        let r = CallRecord::default();
        assert!(whole.eval(&CallView::of_record(&r)));
        // Text in strings and other identifiers are not `call`.
        assert!(!call_use(r#"call.route == "call""#).whole);
        assert!(!call_use(r#"caller.x == 1 && call_x == 2"#).whole);
        assert!(call_use(r#"size(call) > 1"#).whole);
    }

    /// A comment holding a multi-byte letter once sliced `source` inside
    /// that letter and panicked at start-up.
    #[test]
    fn non_ascii_in_comments_and_strings_compiles() {
        let e = CustomExpression::compile("call.cost_usd > 1.0 // coût").unwrap();
        assert_eq!(e.fields, vec!["cost_usd"]);
        let mut r = CallRecord {
            cost_usd: Some(1.5),
            ..Default::default()
        };
        assert!(e.eval(&CallView::of_record(&r)));
        r.cost_usd = Some(0.5);
        assert!(!e.eval(&CallView::of_record(&r)));

        let e = CustomExpression::compile(r#"call.user == "zoë" && call.route != "日本""#).unwrap();
        assert_eq!(e.fields, vec!["user", "route"]);
        r.user = Some("zoë".into());
        assert!(e.eval(&CallView::of_record(&r)));
    }

    #[test]
    fn the_call_scanner_skips_comments_and_every_string_form() {
        // A field named in a comment is not read, and a quote in a comment
        // does not open a string.
        let used =
            call_use("call.model == \"x\" // don't read call.nothing\n&& call.user == \"u\"");
        assert_eq!(used.fields, vec!["model", "user"]);
        assert!(!used.whole);
        // Raw strings: a backslash does not escape the closing quote.
        assert_eq!(call_use(r#"r"\" == call.route"#).fields, vec!["route"]);
        assert_eq!(
            call_use(r#"call.model == R'a\' && call.app == "b""#).fields,
            vec!["model", "app"]
        );
        // Triple-quoted strings hold quotes; bytes prefixes are literals too.
        let used = call_use(r#"'''it's call.x''' == call.org && b"call.y" != rb'call'"#);
        assert_eq!(used.fields, vec!["org"]);
        assert!(!used.whole);
        // `x.call` is a field of x; `call` on its own is the whole variable.
        assert!(!call_use("m.call == 1").whole);
        assert!(call_use("size(call)").whole);
        assert!(call_use("1 < 2 && call").whole);
        // Numbers do not hide identifiers after operators.
        assert_eq!(call_use("1.5e3<call.cost_usd").fields, vec!["cost_usd"]);
        // And the compiled rule agrees: a field named only in a comment is
        // neither checked nor built.
        let e = CustomExpression::compile("call.cost_usd > 1.0 // was call.costs").unwrap();
        assert_eq!(e.fields, vec!["cost_usd"]);
    }

    /// Sources mixing multi-byte text with `call.`, cut at every char
    /// boundary, scan without panicking.
    #[test]
    fn the_call_scanner_never_slices_inside_a_character() {
        let sources = [
            "call.cost_usd > 1.0 // coût",
            "/* ü */ call.ü",
            "call.é",
            "'ß' + call.model // ñ call.user",
            "\"\\é\" == call.route",
            "r\"é\\\" == call.app",
            "\u{1F600}call.model",
            "ûcall.model",
            "call.modelé",
        ];
        for source in sources {
            for (cut, _) in source.char_indices().chain([(source.len(), ' ')]) {
                let _ = call_use(&source[..cut]);
                let _ = CustomExpression::compile(&source[..cut]);
            }
        }
        assert_eq!(call_use("call.modelé").fields, vec!["model"]);
        assert!(call_use("call.é").fields.is_empty());
        assert!(call_use("call.é").whole);
        // Multi-byte text does not count as an identifier character.
        assert_eq!(call_use("ûcall.model").fields, vec!["model"]);
        assert!(CustomExpression::compile("call.cost_usd > 1.0 // coût\n && call.ü").is_err());
    }
}
