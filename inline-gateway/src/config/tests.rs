//! Parsing and validation of `[gateway]`.

use std::time::Duration;

use super::*;
use crate::error::GatewayError;

fn parse(text: &str) -> GatewayConfig {
    #[derive(serde::Deserialize)]
    struct File {
        gateway: GatewayConfig,
    }
    match toml::from_str::<File>(text) {
        Ok(f) => f.gateway,
        Err(e) => panic!("does not parse: {e}"),
    }
}

fn env(name: &str) -> Option<String> {
    match name {
        "OPENAI_API_KEY" => Some("sk-test-openai".into()),
        "ANTHROPIC_API_KEY" => Some("sk-ant-test".into()),
        _ => None,
    }
}

fn error_of(text: &str) -> String {
    match parse(text).validate_with(&env) {
        Ok(_) => panic!("validated"),
        Err(e) => e.to_string(),
    }
}

const FULL: &str = r#"
[gateway]
enabled = true
listen = "127.0.0.1:9999"
default_max_tokens = 1000
circuit_breaker = { failure_threshold = 3, cooldown = "10s" }

[[gateway.providers]]
name = "openai"
kind = "openai"
api_key_env = "OPENAI_API_KEY"
timeout = "20s"
region = "us-east"
headers = { "OpenAI-Organization" = "org-1" }

[[gateway.providers]]
name = "claude"
kind = "anthropic"
api_key_env = "ANTHROPIC_API_KEY"

[[gateway.providers]]
name = "azure-eu"
kind = "azure"
base_url = "https://x.openai.azure.com/"
api_key_env = "OPENAI_API_KEY"
api_version = "2024-10-21"
models = ["gpt-4o"]

[[gateway.providers]]
name = "local"
kind = "openai_compatible"
base_url = "http://127.0.0.1:8000/v1"

[[gateway.routes]]
name = "support-chat"
retries = 2
backoff = "50ms"
targets = [
  { provider = "openai", model = "gpt-4o-mini", weight = 3, timeout = "5s" },
  { provider = "claude", model = "claude-3-5-haiku-20241022" },
]
"#;

#[test]
fn gateway_is_off_by_default() {
    let c = GatewayConfig::default();
    assert!(!c.enabled);
    assert_eq!(c.listen, "127.0.0.1:7071");
    assert_eq!(c.default_max_tokens, 4096);
    assert_eq!(c.image_input_tokens, 4096);
    assert_eq!(c.unpriced_cost_per_mtok, None);
    assert_eq!(c.circuit_breaker.failure_threshold, 5);
}

#[test]
fn a_full_config_validates_with_defaults_filled_in() {
    let c = parse(FULL);
    assert_eq!(c.circuit_breaker.cooldown, Duration::from_secs(10));
    let v = c.validate_with(&env).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(v.listen().to_string(), "127.0.0.1:9999");
    assert_eq!(v.default_max_tokens, 1000);
    assert_eq!(v.image_input_tokens, 4096);
    assert_eq!(
        v.unpriced_price, None,
        "unpriced models are refused by default"
    );
    let openai = &v.providers[0];
    assert_eq!(openai.base_url, "https://api.openai.com/v1");
    assert_eq!(openai.timeout, Duration::from_secs(20));
    assert_eq!(openai.upstream, "us-east");
    assert_eq!(openai.provider_name, "openai");
    assert!(openai.models.iter().any(|m| m == "gpt-*"));
    assert_eq!(
        openai.key.as_ref().map(|k| k.expose()),
        Some("sk-test-openai")
    );
    let claude = &v.providers[1];
    assert_eq!(claude.base_url, "https://api.anthropic.com");
    assert_eq!(claude.upstream, "api.anthropic.com");
    let azure = &v.providers[2];
    assert_eq!(azure.base_url, "https://x.openai.azure.com");
    assert_eq!(azure.provider_name, "azure.ai.openai");
    let local = &v.providers[3];
    assert!(local.key.is_none());
    assert_eq!(local.upstream, "127.0.0.1:8000");
    assert_eq!(local.provider_name, "local");
    let route = &v.routes[0];
    assert_eq!(route.retries, 2);
    assert_eq!(route.backoff, Duration::from_millis(50));
    assert!(route.weighted);
    assert_eq!(route.targets[0].weight, 3);
    assert_eq!(route.targets[1].weight, 1);
    assert_eq!(route.targets[1].provider, 1);
    assert_eq!(route.targets[0].timeout, Some(Duration::from_secs(5)));
}

#[test]
fn debug_output_shows_no_key_nor_header_value() {
    let v = parse(FULL)
        .validate_with(&env)
        .unwrap_or_else(|e| panic!("{e}"));
    let shown = format!("{v:?} {:?}", parse(FULL));
    assert!(!shown.contains("sk-test-openai"), "{shown}");
    assert!(!shown.contains("sk-ant-test"));
    assert!(!shown.contains("org-1"));
}

#[test]
fn an_inline_key_is_refused_without_being_shown() {
    let e = error_of(
        r#"
[gateway]
[[gateway.providers]]
name = "openai"
kind = "openai"
api_key = "sk-live-inline-secret"
"#,
    );
    assert!(e.contains("gateway.providers[0].api_key"), "{e}");
    assert!(e.contains("api_key_env"), "{e}");
    assert!(!e.contains("sk-live-inline-secret"), "{e}");
    let parsed = parse(
        "[gateway]\n[[gateway.providers]]\nname = \"o\"\nkind = \"openai\"\napi_key = \"sk-live-x\"\n",
    );
    assert!(!format!("{parsed:?}").contains("sk-live-x"));
}

#[test]
fn each_mistake_names_its_field() {
    let cases: &[(&str, &str)] = &[
        (
            "[gateway]\n[[gateway.providers]]\nname = \"o\"\nkind = \"openai\"\napi_key_env = \"MISSING\"\n",
            "`gateway.providers[0].api_key_env`: environment variable MISSING is not set",
        ),
        (
            "[gateway]\n[[gateway.providers]]\nname = \"o\"\nkind = \"openai\"\n",
            "gateway.providers[0].api_key_env",
        ),
        (
            "[gateway]\n[[gateway.providers]]\nname = \"a\"\nkind = \"azure\"\nbase_url = \"https://x\"\napi_key_env = \"OPENAI_API_KEY\"\n",
            "gateway.providers[0].api_version",
        ),
        (
            "[gateway]\n[[gateway.providers]]\nname = \"c\"\nkind = \"openai_compatible\"\n",
            "gateway.providers[0].base_url",
        ),
        (
            "[gateway]\n[[gateway.providers]]\nname = \"o/x\"\nkind = \"openai\"\napi_key_env = \"OPENAI_API_KEY\"\n",
            "gateway.providers[0].name",
        ),
        (
            "[gateway]\n[[gateway.providers]]\nname = \"o\"\nkind = \"openai\"\napi_key_env = \"OPENAI_API_KEY\"\nheaders = { Authorization = \"Bearer x\" }\n",
            "gateway.providers[0].headers.Authorization",
        ),
        (
            "[gateway]\n[[gateway.providers]]\nname = \"o\"\nkind = \"openai\"\napi_key_env = \"OPENAI_API_KEY\"\n[[gateway.providers]]\nname = \"o\"\nkind = \"openai\"\napi_key_env = \"OPENAI_API_KEY\"\n",
            "gateway.providers[1].name",
        ),
        (
            "[gateway]\n[[gateway.providers]]\nname = \"o\"\nkind = \"openai\"\napi_key_env = \"OPENAI_API_KEY\"\n[[gateway.routes]]\nname = \"r\"\ntargets = [{ provider = \"nope\", model = \"m\" }]\n",
            "gateway.routes[0].targets[0].provider",
        ),
        (
            "[gateway]\n[[gateway.providers]]\nname = \"o\"\nkind = \"openai\"\napi_key_env = \"OPENAI_API_KEY\"\n[[gateway.routes]]\nname = \"r\"\ntargets = []\n",
            "gateway.routes[0].targets",
        ),
        (
            "[gateway]\n[[gateway.providers]]\nname = \"o\"\nkind = \"openai\"\napi_key_env = \"OPENAI_API_KEY\"\nbase_url = \"https://user:pw@example.com/v1\"\n",
            "gateway.providers[0].base_url",
        ),
        (
            "[gateway]\nunpriced_cost_per_mtok = -1.0\n[[gateway.providers]]\nname = \"o\"\nkind = \"openai\"\napi_key_env = \"OPENAI_API_KEY\"\n",
            "`gateway.unpriced_cost_per_mtok`: `-1` is not a price",
        ),
        (
            "[gateway]\nunpriced_cost_per_mtok = nan\n[[gateway.providers]]\nname = \"o\"\nkind = \"openai\"\napi_key_env = \"OPENAI_API_KEY\"\n",
            "`gateway.unpriced_cost_per_mtok`: `NaN` is not a price",
        ),
        (
            "[gateway]\nimage_input_tokens = 0\n[[gateway.providers]]\nname = \"o\"\nkind = \"openai\"\napi_key_env = \"OPENAI_API_KEY\"\n",
            "`gateway.image_input_tokens`: must be at least 1",
        ),
        ("[gateway]\n", "gateway.providers"),
        ("[gateway]\nlisten = \"nowhere\"\n", "gateway.listen"),
    ];
    for (text, expected) in cases {
        let e = error_of(text);
        assert!(e.contains(expected), "expected `{expected}` in `{e}`");
    }
}

#[test]
fn unknown_fields_are_rejected_at_parse_time() {
    #[derive(serde::Deserialize, Debug)]
    #[allow(dead_code)]
    struct File {
        gateway: GatewayConfig,
    }
    let e = toml::from_str::<File>("[gateway]\nenable = true\n")
        .map(|_| ())
        .unwrap_err()
        .to_string();
    assert!(e.contains("enable"), "{e}");
}

#[test]
fn a_key_file_is_read_and_trimmed() {
    let dir = std::env::temp_dir().join(format!("tg-gw-key-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("{e}"));
    let path = dir.join("key");
    std::fs::write(&path, "  sk-from-file\n").unwrap_or_else(|e| panic!("{e}"));
    let text = format!(
        "[gateway]\n[[gateway.providers]]\nname = \"o\"\nkind = \"openai\"\napi_key_file = \"{}\"\n",
        path.display()
    );
    let v = parse(&text)
        .validate_with(&env)
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(
        v.providers[0].key.as_ref().map(|k| k.expose()),
        Some("sk-from-file")
    );
    let missing = text.replace("key\"", "nokey\"");
    let e = parse(&missing).validate_with(&env).map(|_| ()).unwrap_err();
    assert!(matches!(e, GatewayError::ProviderKey { .. }), "{e}");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn an_unpriced_price_is_one_rate_for_input_and_output() {
    let text = "[gateway]\nunpriced_cost_per_mtok = 12.5\nimage_input_tokens = 2000\n[[gateway.providers]]\nname = \"o\"\nkind = \"openai\"\napi_key_env = \"OPENAI_API_KEY\"\n";
    let v = parse(text).validate_with(&env).unwrap();
    assert_eq!(
        v.unpriced_price,
        Some(tollgate_rules::pricing::ModelPrice::new(12.5, 12.5))
    );
    assert_eq!(v.image_input_tokens, 2000);
}

#[test]
fn the_responses_api_is_on_for_openai_and_only_openai_kinds_may_claim_it() {
    let text = |kind: &str, extra: &str| {
        format!(
            "[gateway]\n[[gateway.providers]]\nname = \"p\"\nkind = \"{kind}\"\n\
             base_url = \"http://127.0.0.1:9/v1\"\napi_key_env = \"OPENAI_API_KEY\"\n{extra}\n"
        )
    };
    let served = |kind: &str, extra: &str| {
        parse(&text(kind, extra))
            .validate_with(&env)
            .unwrap()
            .providers[0]
            .responses_api
    };
    assert!(served("openai", ""));
    assert!(!served("openai", "responses_api = false"));
    assert!(!served("openai_compatible", ""));
    assert!(served("openai_compatible", "responses_api = true"));
    assert!(!served("anthropic", ""));
    let e = error_of(&text("anthropic", "responses_api = true"));
    assert!(e.contains("gateway.providers[0].responses_api"), "{e}");
    let config = parse("[gateway]\n");
    assert_eq!(config.unseen_input_tokens, 128_000);
}
