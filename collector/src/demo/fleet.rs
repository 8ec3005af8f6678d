//! Who the demo agents are and what they call.

use std::time::{Duration, SystemTime};

use rand::Rng;
use rand::rngs::StdRng;
use tollgate_sdk::{ModelCall, Scope};

/// One agent application of the demo fleet (one OTLP resource).
pub(crate) struct DemoApp {
    pub org: &'static str,
    pub project: &'static str,
    pub app: &'static str,
    pub environment: &'static str,
    pub agent: &'static str,
    /// Models this app uses, with weights.
    pub models: &'static [(&'static str, &'static str, u32)],
}

pub(crate) const FLEET: &[DemoApp] = &[
    DemoApp {
        org: "acme",
        project: "support-bot",
        app: "support-bot-api",
        environment: "prod",
        agent: "triage",
        models: &[
            ("openai", "gpt-4o-mini", 6),
            ("anthropic", "claude-3-5-haiku-20241022", 3),
            ("openai", "text-embedding-3-small", 2),
        ],
    },
    DemoApp {
        org: "acme",
        project: "search",
        app: "search-reranker",
        environment: "prod",
        agent: "reranker",
        models: &[
            ("openai", "gpt-4o", 3),
            ("gcp.gemini", "gemini-2.5-flash", 4),
        ],
    },
    DemoApp {
        org: "acme",
        project: "billing-agent",
        app: "billing-worker",
        environment: "staging",
        agent: "invoice-reader",
        models: &[
            ("anthropic", "claude-sonnet-4-5", 3),
            ("openai", "gpt-4.1-mini", 2),
        ],
    },
    DemoApp {
        org: "globex",
        project: "research-assistant",
        app: "research-web",
        environment: "prod",
        agent: "researcher",
        models: &[
            ("openai", "o4-mini", 2),
            ("anthropic", "claude-sonnet-4-5", 3),
            ("deepseek", "deepseek-chat", 2),
        ],
    },
    DemoApp {
        org: "globex",
        project: "codegen",
        app: "codegen-cli",
        environment: "prod",
        agent: "coder",
        models: &[
            ("openai", "gpt-4.1", 3),
            ("mistral_ai", "codestral-latest", 2),
            ("openai", "gpt-4o-2024-08-06", 1),
        ],
    },
    DemoApp {
        org: "initech",
        project: "sales-copilot",
        app: "sales-copilot",
        environment: "prod",
        agent: "copilot",
        models: &[
            ("gcp.gemini", "gemini-2.0-flash", 3),
            ("openai", "gpt-4o-mini", 2),
            ("vllm", "initech-llama-ft-v3", 1),
        ],
    },
];

fn pick_model(rng: &mut StdRng, app: &DemoApp) -> (&'static str, &'static str) {
    let total: u32 = app.models.iter().map(|m| m.2).sum();
    let mut n = rng.random_range(0..total.max(1));
    for (provider, model, w) in app.models {
        if n < *w {
            return (provider, model);
        }
        n -= w;
    }
    (app.models[0].0, app.models[0].1)
}

/// A plausible call of `app`, ending about `ago` before now.
pub(crate) fn call(rng: &mut StdRng, app: &DemoApp, ago: Duration) -> (ModelCall, Scope) {
    let (provider, model) = pick_model(rng, app);
    let embeddings = model.contains("embedding");
    let mut call = ModelCall::new(
        provider,
        if embeddings { "embeddings" } else { "chat" },
        model,
    );
    let user = rng.random_range(1..=40);
    let session = rng.random_range(1..=6);
    let input = if embeddings {
        rng.random_range(20..400)
    } else {
        rng.random_range(150..6000)
    };
    let output = if embeddings {
        0
    } else {
        rng.random_range(20..900)
    };
    call.max_tokens = (!embeddings).then_some(1024);
    call.input_tokens = Some(input);
    call.output_tokens = Some(output);
    if !embeddings && provider != "vllm" && rng.random_bool(0.3) {
        call.cache_read_tokens = Some(input * rng.random_range(30..80) / 100);
    }
    if provider == "anthropic" && rng.random_bool(0.1) {
        call.cache_write_tokens = Some(input / 5);
    }
    if model.starts_with("o4") {
        call.reasoning_tokens = Some(output / 2);
    }
    call.stream = !embeddings && rng.random_bool(0.35);
    let latency = Duration::from_millis(if embeddings {
        rng.random_range(40..200)
    } else {
        300 + output * rng.random_range(8..25)
    });
    if call.stream {
        call.time_to_first_token = Some(Duration::from_millis(rng.random_range(120..700)));
    }
    call.response_model = Some(model.to_owned());
    call.response_id = Some(format!("resp-{:016x}", rng.random::<u64>()));
    call.finish_reason = (!embeddings).then(|| "stop".to_owned());
    call.conversation_id = Some(format!("{}-u{user:03}-s{session}", app.project));
    call.agent_name = Some(app.agent.to_owned());
    let roll: f64 = rng.random();
    if roll < 0.04 {
        call.error_type = Some("rate_limit_exceeded".into());
        call.http_status = Some(429);
    } else if roll < 0.05 {
        call.error_type = Some("server_error".into());
        call.http_status = Some(500);
    } else if roll < 0.06 {
        call.error_type = Some("timeout".into());
    }
    if call.error_type.is_some() {
        call.input_tokens = None;
        call.output_tokens = None;
        call.cache_read_tokens = None;
        call.cache_write_tokens = None;
        call.reasoning_tokens = None;
        call.finish_reason = None;
    }
    let end = SystemTime::now() - ago;
    call.end = end;
    call.start = end - latency;
    let scope = Scope {
        org: Some(app.org.to_owned()),
        project: Some(app.project.to_owned()),
        user: Some(format!("user-{user:03}")),
        session: None,
        route: Some(format!("{}-default", app.project)),
        environment: None,
        labels: vec![("team".to_owned(), app.org.to_owned())],
    };
    (call, scope)
}
