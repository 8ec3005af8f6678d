//! Tests of the price table as users meet it: the built-in data, costs to the
//! cent, name matching, overrides and refused tables.

use std::sync::Arc;

use proptest::prelude::*;

use super::*;

fn builtin() -> PriceTable {
    PriceTable::builtin().unwrap()
}

fn usage(input: u64, output: u64) -> TokenUsage {
    TokenUsage {
        input,
        output,
        ..TokenUsage::default()
    }
}

#[track_caller]
fn assert_usd(actual: f64, expected: f64) {
    assert!(
        (actual - expected).abs() < 1e-9,
        "cost {actual} != expected {expected}"
    );
}

/// The canonical (provider, model) a lookup lands on.
#[track_caller]
fn matched(table: &PriceTable, provider: Option<&str>, model: &str) -> (String, String) {
    let m = table
        .resolve(provider, model)
        .unwrap_or_else(|| panic!("`{model}` (provider {provider:?}) found no price"));
    (m.provider.unwrap_or("").to_owned(), m.model.to_owned())
}

#[track_caller]
fn model_of(table: &PriceTable, model: &str) -> String {
    matched(table, None, model).1
}

// ---------------------------------------------------------------- built-in

#[test]
fn builtin_table_parses_with_a_dated_version() {
    let t = builtin();
    assert_eq!(t.version(), "2026-11-01");
    assert!(t.len() >= 90, "only {} entries", t.len());
    assert!(!t.is_empty());
}

#[test]
fn every_builtin_entry_has_sane_prices() {
    for m in builtin().entries() {
        let p = m.price;
        assert!(m.provider.is_some(), "{} has no provider", m.model);
        assert!(
            p.input_per_mtok.is_finite() && p.input_per_mtok >= 0.0,
            "{}",
            m.model
        );
        assert!(
            p.output_per_mtok.is_finite() && p.output_per_mtok >= 0.0,
            "{}",
            m.model
        );
        // Every chat model charges for input; only embeddings have a zero price.
        assert!(p.input_per_mtok > 0.0, "{} has a zero input price", m.model);
        // A long-context tier is never cheaper than what it replaces, which
        // keeps costs monotonic across the threshold.
        let mut below = (p.input_per_mtok, p.output_per_mtok);
        for tier in &p.tiers {
            assert!(tier.input_per_mtok >= below.0, "{}", m.model);
            assert!(tier.output_per_mtok >= below.1, "{}", m.model);
            below = (tier.input_per_mtok, tier.output_per_mtok);
        }
    }
}

#[test]
fn every_builtin_model_is_found_by_its_own_name() {
    let t = builtin();
    for m in t.entries() {
        let found = t.resolve(m.provider, m.model).unwrap();
        assert_eq!((found.provider, found.model), (m.provider, m.model));
    }
}

#[test]
fn anthropic_cache_prices_follow_the_published_multipliers() {
    // Claude 3 Haiku predates the rule: its cache write is listed at $0.30, not $0.3125.
    let exempt = ["claude-3-haiku"];
    for m in builtin()
        .entries()
        .filter(|m| m.provider == Some("anthropic") && !exempt.contains(&m.model))
    {
        let p = m.price;
        assert_usd(p.cache_write_per_mtok.unwrap(), p.input_per_mtok * 1.25);
        assert_usd(p.cache_read_per_mtok.unwrap(), p.input_per_mtok * 0.1);
    }
}

#[test]
fn covers_every_provider_family() {
    let t = builtin();
    for provider in [
        "openai",
        "anthropic",
        "gcp.gemini",
        "mistral_ai",
        "together_ai",
        "groq",
        "fireworks",
        "aws.bedrock",
        "deepseek",
        "x_ai",
    ] {
        assert!(
            t.entries().any(|m| m.provider == Some(provider)),
            "no {provider} prices"
        );
    }
}

#[test]
fn table_is_shareable() {
    fn shareable<T: Send + Sync + Clone + std::fmt::Debug + 'static>() {}
    shareable::<PriceTable>();
    let t = Arc::new(builtin());
    let t2 = Arc::clone(&t);
    let handle = std::thread::spawn(move || t2.cost(None, "gpt-4o", &usage(1_000_000, 0)));
    assert_eq!(handle.join().unwrap(), Some(2.5));
    assert!(format!("{t:?}").contains("2026-11-01"));
}

// ---------------------------------------------------------------- costs

#[test]
fn plain_input_and_output() {
    let t = builtin();
    // 1,000 x $2.50 + 500 x $10 per million.
    assert_usd(
        t.cost(Some("openai"), "gpt-4o", &usage(1_000, 500))
            .unwrap(),
        0.0075,
    );
    // 12,345 x $0.15 + 6,789 x $0.60 per million.
    assert_usd(
        t.cost(None, "gpt-4o-mini", &usage(12_345, 6_789)).unwrap(),
        0.00592515,
    );
    // Embeddings: 1M tokens of text-embedding-3-small.
    assert_usd(
        t.cost(None, "text-embedding-3-small", &usage(1_000_000, 0))
            .unwrap(),
        0.02,
    );
    // A known model with no usage costs exactly nothing; that is not "unpriced".
    assert_eq!(t.cost(None, "gpt-4o", &TokenUsage::default()), Some(0.0));
}

#[test]
fn openai_cached_input() {
    // 600 uncached x $2.50 + 400 cached x $1.25 + 500 x $10.
    let u = TokenUsage {
        input: 1_000,
        output: 500,
        cache_read: 400,
        cache_write: 0,
    };
    assert_usd(builtin().cost(None, "gpt-4o", &u).unwrap(), 0.007);
}

#[test]
fn anthropic_cache_read_and_write() {
    // 2,000 uncached x $3 + 6,000 read x $0.30 + 2,000 written x $3.75
    // + 1,000 output x $15 = $0.0303.
    let u = TokenUsage {
        input: 10_000,
        output: 1_000,
        cache_read: 6_000,
        cache_write: 2_000,
    };
    assert_usd(
        builtin()
            .cost(Some("anthropic"), "claude-sonnet-4-5", &u)
            .unwrap(),
        0.0303,
    );
    // Haiku 3.5: 50k written x $1 + 100k read x $0.08 + 10k uncached x $0.80 + 2k x $4.
    let u = TokenUsage {
        input: 160_000,
        output: 2_000,
        cache_read: 100_000,
        cache_write: 50_000,
    };
    assert_usd(
        builtin()
            .cost(None, "claude-3-5-haiku-20241022", &u)
            .unwrap(),
        0.074,
    );
}

#[test]
fn missing_cache_prices_fall_back_to_input() {
    // Mistral has no cache prices: every input token is $2, cached or not.
    let u = TokenUsage {
        input: 1_000_000,
        output: 0,
        cache_read: 300_000,
        cache_write: 200_000,
    };
    assert_usd(builtin().cost(None, "mistral-large", &u).unwrap(), 2.0);
}

#[test]
fn deepseek_cache_hits() {
    // 200k misses x $0.28 + 800k hits x $0.028 + 100k output x $0.42 = $0.1204.
    let u = TokenUsage {
        input: 1_000_000,
        output: 100_000,
        cache_read: 800_000,
        cache_write: 0,
    };
    assert_usd(
        builtin()
            .cost(Some("deepseek"), "deepseek-reasoner", &u)
            .unwrap(),
        0.1204,
    );
}

#[test]
fn cached_tokens_beyond_input_are_not_double_charged() {
    // A span that reports input without its cached part must not go
    // negative: uncached input floors at zero, cached tokens keep their price.
    let u = TokenUsage {
        input: 100,
        output: 0,
        cache_read: 1_000,
        cache_write: 0,
    };
    assert_usd(
        builtin().cost(None, "gpt-4o", &u).unwrap(),
        1_000.0 * 1.25 / 1e6,
    );
}

#[test]
fn long_context_tier_boundary() {
    let t = builtin();
    // Exactly 200k input tokens is still the base price: $0.60 + 1k x $15.
    let at = t
        .cost(None, "claude-sonnet-4", &usage(200_000, 1_000))
        .unwrap();
    assert_usd(at, 0.615);
    // One more token and the whole call moves to $6 / $22.50.
    let above = t
        .cost(None, "claude-sonnet-4", &usage(200_001, 1_000))
        .unwrap();
    assert_usd(above, 1.222506);
    // Gemini 2.5 Pro above 200k: 300k x $2.50 + 2k x $15 = $0.78.
    assert_usd(
        t.cost(Some("gcp.gemini"), "gemini-2.5-pro", &usage(300_000, 2_000))
            .unwrap(),
        0.78,
    );
    // ... and below: 100k x $1.25 + 2k x $10 = $0.145.
    assert_usd(
        t.cost(Some("gcp.gemini"), "gemini-2.5-pro", &usage(100_000, 2_000))
            .unwrap(),
        0.145,
    );
}

#[test]
fn tier_counts_cached_tokens_and_prices_the_cache_too() {
    // 250k input of which 240k cache reads: the tier is chosen by all input.
    // 10k x $6 + 240k x $0.60 + 1k x $22.50 = $0.2265.
    let u = TokenUsage {
        input: 250_000,
        output: 1_000,
        cache_read: 240_000,
        cache_write: 0,
    };
    assert_usd(
        builtin().cost(None, "claude-sonnet-4-5", &u).unwrap(),
        0.2265,
    );
}

#[test]
fn hand_built_tiers_need_not_be_sorted() {
    let mut price = ModelPrice::new(1.0, 2.0);
    price.tiers = vec![
        PriceTier {
            above_input_tokens: 500_000,
            input_per_mtok: 4.0,
            output_per_mtok: 8.0,
            cache_read_per_mtok: None,
            cache_write_per_mtok: None,
        },
        PriceTier {
            above_input_tokens: 100_000,
            input_per_mtok: 2.0,
            output_per_mtok: 4.0,
            cache_read_per_mtok: None,
            cache_write_per_mtok: None,
        },
    ];
    assert_usd(price.cost(&usage(100_000, 0)), 0.1);
    assert_usd(price.cost(&usage(200_000, 0)), 0.4);
    assert_usd(price.cost(&usage(1_000_000, 0)), 4.0);
}

#[test]
fn unknown_models_are_unpriced_not_free() {
    let t = builtin();
    for model in [
        "",
        "my-local-model",
        "gpt-7",
        "llama3.1:8b",
        "o3-mini-high-ultra",
    ] {
        assert_eq!(t.cost(None, model, &usage(1_000, 1_000)), None, "{model}");
    }
}

// ---------------------------------------------------------------- matching

#[test]
fn exact_and_case_insensitive() {
    let t = builtin();
    assert_eq!(model_of(&t, "gpt-4o"), "gpt-4o");
    assert_eq!(model_of(&t, "GPT-4o"), "gpt-4o");
    assert_eq!(model_of(&t, "  gpt-4o-mini "), "gpt-4o-mini");
    assert_eq!(
        model_of(&t, "Claude-3-5-Sonnet-20241022"),
        "claude-3-5-sonnet"
    );
}

#[test]
fn provider_prefixes() {
    let t = builtin();
    let cases = [
        ("openai/gpt-4o", "openai", "gpt-4o"),
        ("openai/gpt-4.1-mini", "openai", "gpt-4.1-mini"),
        (
            "anthropic/claude-3.5-sonnet",
            "anthropic",
            "claude-3-5-sonnet",
        ),
        ("anthropic/claude-sonnet-4", "anthropic", "claude-sonnet-4"),
        ("anthropic/claude-opus-4.1", "anthropic", "claude-opus-4-1"),
        ("google/gemini-2.5-pro", "gcp.gemini", "gemini-2.5-pro"),
        (
            "models/gemini-2.0-flash-001",
            "gcp.gemini",
            "gemini-2.0-flash",
        ),
        (
            "models/gemini-1.5-flash-latest",
            "gcp.gemini",
            "gemini-1.5-flash",
        ),
        (
            "mistralai/mistral-large-2411",
            "mistral_ai",
            "mistral-large",
        ),
        ("x-ai/grok-4", "x_ai", "grok-4"),
        ("deepseek/deepseek-chat", "deepseek", "deepseek-chat"),
        (
            "meta-llama/Llama-3.3-70B-Instruct-Turbo",
            "together_ai",
            "llama-3.3-70b",
        ),
        (
            "meta-llama/Meta-Llama-3.1-8B-Instruct-Turbo",
            "together_ai",
            "llama-3.1-8b",
        ),
        (
            "accounts/fireworks/models/llama-v3p1-70b-instruct",
            "fireworks",
            "llama-3.1-70b",
        ),
        (
            "projects/acme/locations/us-central1/publishers/google/models/gemini-1.5-pro-002",
            "gcp.gemini",
            "gemini-1.5-pro",
        ),
    ];
    for (name, provider, model) in cases {
        assert_eq!(
            matched(&t, None, name),
            (provider.to_owned(), model.to_owned()),
            "{name}"
        );
    }
}

#[test]
fn bedrock_ids() {
    let t = builtin();
    let bedrock = Some("aws.bedrock");
    let cases = [
        (
            "anthropic.claude-3-5-sonnet-20241022-v2:0",
            "anthropic",
            "claude-3-5-sonnet",
        ),
        (
            "anthropic.claude-3-haiku-20240307-v1:0",
            "anthropic",
            "claude-3-haiku",
        ),
        (
            "us.anthropic.claude-3-7-sonnet-20250219-v1:0",
            "anthropic",
            "claude-3-7-sonnet",
        ),
        (
            "eu.anthropic.claude-sonnet-4-20250514-v1:0",
            "anthropic",
            "claude-sonnet-4",
        ),
        (
            "global.anthropic.claude-sonnet-4-5-20250929-v1:0",
            "anthropic",
            "claude-sonnet-4-5",
        ),
        (
            "meta.llama3-3-70b-instruct-v1:0",
            "aws.bedrock",
            "llama-3.3-70b",
        ),
        (
            "us.meta.llama4-scout-17b-instruct-v1:0",
            "aws.bedrock",
            "llama-4-scout",
        ),
        (
            "mistral.mistral-large-2407-v1:0",
            "mistral_ai",
            "mistral-large",
        ),
    ];
    for (name, provider, model) in cases {
        let want = (provider.to_owned(), model.to_owned());
        assert_eq!(matched(&t, bedrock, name), want, "{name}");
        // The id alone says Bedrock: the Bedrock Llama price wins without a provider too.
        assert_eq!(matched(&t, None, name), want, "{name} without provider");
    }
}

#[test]
fn vertex_versions() {
    let t = builtin();
    let vertex = Some("gcp.vertex_ai");
    assert_eq!(
        matched(&t, vertex, "claude-3-5-sonnet@20240620"),
        ("anthropic".to_owned(), "claude-3-5-sonnet".to_owned())
    );
    assert_eq!(
        matched(&t, vertex, "claude-3-5-sonnet-v2@20241022"),
        ("anthropic".to_owned(), "claude-3-5-sonnet".to_owned())
    );
    assert_eq!(model_of(&t, "claude-opus-4-1@20250805"), "claude-opus-4-1");
    assert_eq!(
        matched(&t, vertex, "gemini-2.5-flash"),
        ("gcp.gemini".to_owned(), "gemini-2.5-flash".to_owned())
    );
}

#[test]
fn dated_snapshots_and_release_suffixes() {
    let t = builtin();
    let cases = [
        ("gpt-4o-2024-08-06", "gpt-4o"),
        ("gpt-4o-2024-11-20", "gpt-4o"),
        ("gpt-4o-mini-2024-07-18", "gpt-4o-mini"),
        ("gpt-4.1-nano-2025-04-14", "gpt-4.1-nano"),
        ("o3-mini-2025-01-31", "o3-mini"),
        ("o1-2024-12-17", "o1"),
        ("gpt-5-mini-2025-08-07", "gpt-5-mini"),
        ("gpt-4-0613", "gpt-4"),
        ("gpt-3.5-turbo-0125", "gpt-3.5-turbo"),
        ("gpt-4-turbo-2024-04-09", "gpt-4-turbo"),
        ("gpt-4-turbo-preview", "gpt-4-turbo"),
        ("gpt-5-chat-latest", "gpt-5"),
        ("claude-3-5-haiku-20241022", "claude-3-5-haiku"),
        ("claude-3-5-haiku-latest", "claude-3-5-haiku"),
        ("claude-sonnet-4-5-20250929", "claude-sonnet-4-5"),
        ("claude-haiku-4-5-20251001", "claude-haiku-4-5"),
        ("claude-opus-4-1-20250805", "claude-opus-4-1"),
        ("gemini-1.5-pro-002", "gemini-1.5-pro"),
        ("gemini-2.0-flash-001", "gemini-2.0-flash"),
        ("gemini-2.0-flash-exp", "gemini-2.0-flash"),
        ("gemini-2.0-flash-lite-001", "gemini-2.0-flash-lite"),
        ("gemini-2.5-pro-preview-05-06", "gemini-2.5-pro"),
        ("gemini-2.5-flash-preview-09-2025", "gemini-2.5-flash"),
        (
            "gemini-2.5-flash-lite-preview-06-17",
            "gemini-2.5-flash-lite",
        ),
        ("mistral-large-latest", "mistral-large"),
        ("mistral-small-2503", "mistral-small"),
        ("codestral-2501", "codestral"),
        ("ministral-8b-2410", "ministral-8b"),
        ("grok-4-0709", "grok-4"),
        ("grok-3-latest", "grok-3"),
    ];
    for (name, model) in cases {
        assert_eq!(model_of(&t, name), model, "{name}");
    }
}

#[test]
fn aliases_from_the_table() {
    let t = builtin();
    assert_eq!(model_of(&t, "gpt-4-1106-preview"), "gpt-4-turbo");
    assert_eq!(model_of(&t, "gpt-35-turbo"), "gpt-3.5-turbo");
    assert_eq!(model_of(&t, "claude-opus-4-0"), "claude-opus-4");
    assert_eq!(model_of(&t, "gemini-flash-latest"), "gemini-2.5-flash");
    assert_eq!(
        matched(&t, None, "llama-3.3-70b-versatile"),
        ("groq".to_owned(), "llama-3.3-70b".to_owned())
    );
    assert_eq!(
        matched(&t, None, "llama-3.1-8b-instant"),
        ("groq".to_owned(), "llama-3.1-8b".to_owned())
    );
    assert_eq!(model_of(&t, "grok-4-fast-non-reasoning"), "grok-4-fast");
}

#[test]
fn no_over_stripping_in_the_builtin_table() {
    let t = builtin();
    for name in [
        "gpt-4o-mini",
        "o3-mini",
        "o1-mini",
        "o4-mini",
        "gpt-4.1-nano",
        "gpt-4.1-mini",
        "gpt-5-nano",
        "gpt-4o-2024-05-13",
        "gpt-3.5-turbo-1106",
        "mistral-small-2409",
        "gemini-2.0-flash-lite",
        "gemini-2.5-flash-lite",
        "gemini-1.5-flash-8b",
        "gpt-4-32k",
    ] {
        assert_eq!(model_of(&t, name), name);
    }
    // The dated first snapshot of gpt-4o keeps its own, higher price.
    assert_usd(
        t.cost(None, "gpt-4o-2024-05-13", &usage(1_000_000, 0))
            .unwrap(),
        5.0,
    );
    assert_usd(
        t.cost(None, "gpt-4o-2024-08-06", &usage(1_000_000, 0))
            .unwrap(),
        2.5,
    );
}

#[test]
fn no_over_stripping_when_the_smaller_model_is_missing() {
    // The traps hold even when the table lacks the specific model: an
    // unpriced call is honest, the larger model's price is not.
    let t = PriceTable::from_toml_str(
        r#"
        version = "test"
        [[models]]
        model = "gpt-4o"
        input_per_mtok = 2.5
        output_per_mtok = 10
        [[models]]
        model = "o3"
        input_per_mtok = 2
        output_per_mtok = 8
        [[models]]
        model = "gpt-4.1"
        input_per_mtok = 2
        output_per_mtok = 8
        "#,
    )
    .unwrap();
    for name in [
        "gpt-4o-mini",
        "gpt-4o-mini-2024-07-18",
        "o3-mini",
        "o3-mini-2025-01-31",
        "gpt-4.1-nano",
        "gpt-4o-audio-preview",
        "gpt-4o-realtime-preview-2024-12-17",
        "ft:gpt-4o-2024-08-06:acme::abc123",
    ] {
        assert_eq!(t.lookup(None, name), None, "{name} must stay unpriced");
    }
    assert!(t.lookup(None, "gpt-4o-2024-08-06").is_some());
}

#[test]
fn provider_chooses_among_hosts() {
    let t = builtin();
    let price = |provider, model| t.lookup(provider, model).unwrap().input_per_mtok;
    assert_eq!(price(Some("groq"), "llama-3.3-70b"), 0.59);
    assert_eq!(price(Some("together_ai"), "llama-3.3-70b"), 0.88);
    assert_eq!(price(Some("together"), "llama-3.3-70b"), 0.88);
    assert_eq!(price(Some("fireworks"), "llama-3.3-70b"), 0.90);
    assert_eq!(price(Some("aws.bedrock"), "llama-3.3-70b"), 0.72);
    // No provider, or one the table has no entry for: the first entry.
    assert_eq!(price(None, "llama-3.3-70b"), 0.88);
    assert_eq!(price(Some("my-vllm"), "llama-3.3-70b"), 0.88);
    // A host-specific id still answers to another host's provider.
    assert_eq!(price(Some("together_ai"), "llama-3.3-70b-versatile"), 0.88);
    // Groq serves Llama 4 as `meta-llama/…`: the span's provider wins over the default.
    assert_eq!(
        price(Some("groq"), "meta-llama/llama-4-scout-17b-16e-instruct"),
        0.11
    );
    assert_eq!(
        price(None, "meta-llama/llama-4-scout-17b-16e-instruct"),
        0.18
    );
}

#[test]
fn otel_provider_names_find_first_party_models() {
    let t = builtin();
    let cases = [
        (Some("openai"), "gpt-4o", "gpt-4o"),
        (Some("azure.ai.openai"), "gpt-4o-2024-08-06", "gpt-4o"),
        (Some("az.ai.openai"), "gpt-35-turbo", "gpt-3.5-turbo"),
        (
            Some("anthropic"),
            "claude-3-haiku-20240307",
            "claude-3-haiku",
        ),
        (Some("gcp.gemini"), "gemini-2.5-flash", "gemini-2.5-flash"),
        (
            Some("gcp.vertex_ai"),
            "gemini-2.5-flash",
            "gemini-2.5-flash",
        ),
        (Some("vertex_ai"), "gemini-1.5-pro-002", "gemini-1.5-pro"),
        (
            Some("gemini"),
            "models/gemini-2.0-flash",
            "gemini-2.0-flash",
        ),
        (Some("mistral_ai"), "mistral-small-latest", "mistral-small"),
        (Some("deepseek"), "deepseek-chat", "deepseek-chat"),
        (Some("x_ai"), "grok-3-mini", "grok-3-mini"),
        (Some("groq"), "llama-3.1-8b-instant", "llama-3.1-8b"),
        (None, "claude-3-7-sonnet-20250219", "claude-3-7-sonnet"),
        // A provider that never hosts the model does not hide it.
        (
            Some("openrouter"),
            "anthropic/claude-3.7-sonnet",
            "claude-3-7-sonnet",
        ),
    ];
    for (provider, name, model) in cases {
        assert_eq!(
            matched(&t, provider, name).1,
            model,
            "{name} via {provider:?}"
        );
    }
    assert_eq!(t.lookup(Some("openai"), "not-a-model"), None);
}

// ---------------------------------------------------------------- overrides

fn price_override(provider: Option<&str>, model: &str, input: f64, output: f64) -> PriceOverride {
    PriceOverride {
        provider: provider.map(str::to_owned),
        model: model.to_owned(),
        input_per_mtok: input,
        output_per_mtok: output,
        cache_read_per_mtok: None,
        cache_write_per_mtok: None,
    }
}

#[test]
fn override_replaces_a_price_and_marks_the_version() {
    let t = builtin()
        .with_overrides(&[price_override(None, "gpt-4o", 2.0, 8.0)])
        .unwrap();
    assert_eq!(t.version(), "2026-11-01+overrides");
    let p = t.lookup(Some("openai"), "gpt-4o").unwrap();
    assert_eq!(
        (p.input_per_mtok, p.output_per_mtok, p.cache_read_per_mtok),
        (2.0, 8.0, None)
    );
    // Snapshots and prefixed names follow the overridden entry.
    assert_usd(
        t.cost(
            None,
            "openai/gpt-4o-2024-08-06",
            &usage(1_000_000, 1_000_000),
        )
        .unwrap(),
        10.0,
    );
    // A snapshot with its own entry and other models are untouched.
    assert_eq!(
        t.lookup(None, "gpt-4o-2024-05-13").unwrap().input_per_mtok,
        5.0
    );
    assert_eq!(t.lookup(None, "gpt-4o-mini").unwrap().input_per_mtok, 0.15);
    assert_eq!(t.len(), builtin().len());
}

#[test]
fn override_adds_a_model() {
    let t = builtin()
        .with_overrides(&[PriceOverride {
            cache_read_per_mtok: Some(0.5),
            cache_write_per_mtok: Some(2.5),
            ..price_override(None, "Acme-Finetune-7B", 2.0, 8.0)
        }])
        .unwrap();
    let u = TokenUsage {
        input: 1_000,
        output: 500,
        cache_read: 400,
        cache_write: 0,
    };
    // 600 x $2 + 400 x $0.50 + 500 x $8.
    assert_usd(
        t.cost(Some("my-vllm"), "acme-finetune-7b", &u).unwrap(),
        0.0054,
    );
    assert_eq!(matched(&t, None, "ACME-FINETUNE-7B").1, "Acme-Finetune-7B");
    assert_eq!(t.len(), builtin().len() + 1);
}

#[test]
fn provider_specific_override_leaves_other_providers_alone() {
    let t = builtin()
        .with_overrides(&[price_override(Some("az.ai.openai"), "gpt-4o", 2.2, 8.8)])
        .unwrap();
    assert_eq!(
        t.lookup(Some("azure.ai.openai"), "gpt-4o")
            .unwrap()
            .input_per_mtok,
        2.2
    );
    assert_eq!(
        t.lookup(Some("azure.ai.openai"), "gpt-4o-2024-11-20")
            .unwrap()
            .input_per_mtok,
        2.2
    );
    assert_eq!(
        t.lookup(Some("openai"), "gpt-4o").unwrap().input_per_mtok,
        2.5
    );
    assert_eq!(t.lookup(None, "gpt-4o").unwrap().input_per_mtok, 2.5);
    // Azure models without an override still fall back to OpenAI's list price.
    assert_eq!(
        t.lookup(Some("azure.ai.openai"), "gpt-4o-mini")
            .unwrap()
            .input_per_mtok,
        0.15
    );
}

#[test]
fn provider_less_override_covers_every_host_and_specific_ones_win() {
    let overrides = [
        price_override(Some("groq"), "llama-3.3-70b", 0.5, 0.5),
        price_override(None, "llama-3.3-70b", 1.0, 1.0),
    ];
    let t = builtin().with_overrides(&overrides).unwrap();
    let input = |p, m| t.lookup(p, m).unwrap().input_per_mtok;
    assert_eq!(input(Some("groq"), "llama-3.3-70b"), 0.5);
    assert_eq!(input(Some("groq"), "llama-3.3-70b-versatile"), 0.5);
    assert_eq!(input(Some("together_ai"), "llama-3.3-70b"), 1.0);
    assert_eq!(
        input(Some("aws.bedrock"), "meta.llama3-3-70b-instruct-v1:0"),
        1.0
    );
    assert_eq!(input(None, "llama-3.3-70b"), 1.0);
    // Same result in the other order.
    let reversed = [overrides[1].clone(), overrides[0].clone()];
    let t2 = builtin().with_overrides(&reversed).unwrap();
    assert_eq!(
        t2.lookup(Some("groq"), "llama-3.3-70b")
            .unwrap()
            .input_per_mtok,
        0.5
    );
}

#[test]
fn override_of_an_alias_or_snapshot_prices_only_that_name() {
    let t = builtin()
        .with_overrides(&[
            price_override(None, "gpt-4-1106-preview", 7.0, 7.0),
            price_override(None, "gpt-4o-2024-08-06", 2.0, 2.0),
        ])
        .unwrap();
    assert_eq!(
        t.lookup(None, "gpt-4-1106-preview").unwrap().input_per_mtok,
        7.0
    );
    assert_eq!(t.lookup(None, "gpt-4-turbo").unwrap().input_per_mtok, 10.0);
    assert_eq!(
        t.lookup(None, "gpt-4o-2024-08-06").unwrap().input_per_mtok,
        2.0
    );
    assert_eq!(t.lookup(None, "gpt-4o").unwrap().input_per_mtok, 2.5);
}

#[test]
fn override_drops_the_tiers_it_replaces() {
    let t = builtin()
        .with_overrides(&[price_override(None, "claude-sonnet-4", 3.0, 15.0)])
        .unwrap();
    assert_usd(
        t.cost(None, "claude-sonnet-4", &usage(1_000_000, 0))
            .unwrap(),
        3.0,
    );
}

#[test]
fn no_overrides_keeps_the_version() {
    assert_eq!(
        builtin().with_overrides(&[]).unwrap().version(),
        "2026-11-01"
    );
}

#[test]
fn bad_overrides_name_the_model_and_field() {
    let err = builtin()
        .with_overrides(&[price_override(None, "gpt-4o", -1.0, 8.0)])
        .unwrap_err();
    assert!(matches!(err, PricingError::InvalidPrice { .. }), "{err:?}");
    assert_eq!(
        err.to_string(),
        "[[pricing.models]] entry 1: model `gpt-4o`: `input_per_mtok` is -1; prices are US dollars per million tokens and must be finite and not negative"
    );

    let nan = PriceOverride {
        cache_read_per_mtok: Some(f64::NAN),
        ..price_override(None, "acme", 1.0, 1.0)
    };
    let err = builtin()
        .with_overrides(&[price_override(None, "x", 1.0, 1.0), nan])
        .unwrap_err()
        .to_string();
    assert!(
        err.starts_with("[[pricing.models]] entry 2: model `acme`: `cache_read_per_mtok` is NaN"),
        "{err}"
    );

    let err = builtin()
        .with_overrides(&[price_override(None, "acme", 1.0, f64::INFINITY)])
        .unwrap_err()
        .to_string();
    assert!(err.contains("`output_per_mtok` is inf"), "{err}");

    let err = builtin()
        .with_overrides(&[price_override(None, " ", 1.0, 1.0)])
        .unwrap_err()
        .to_string();
    assert!(err.contains("`model` is empty"), "{err}");
}

#[test]
fn duplicate_overrides_are_refused() {
    let err = builtin()
        .with_overrides(&[
            price_override(Some("azure.ai.openai"), "gpt-4o", 1.0, 1.0),
            price_override(Some("az.ai.openai"), "GPT-4o", 2.0, 2.0),
        ])
        .unwrap_err();
    assert_eq!(
        err.to_string(),
        "[[pricing.models]] entry 2: model `GPT-4o` (provider `azure.ai.openai`) is listed twice; the first is at [[pricing.models]] entry 1"
    );
}

#[test]
fn override_config_rejects_unknown_fields() {
    #[derive(serde::Deserialize)]
    struct Wrapper {
        #[allow(dead_code)]
        models: Vec<PriceOverride>,
    }
    let ok: Wrapper =
        toml::from_str("[[models]]\nmodel = \"m\"\ninput_per_mtok = 1\noutput_per_mtok = 2\n")
            .unwrap();
    assert_eq!(ok.models.len(), 1);
    let err = toml::from_str::<Wrapper>(
        "[[models]]\nmodel = \"m\"\ninput_per_mtok = 1\noutput_per_mtok = 2\ncache_per_mtok = 1\n",
    )
    .err()
    .unwrap()
    .to_string();
    assert!(err.contains("cache_per_mtok"), "{err}");
}

// ---------------------------------------------------------------- bad tables

fn table_error(text: &str) -> PricingError {
    PriceTable::from_toml_str(text).unwrap_err()
}

const GOOD_ENTRY: &str = r#"
[[models]]
provider = "openai"
model = "gpt-4o"
input_per_mtok = 2.5
output_per_mtok = 10
"#;

#[test]
fn negative_price_is_refused_with_model_and_line() {
    let err = table_error(
        r#"version = "1"

[[models]]
provider = "acme"
model = "acme-1"
input_per_mtok = -0.5
output_per_mtok = 1
"#,
    );
    assert_eq!(
        err.to_string(),
        "price table line 3: model `acme-1`: `input_per_mtok` is -0.5; prices are US dollars per million tokens and must be finite and not negative"
    );
}

#[test]
fn bad_tier_price_names_the_tier() {
    let err = table_error(
        r#"version = "1"
[[models]]
model = "acme-1"
input_per_mtok = 1
output_per_mtok = 1
[[models.tiers]]
above_input_tokens = 1000
input_per_mtok = nan
output_per_mtok = 2
"#,
    )
    .to_string();
    assert!(
        err.contains("model `acme-1`: `tiers[0].input_per_mtok` is NaN"),
        "{err}"
    );
}

#[test]
fn unsorted_tiers_are_refused() {
    let err = table_error(
        r#"version = "1"
[[models]]
model = "acme-1"
input_per_mtok = 1
output_per_mtok = 1
[[models.tiers]]
above_input_tokens = 200000
input_per_mtok = 3
output_per_mtok = 3
[[models.tiers]]
above_input_tokens = 100000
input_per_mtok = 2
output_per_mtok = 2
"#,
    )
    .to_string();
    assert!(
        err.contains("model `acme-1`: `tiers[1].above_input_tokens` is 100000, not more than the tier before (200000)"),
        "{err}"
    );
}

#[test]
fn unknown_field_is_refused_with_model() {
    let err = table_error(
        r#"version = "1"
[[models]]
provider = "openai"
model = "gpt-4o"
input_per_mtok = 2.5
outptu_per_mtok = 10
"#,
    );
    assert!(matches!(err, PricingError::InvalidEntry { .. }), "{err:?}");
    let err = err.to_string();
    assert!(
        err.starts_with("price table line 2: model `gpt-4o`: unknown field `outptu_per_mtok`"),
        "{err}"
    );
}

#[test]
fn missing_price_is_refused_with_model() {
    let err =
        table_error("version = \"1\"\n[[models]]\nmodel = \"m\"\ninput_per_mtok = 1\n").to_string();
    assert!(
        err.contains("model `m`: missing field `output_per_mtok`"),
        "{err}"
    );
}

#[test]
fn duplicate_model_is_refused() {
    let text = format!("version = \"1\"\n{GOOD_ENTRY}{GOOD_ENTRY}");
    let err = table_error(&text);
    assert_eq!(
        err.to_string(),
        "price table line 9: model `gpt-4o` (provider `openai`) is listed twice; the first is at price table line 3"
    );
    // Case does not make a new model.
    let text = format!(
        "version = \"1\"\n{GOOD_ENTRY}{}",
        GOOD_ENTRY.replace("gpt-4o", "GPT-4O")
    );
    assert!(matches!(
        table_error(&text),
        PricingError::DuplicateModel { .. }
    ));
}

#[test]
fn same_model_for_two_providers_is_fine() {
    let text = format!(
        "version = \"1\"\n{GOOD_ENTRY}{}",
        GOOD_ENTRY.replace("\"openai\"", "\"azure.ai.openai\"")
    );
    assert_eq!(PriceTable::from_toml_str(&text).unwrap().len(), 2);
}

#[test]
fn alias_naming_another_model_is_refused() {
    let err = table_error(
        r#"version = "1"
[[models]]
provider = "openai"
model = "gpt-4o"
input_per_mtok = 2.5
output_per_mtok = 10
[[models]]
provider = "openai"
model = "gpt-4o-mini"
input_per_mtok = 0.15
output_per_mtok = 0.6
aliases = ["GPT-4o"]
"#,
    );
    assert_eq!(
        err.to_string(),
        "price table line 7: alias `gpt-4o` of model `gpt-4o-mini` (provider `openai`) already names model `gpt-4o` at price table line 2"
    );
}

#[test]
fn alias_repeating_its_own_name_is_refused() {
    let err = table_error(
        r#"version = "1"
[[models]]
model = "m"
input_per_mtok = 1
output_per_mtok = 1
aliases = ["m"]
"#,
    )
    .to_string();
    assert!(err.contains("model `m`: alias `m` repeats"), "{err}");
}

#[test]
fn table_shape_errors() {
    assert_eq!(table_error("version = \" \"\n"), PricingError::EmptyVersion);
    assert!(matches!(
        table_error("[[models]]\n"),
        PricingError::Syntax { .. }
    ));
    assert!(matches!(
        table_error("version = \"1\"\nextra = 1\n"),
        PricingError::Syntax { .. }
    ));
    assert!(matches!(
        table_error("version = "),
        PricingError::Syntax { .. }
    ));
    let err = table_error(
        "version = \"1\"\n[[models]]\nprovider = \"\"\nmodel = \"m\"\ninput_per_mtok = 1\noutput_per_mtok = 1\n",
    );
    assert!(err.to_string().contains("`provider` is empty"), "{err}");
    // An empty table is valid: every model is then unpriced.
    let empty = PriceTable::from_toml_str("version = \"empty\"\n").unwrap();
    assert!(empty.is_empty());
    assert_eq!(empty.cost(None, "gpt-4o", &usage(1, 1)), None);
}

// ---------------------------------------------------------------- properties

/// Prices with an optional tier that is never cheaper than the base, as
/// providers publish them.
fn any_price() -> impl Strategy<Value = ModelPrice> {
    let rate = 0.0..200.0f64;
    (
        (rate.clone(), rate.clone()),
        proptest::option::of(rate.clone()),
        proptest::option::of(rate.clone()),
        proptest::option::of((1u64..2_000_000, 0.0..2.0f64)),
    )
        .prop_map(|((input, output), read, write, tier)| ModelPrice {
            input_per_mtok: input,
            output_per_mtok: output,
            cache_read_per_mtok: read,
            cache_write_per_mtok: write,
            tiers: tier
                .map(|(above, extra)| PriceTier {
                    above_input_tokens: above,
                    input_per_mtok: input * (1.0 + extra),
                    output_per_mtok: output * (1.0 + extra),
                    cache_read_per_mtok: read.map(|r| r * (1.0 + extra)),
                    cache_write_per_mtok: write.map(|w| w * (1.0 + extra)),
                })
                .into_iter()
                .collect(),
        })
}

/// A builtin price or an arbitrary one.
fn some_price() -> impl Strategy<Value = ModelPrice> {
    let table: Vec<ModelPrice> = builtin().entries().map(|m| m.price.clone()).collect();
    prop_oneof![proptest::sample::select(table), any_price()]
}

const MAX_TOKENS: u64 = 10_000_000;

proptest! {
    #[test]
    fn cost_is_never_negative(
        price in some_price(),
        input in 0..MAX_TOKENS,
        output in 0..MAX_TOKENS,
        cache_read in 0..MAX_TOKENS,
        cache_write in 0..MAX_TOKENS,
    ) {
        let c = price.cost(&TokenUsage { input, output, cache_read, cache_write });
        prop_assert!(c.is_finite() && c >= 0.0, "{c}");
    }

    /// `input` contains the cached tokens, so "more cache reads" means more
    /// input too: the counts that can grow independently are uncached input,
    /// cache reads, cache writes and output. Growing any of them never lowers
    /// the cost, across tier thresholds included.
    #[test]
    fn cost_is_monotonic_in_each_token_count(
        price in some_price(),
        uncached in 0..MAX_TOKENS,
        cache_read in 0..MAX_TOKENS,
        cache_write in 0..MAX_TOKENS,
        output in 0..MAX_TOKENS,
        which in 0..4usize,
        extra in 1..MAX_TOKENS,
    ) {
        let usage_of = |[uncached, cache_read, cache_write, output]: [u64; 4]| TokenUsage {
            input: uncached + cache_read + cache_write,
            output,
            cache_read,
            cache_write,
        };
        let before = [uncached, cache_read, cache_write, output];
        let mut after = before;
        after[which] += extra;
        let (low, high) = (price.cost(&usage_of(before)), price.cost(&usage_of(after)));
        prop_assert!(high >= low, "{which}: {low} -> {high}");
    }

    /// The same with raw span counts: more input or output, cache fixed.
    #[test]
    fn cost_is_monotonic_in_raw_input_and_output(
        price in some_price(),
        input in 0..MAX_TOKENS,
        output in 0..MAX_TOKENS,
        cache_read in 0..MAX_TOKENS,
        cache_write in 0..MAX_TOKENS,
        extra in 1..MAX_TOKENS,
    ) {
        let base = TokenUsage { input, output, cache_read, cache_write };
        let c = price.cost(&base);
        let more_input = price.cost(&TokenUsage { input: input + extra, ..base });
        let more_output = price.cost(&TokenUsage { output: output + extra, ..base });
        prop_assert!(more_input >= c, "{c} -> {more_input}");
        prop_assert!(more_output >= c, "{c} -> {more_output}");
    }
}
