//! Model-name and provider-name normalisation for price lookups.
//!
//! Spans name the same model many ways: `gpt-4o-2024-08-06`, `openai/gpt-4o`,
//! `us.anthropic.claude-3-5-sonnet-20241022-v2:0`, `claude-3-5-sonnet@20240620`,
//! `models/gemini-2.0-flash-001`. [`find`] turns one raw name into a short
//! sequence of spellings, most specific first, and stops at the first one
//! the table knows. Only *decorations* are removed (host paths, cloud id
//! syntax, snapshot dates, `-latest`/`-preview`/`-exp`, numeric revisions), never
//! words, so `gpt-4o-mini` can never become `gpt-4o`, nor `o3-mini` become
//! `o3`, whatever the table holds. Because a more specific spelling is tried
//! first, a dated snapshot with its own entry keeps its own price.
//!
//! Nothing here allocates except lower-casing a name that has upper-case
//! letters and re-spelling `claude-3.5-…` as `claude-3-5-…`.

use std::borrow::Cow;

/// Spellings of a provider (OpenTelemetry `gen_ai.provider.name`, the older
/// `gen_ai.system`, SDK and router prefixes) and the name the price table
/// uses for it. Anything else is compared as written, ignoring case.
const PROVIDER_SPELLINGS: &[(&str, &str)] = &[
    ("openai", "openai"),
    ("azure.ai.openai", "azure.ai.openai"),
    ("az.ai.openai", "azure.ai.openai"),
    ("azure.openai", "azure.ai.openai"),
    ("azure_openai", "azure.ai.openai"),
    ("azure", "azure.ai.openai"),
    ("anthropic", "anthropic"),
    ("gcp.gemini", "gcp.gemini"),
    ("gemini", "gcp.gemini"),
    ("google", "gcp.gemini"),
    ("googleai", "gcp.gemini"),
    ("google_genai", "gcp.gemini"),
    ("gcp.vertex_ai", "gcp.vertex_ai"),
    ("vertex_ai", "gcp.vertex_ai"),
    ("vertexai", "gcp.vertex_ai"),
    ("vertex", "gcp.vertex_ai"),
    ("gcp.gen_ai", "gcp.gen_ai"),
    ("aws.bedrock", "aws.bedrock"),
    ("bedrock", "aws.bedrock"),
    ("aws_bedrock", "aws.bedrock"),
    ("mistral_ai", "mistral_ai"),
    ("mistral", "mistral_ai"),
    ("mistralai", "mistral_ai"),
    ("groq", "groq"),
    ("together_ai", "together_ai"),
    ("together", "together_ai"),
    ("togetherai", "together_ai"),
    ("fireworks", "fireworks"),
    ("fireworks_ai", "fireworks"),
    ("fireworksai", "fireworks"),
    ("deepseek", "deepseek"),
    ("x_ai", "x_ai"),
    ("xai", "x_ai"),
    ("x-ai", "x_ai"),
    ("grok", "x_ai"),
];

/// Hosts that resell a first party's models at that party's list prices:
/// when the table has no entry for the host itself, the first party's entry
/// is the right price rather than merely the default one.
const PRICE_LIST_FALLBACK: &[(&str, &str)] = &[
    ("azure.ai.openai", "openai"),
    ("gcp.vertex_ai", "gcp.gemini"),
    ("gcp.gen_ai", "gcp.gemini"),
];

/// Bedrock cross-region inference profiles put a geography before the vendor.
const BEDROCK_REGION_PREFIXES: &[&str] = &[
    "us.", "us-gov.", "eu.", "apac.", "jp.", "au.", "ca.", "global.",
];

/// Bedrock model ids start with the vendor: `anthropic.claude-…`, `meta.llama3-…`.
const BEDROCK_VENDOR_PREFIXES: &[&str] = &[
    "anthropic.",
    "meta.",
    "mistral.",
    "amazon.",
    "cohere.",
    "ai21.",
    "deepseek.",
    "openai.",
    "qwen.",
    "writer.",
];

/// The price table's name for a provider spelling, or the spelling itself.
pub(super) fn canonical_provider(provider: &str) -> &str {
    PROVIDER_SPELLINGS
        .iter()
        .find(|(spelling, _)| spelling.eq_ignore_ascii_case(provider))
        .map_or(provider, |&(_, canonical)| canonical)
}

/// The first party whose list prices a host charges, if the host is a reseller.
pub(super) fn price_list_fallback(canonical: &str) -> Option<&'static str> {
    PRICE_LIST_FALLBACK
        .iter()
        .find(|(host, _)| host.eq_ignore_ascii_case(canonical))
        .map(|&(_, first_party)| first_party)
}

fn is_known_provider(segment: &str) -> bool {
    PROVIDER_SPELLINGS
        .iter()
        .any(|(spelling, _)| spelling.eq_ignore_ascii_case(segment))
}

/// Tries the normalised spellings of `model`, most specific first, and
/// returns the first `probe` answer.
///
/// `probe` gets a lower-case candidate name and, when the raw name itself
/// says where the call went (`openai/…`, a Bedrock id, a Vertex `@version`),
/// that provider as a hint. The exact raw name is the caller's job: it is
/// the allocation-free hot path and is not repeated here.
pub(super) fn find<T>(
    model: &str,
    mut probe: impl FnMut(&str, Option<&str>) -> Option<T>,
) -> Option<T> {
    let lowered: Cow<'_, str> = if model.bytes().any(|b| b.is_ascii_uppercase()) {
        Cow::Owned(model.to_ascii_lowercase())
    } else {
        Cow::Borrowed(model)
    };
    let mut name: &str = lowered.trim();
    if name.is_empty() {
        return None;
    }
    if name != model
        && let Some(found) = probe(name, None)
    {
        return Some(found);
    }

    // Router, SDK and resource paths: `openai/gpt-4o`, `models/gemini-2.0-flash`,
    // `accounts/fireworks/models/…`, `projects/…/publishers/google/models/…`.
    let mut host_hint: Option<&str> = None;
    if let Some((path, last)) = name.rsplit_once('/') {
        host_hint = path.split('/').find(|segment| is_known_provider(segment));
        name = last;
        if name.is_empty() {
            return None;
        }
        if let Some(found) = probe(name, host_hint) {
            return Some(found);
        }
    }

    // Cloud id syntax: Vertex `claude-3-5-sonnet-v2@20241022`, Bedrock
    // `us.anthropic.claude-3-5-sonnet-20241022-v2:0`.
    let cloud_base = if let Some((base, _version)) = name.split_once('@') {
        host_hint = host_hint.or(Some("gcp.vertex_ai"));
        Some(strip_version_tag(base))
    } else if let Some(base) = strip_bedrock_id(name) {
        host_hint = host_hint.or(Some("aws.bedrock"));
        Some(base)
    } else {
        None
    };
    if let Some(base) = cloud_base {
        name = base;
        if let Some(found) = probe(name, host_hint) {
            return Some(found);
        }
    }

    // OpenRouter and others write Claude versions with dots (`claude-3.5-sonnet`,
    // `claude-opus-4.1`); Anthropic's own ids use dashes.
    let dashed: String;
    if name.starts_with("claude") && name.contains('.') {
        dashed = name.replace('.', "-");
        name = &dashed;
        if let Some(found) = probe(name, host_hint) {
            return Some(found);
        }
    }

    while let Some(shorter) = strip_snapshot_suffix(name) {
        name = shorter;
        if let Some(found) = probe(name, host_hint) {
            return Some(found);
        }
    }
    None
}

/// `anthropic.claude-3-haiku-20240307-v1:0:200k` → `claude-3-haiku-20240307`,
/// with or without a cross-region prefix; `None` if `name` is not a Bedrock id.
fn strip_bedrock_id(name: &str) -> Option<&str> {
    let without_region = BEDROCK_REGION_PREFIXES
        .iter()
        .find_map(|region| name.strip_prefix(region))
        .filter(|rest| strip_vendor(rest).is_some())
        .unwrap_or(name);
    let id = strip_vendor(without_region)?;
    let id = id.split(':').next().unwrap_or(id);
    let id = strip_version_tag(id);
    (!id.is_empty()).then_some(id)
}

fn strip_vendor(id: &str) -> Option<&str> {
    BEDROCK_VENDOR_PREFIXES
        .iter()
        .find_map(|vendor| id.strip_prefix(vendor))
}

/// Drops a trailing `-v2`-style revision. Only used on cloud ids, where it is
/// a packaging revision; elsewhere (`deepseek-v3`) it names a model.
fn strip_version_tag(name: &str) -> &str {
    match name.rsplit_once('-') {
        Some((head, tag))
            if !head.is_empty()
                && tag.len() > 1
                && tag.starts_with('v')
                && tag.bytes().skip(1).all(|b| b.is_ascii_digit()) =>
        {
            head
        }
        _ => name,
    }
}

/// Removes one snapshot decoration from the end of a lower-case name:
/// `-latest`, `-preview`, `-exp`, a date (`-2024-08-06`, `-20241022`,
/// `-05-06`, `-09-2025`), a four-digit `MMDD`/`YYMM` stamp (`-0613`, `-2411`)
/// or a three-digit revision (`-001`). One- and two-digit groups and any
/// word are kept: they name models (`gpt-4`, `claude-sonnet-4-5`, `-mini`).
pub(super) fn strip_snapshot_suffix(name: &str) -> Option<&str> {
    let head = strip_word(name)
        .or_else(|| strip_date(name))
        .or_else(|| split_digits(name, 4).map(|(head, _)| head))
        .or_else(|| split_digits(name, 3).map(|(head, _)| head))?;
    (!head.is_empty() && !head.ends_with('-')).then_some(head)
}

fn strip_word(name: &str) -> Option<&str> {
    ["-latest", "-preview", "-exp"]
        .iter()
        .find_map(|word| name.strip_suffix(word))
}

fn strip_date(name: &str) -> Option<&str> {
    let year = |y: u32| (2000..=2099).contains(&y);
    let month = |m: u32| (1..=12).contains(&m);
    let day = |d: u32| (1..=31).contains(&d);

    // -YYYY-MM-DD
    let ymd = split_digits(name, 2)
        .filter(|&(_, d)| day(d))
        .and_then(|(h, _)| split_digits(h, 2).filter(|&(_, m)| month(m)))
        .and_then(|(h, _)| split_digits(h, 4).filter(|&(_, y)| year(y)));
    // -MM-YYYY (Gemini: `-preview-09-2025`)
    let my = || {
        split_digits(name, 4)
            .filter(|&(_, y)| year(y))
            .and_then(|(h, _)| split_digits(h, 2).filter(|&(_, m)| month(m)))
    };
    // -MM-DD (Gemini: `-preview-05-06`, `-exp-01-21`)
    let md = || {
        split_digits(name, 2)
            .filter(|&(_, d)| day(d))
            .and_then(|(h, _)| split_digits(h, 2).filter(|&(_, m)| month(m)))
    };
    // -YYYYMMDD (Anthropic)
    let compact = || split_digits(name, 8).filter(|&(_, v)| year(v / 10_000));
    ymd.or_else(my)
        .or_else(md)
        .or_else(compact)
        .map(|(head, _)| head)
}

/// Splits `name` into the part before a final `-` and exactly `len` ASCII
/// digits after it, with their value.
fn split_digits(name: &str, len: usize) -> Option<(&str, u32)> {
    let cut = name.len().checked_sub(len + 1)?;
    let head = name.get(..cut)?;
    let digits = name.get(cut..)?.strip_prefix('-')?;
    if digits.len() != len || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    Some((head, digits.parse().ok()?))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every spelling `find` tries for `model`, in order, with its hint.
    fn spellings(model: &str) -> Vec<(String, Option<String>)> {
        let mut seen = Vec::new();
        let none: Option<()> = find(model, |name, hint| {
            seen.push((name.to_owned(), hint.map(str::to_owned)));
            None
        });
        assert!(none.is_none());
        seen
    }

    fn names(model: &str) -> Vec<String> {
        spellings(model).into_iter().map(|(n, _)| n).collect()
    }

    #[test]
    fn snapshot_suffixes_are_stripped_one_at_a_time() {
        let cases = [
            ("gpt-4o-2024-08-06", Some("gpt-4o")),
            ("gpt-4o-mini-2024-07-18", Some("gpt-4o-mini")),
            ("claude-3-5-haiku-20241022", Some("claude-3-5-haiku")),
            ("claude-3-5-sonnet-latest", Some("claude-3-5-sonnet")),
            ("gemini-2.0-flash-001", Some("gemini-2.0-flash")),
            ("gemini-2.0-flash-exp", Some("gemini-2.0-flash")),
            (
                "gemini-2.5-pro-preview-05-06",
                Some("gemini-2.5-pro-preview"),
            ),
            ("gemini-2.5-pro-preview", Some("gemini-2.5-pro")),
            (
                "gemini-2.5-flash-preview-09-2025",
                Some("gemini-2.5-flash-preview"),
            ),
            ("gpt-4-0613", Some("gpt-4")),
            ("gpt-3.5-turbo-0125", Some("gpt-3.5-turbo")),
            ("mistral-large-2411", Some("mistral-large")),
            ("grok-4-0709", Some("grok-4")),
        ];
        for (name, want) in cases {
            assert_eq!(strip_snapshot_suffix(name), want, "{name}");
        }
    }

    #[test]
    fn words_and_short_numbers_are_never_stripped() {
        for name in [
            "gpt-4o",
            "gpt-4o-mini",
            "o3-mini",
            "gpt-4.1-nano",
            "gpt-4",
            "claude-sonnet-4-5",
            "claude-opus-4-1",
            "llama-3.1-8b",
            "deepseek-v3",
            "gpt-4o-audio",
            "-latest",
            "",
        ] {
            assert_eq!(strip_snapshot_suffix(name), None, "{name}");
        }
    }

    #[test]
    fn implausible_dates_are_not_dates() {
        // Not a month/day pair: 13-40 is kept whole.
        assert_eq!(strip_snapshot_suffix("model-13-40"), None);
        // Not a year: `-01-01` reads as month-day, but `-1999-01-01` is no date.
        assert_eq!(
            strip_snapshot_suffix("model-1999-01-01"),
            Some("model-1999")
        );
    }

    #[test]
    fn tries_case_folded_then_path_then_suffixes() {
        assert_eq!(
            names("OpenAI/GPT-4o-2024-08-06"),
            ["openai/gpt-4o-2024-08-06", "gpt-4o-2024-08-06", "gpt-4o"]
        );
        // Already lower case: the caller probed the raw name itself.
        assert_eq!(names("gpt-4o-2024-08-06"), ["gpt-4o"]);
        assert_eq!(names("gpt-4o-mini"), Vec::<String>::new());
    }

    #[test]
    fn paths_give_a_provider_hint_when_they_name_one() {
        let s = spellings("openai/gpt-4o");
        assert_eq!(s, [("gpt-4o".to_owned(), Some("openai".to_owned()))]);
        let s = spellings("meta-llama/llama-3.3-70b-instruct-turbo");
        assert_eq!(s.first().map(|(_, h)| h.clone()), Some(None));
        let s = spellings("accounts/fireworks/models/llama-v3p1-70b-instruct");
        assert_eq!(
            s.first(),
            Some(&(
                "llama-v3p1-70b-instruct".to_owned(),
                Some("fireworks".to_owned())
            ))
        );
        let s = spellings(
            "projects/p/locations/us-central1/publishers/google/models/gemini-1.5-pro-002",
        );
        assert_eq!(
            s.first(),
            Some(&("gemini-1.5-pro-002".to_owned(), Some("google".to_owned())))
        );
    }

    #[test]
    fn bedrock_ids() {
        assert_eq!(
            names("anthropic.claude-3-5-sonnet-20241022-v2:0"),
            ["claude-3-5-sonnet-20241022", "claude-3-5-sonnet"]
        );
        assert_eq!(
            names("us.anthropic.claude-3-7-sonnet-20250219-v1:0"),
            ["claude-3-7-sonnet-20250219", "claude-3-7-sonnet"]
        );
        assert_eq!(
            names("anthropic.claude-3-haiku-20240307-v1:0:200k"),
            ["claude-3-haiku-20240307", "claude-3-haiku"]
        );
        assert_eq!(
            names("meta.llama3-3-70b-instruct-v1:0"),
            ["llama3-3-70b-instruct"]
        );
        let s = spellings("eu.anthropic.claude-sonnet-4-20250514-v1:0");
        assert_eq!(
            s.last().and_then(|(_, h)| h.clone()).as_deref(),
            Some("aws.bedrock")
        );
        // A region prefix alone is not a Bedrock id.
        assert_eq!(strip_bedrock_id("us.something"), None);
    }

    #[test]
    fn vertex_versions() {
        assert_eq!(names("claude-3-5-sonnet@20240620"), ["claude-3-5-sonnet"]);
        assert_eq!(
            names("claude-3-5-sonnet-v2@20241022"),
            ["claude-3-5-sonnet"]
        );
        let s = spellings("claude-opus-4-1@20250805");
        assert_eq!(
            s,
            [(
                "claude-opus-4-1".to_owned(),
                Some("gcp.vertex_ai".to_owned())
            )]
        );
    }

    #[test]
    fn claude_dots_become_dashes() {
        assert_eq!(
            names("anthropic/claude-3.5-sonnet"),
            ["claude-3.5-sonnet", "claude-3-5-sonnet"]
        );
        // Only Claude: OpenAI and Gemini versions keep their dots.
        assert_eq!(names("openai/gpt-4.1"), ["gpt-4.1"]);
    }

    #[test]
    fn version_tags_only_go_in_cloud_ids() {
        assert_eq!(
            strip_version_tag("claude-3-5-sonnet-v2"),
            "claude-3-5-sonnet"
        );
        assert_eq!(strip_version_tag("model-v"), "model-v");
        assert_eq!(names("deepseek-v3"), Vec::<String>::new());
    }

    #[test]
    fn provider_spellings() {
        assert_eq!(canonical_provider("openai"), "openai");
        assert_eq!(canonical_provider("OpenAI"), "openai");
        assert_eq!(canonical_provider("az.ai.openai"), "azure.ai.openai");
        assert_eq!(canonical_provider("vertex_ai"), "gcp.vertex_ai");
        assert_eq!(canonical_provider("gemini"), "gcp.gemini");
        assert_eq!(canonical_provider("mistral_ai"), "mistral_ai");
        assert_eq!(canonical_provider("x-ai"), "x_ai");
        assert_eq!(canonical_provider("my-vllm"), "my-vllm");
        assert_eq!(price_list_fallback("azure.ai.openai"), Some("openai"));
        assert_eq!(price_list_fallback("gcp.vertex_ai"), Some("gcp.gemini"));
        assert_eq!(price_list_fallback("groq"), None);
    }

    #[test]
    fn blank_names_find_nothing() {
        assert!(names("").is_empty());
        assert!(names("   ").is_empty());
        assert!(names("openai/").is_empty());
    }
}
