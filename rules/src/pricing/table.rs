//! The price table: parsing, validation, overrides and lookups.
//!
//! Lookups are per-span hot code. The exact model name is one hash lookup and
//! no allocation; only names that miss go through [`matcher::find`], which
//! tries a handful of cheaper spellings. The table is immutable after it is
//! built, so one `Arc<PriceTable>` serves every thread without locks.

use std::collections::{HashMap, HashSet};
use std::fmt;

use serde::Deserialize;

use super::error::{Location, PricingError};
use super::matcher;
use super::price::{ModelPrice, PriceTier, TokenUsage};

/// The table shipped with Tollgate (`rules/data/prices.toml`).
const BUILTIN_TABLE: &str = include_str!("../../data/prices.toml");

/// Appended to the version of a table with overrides, so rows priced by
/// negotiated rates can be told apart from rows priced by list prices.
const OVERRIDES_VERSION_SUFFIX: &str = "+overrides";

/// A price set in `tollgate.toml` under `[[pricing.models]]`, for negotiated
/// rates, self-hosted models or models the built-in table does not know yet.
///
/// ```toml
/// [[pricing.models]]
/// provider = "openai"          # optional
/// model = "gpt-4o"
/// input_per_mtok = 2.00
/// output_per_mtok = 8.00
/// cache_read_per_mtok = 1.00   # optional
/// ```
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PriceOverride {
    /// Only price calls to this provider (`openai`, `anthropic`, `gcp.gemini`,
    /// `azure.ai.openai`, `aws.bedrock`, `groq`, ... as spans report it).
    /// Without it, the price applies whichever provider served the call, and
    /// a provider-specific override of the same model wins over it.
    #[serde(default)]
    pub provider: Option<String>,
    /// The model, as the table names it (`gpt-4o`) or as your spans report it
    /// (`my-finetune`, an Azure deployment name). Overriding a name the
    /// table already has keeps its aliases and dated snapshots pointing at
    /// the new price; any other name is added as it is written (ignoring case).
    pub model: String,
    /// US dollars per million input (prompt) tokens that were not cached.
    pub input_per_mtok: f64,
    /// US dollars per million output tokens, reasoning tokens included.
    pub output_per_mtok: f64,
    /// US dollars per million input tokens read from a prompt cache;
    /// defaults to `input_per_mtok`.
    #[serde(default)]
    pub cache_read_per_mtok: Option<f64>,
    /// US dollars per million input tokens written to a prompt cache;
    /// defaults to `input_per_mtok`.
    #[serde(default)]
    pub cache_write_per_mtok: Option<f64>,
}

/// What a lookup matched: the entry's provider and canonical name, and its price.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct PriceMatch<'a> {
    /// The provider the entry's prices are for; `None` for a provider-less override.
    pub provider: Option<&'a str>,
    /// The canonical model name, as the table writes it.
    pub model: &'a str,
    pub price: &'a ModelPrice,
}

/// A versioned set of model prices and the index to find them by name.
///
/// Clone it to derive a table with overrides; share it behind an `Arc`.
#[derive(Clone)]
pub struct PriceTable {
    version: String,
    entries: Vec<Entry>,
    /// Every lower-case model name and alias, mapped to the entries it may
    /// mean: those that own the name (first in file order is the default when
    /// no provider decides), then those that list it as an alias, then the
    /// other providers' entries of the same models, so a provider hint can
    /// still pick them.
    index: HashMap<Box<str>, Box<[usize]>>,
}

#[derive(Debug, Clone)]
struct Entry {
    /// Canonical, lower-case provider name; `None` for provider-less overrides.
    provider: Option<Box<str>>,
    /// The canonical model name as written.
    model: Box<str>,
    /// `model`, lower case: the name this entry owns in the index.
    key: Box<str>,
    /// Other lower-case names of this model for this provider.
    aliases: Vec<Box<str>>,
    price: ModelPrice,
    at: Location,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawTable {
    version: String,
    #[serde(default)]
    models: Vec<toml::Spanned<toml::Table>>,
}

/// One `[[models]]` entry of a table file.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawModel {
    provider: Option<String>,
    model: String,
    input_per_mtok: f64,
    output_per_mtok: f64,
    cache_read_per_mtok: Option<f64>,
    cache_write_per_mtok: Option<f64>,
    #[serde(default)]
    aliases: Vec<String>,
    #[serde(default)]
    tiers: Vec<PriceTier>,
}

impl PriceTable {
    /// The table shipped with this build of Tollgate.
    pub fn builtin() -> Result<Self, PricingError> {
        Self::from_toml_str(BUILTIN_TABLE)
    }

    /// Parses a table in the format of `rules/data/prices.toml`: a top-level
    /// `version` and `[[models]]` entries.
    pub fn from_toml_str(text: &str) -> Result<Self, PricingError> {
        let raw: RawTable = toml::from_str(text).map_err(|e| PricingError::Syntax {
            message: e.to_string().trim_end().to_owned(),
        })?;
        let version = raw.version.trim();
        if version.is_empty() {
            return Err(PricingError::EmptyVersion);
        }
        let entries = raw
            .models
            .into_iter()
            .map(|spanned| {
                let at = Location::TableLine(line_of(text, spanned.span().start));
                parse_entry(spanned.into_inner(), at)
            })
            .collect::<Result<Vec<_>, _>>()?;
        let index = build_index(&entries)?;
        Ok(Self {
            version: version.to_owned(),
            entries,
            index,
        })
    }

    /// This table with `overrides` applied: an override of a model the table
    /// has replaces its price (for its provider, or for every provider when it
    /// names none); any other override adds an entry. Provider-specific
    /// overrides apply after provider-less ones, whatever their order.
    ///
    /// With at least one override the version becomes `<version>+overrides`.
    pub fn with_overrides(mut self, overrides: &[PriceOverride]) -> Result<Self, PricingError> {
        if overrides.is_empty() {
            return Ok(self);
        }
        let mut checked = Vec::with_capacity(overrides.len());
        let mut seen: HashMap<(Option<String>, String), Location> = HashMap::new();
        for (n, o) in overrides.iter().enumerate() {
            let at = Location::Override(u32::try_from(n + 1).unwrap_or(u32::MAX));
            let entry = Entry::new(
                o.provider.as_deref(),
                &o.model,
                &[],
                ModelPrice {
                    input_per_mtok: o.input_per_mtok,
                    output_per_mtok: o.output_per_mtok,
                    cache_read_per_mtok: o.cache_read_per_mtok,
                    cache_write_per_mtok: o.cache_write_per_mtok,
                    tiers: Vec::new(),
                },
                at,
            )?;
            let id = (
                entry.provider.as_deref().map(str::to_owned),
                entry.key.to_string(),
            );
            if let Some(&first) = seen.get(&id) {
                return Err(PricingError::DuplicateModel {
                    at,
                    first,
                    model: entry.model.into(),
                    provider: id.0,
                });
            }
            seen.insert(id, at);
            checked.push(entry);
        }
        checked.sort_by_key(|e| e.provider.is_some());
        for o in checked {
            self.apply_override(o);
        }
        self.index = build_index(&self.entries)?;
        self.version.push_str(OVERRIDES_VERSION_SUFFIX);
        Ok(self)
    }

    /// The table's version, e.g. `2026-11-01` or `2026-11-01+overrides`.
    pub fn version(&self) -> &str {
        &self.version
    }

    /// How many priced entries (model and provider pairs) the table holds.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether the table prices nothing.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Every entry, in table order, then overrides that added models.
    pub fn entries(&self) -> impl Iterator<Item = PriceMatch<'_>> {
        self.entries.iter().map(Entry::as_match)
    }

    /// The price of `model` as served by `provider`, or `None` when the table
    /// does not know the model.
    ///
    /// `provider` only chooses among entries of a model the name already
    /// found: a missing or unknown provider still finds the model.
    pub fn lookup(&self, provider: Option<&str>, model: &str) -> Option<&ModelPrice> {
        self.resolve(provider, model).map(|m| m.price)
    }

    /// Like [`lookup`](Self::lookup), and also says which entry matched.
    pub fn resolve(&self, provider: Option<&str>, model: &str) -> Option<PriceMatch<'_>> {
        let id = match self.index.get(model) {
            Some(ids) => self.pick(ids, provider, None),
            None => matcher::find(model, |name, path_hint| {
                let ids = self.index.get(name)?;
                self.pick(ids, provider, path_hint)
            }),
        }?;
        self.entries.get(id).map(Entry::as_match)
    }

    /// Cost of a call in US dollars; `None` when the model is unpriced,
    /// which callers must record as unknown, never as zero.
    pub fn cost(&self, provider: Option<&str>, model: &str, usage: &TokenUsage) -> Option<f64> {
        self.lookup(provider, model).map(|price| price.cost(usage))
    }

    /// Chooses among the entries a name may mean: the provider the span
    /// reported, then the first party it resells, then the provider the name
    /// itself carried, then the default.
    fn pick(
        &self,
        ids: &[usize],
        provider: Option<&str>,
        path_hint: Option<&str>,
    ) -> Option<usize> {
        if let [only] = ids {
            return Some(*only);
        }
        let explicit = provider.map(matcher::canonical_provider);
        let from_path = path_hint.map(matcher::canonical_provider);
        let hints = [
            explicit,
            explicit.and_then(matcher::price_list_fallback),
            from_path,
            from_path.and_then(matcher::price_list_fallback),
        ];
        hints
            .into_iter()
            .flatten()
            .find_map(|hint| {
                ids.iter().copied().find(|&id| {
                    self.entries
                        .get(id)
                        .and_then(|e| e.provider.as_deref())
                        .is_some_and(|p| p.eq_ignore_ascii_case(hint))
                })
            })
            .or_else(|| ids.first().copied())
    }

    fn apply_override(&mut self, o: Entry) {
        let covers = |e: &Entry| o.provider.is_none() || e.provider == o.provider;
        let mut replaced = false;
        for e in self.entries.iter_mut().filter(|e| covers(e)) {
            if e.key == o.key {
                e.price = o.price.clone();
                e.at = o.at;
                replaced = true;
            } else {
                // The override now owns this name: it must not stay an alias
                // of another model, or that model's price would still answer.
                e.aliases.retain(|alias| *alias != o.key);
            }
        }
        if !replaced {
            self.entries.push(o);
        }
    }
}

impl fmt::Debug for PriceTable {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PriceTable")
            .field("version", &self.version)
            .field("entries", &self.entries.len())
            .field("names", &self.index.len())
            .finish()
    }
}

impl Entry {
    /// Validates and normalises one entry, from a table file or an override.
    fn new(
        provider: Option<&str>,
        model: &str,
        aliases: &[String],
        price: ModelPrice,
        at: Location,
    ) -> Result<Self, PricingError> {
        let model = model.trim();
        let invalid = |message: String| PricingError::InvalidEntry {
            at,
            model: model.to_owned(),
            message,
        };
        if model.is_empty() {
            return Err(invalid("`model` is empty".to_owned()));
        }
        let provider = match provider.map(str::trim) {
            Some("") => {
                return Err(invalid(
                    "`provider` is empty; leave it out instead".to_owned(),
                ));
            }
            Some(p) => Some(matcher::canonical_provider(p).to_ascii_lowercase().into()),
            None => None,
        };
        let aliases = aliases
            .iter()
            .map(|alias| match alias.trim() {
                "" => Err(invalid("`aliases` has an empty name".to_owned())),
                alias => Ok(alias.to_ascii_lowercase().into()),
            })
            .collect::<Result<Vec<Box<str>>, _>>()?;
        validate_price(&price, model, at)?;
        Ok(Self {
            provider,
            model: model.into(),
            key: model.to_ascii_lowercase().into(),
            aliases,
            price,
            at,
        })
    }

    fn as_match(&self) -> PriceMatch<'_> {
        PriceMatch {
            provider: self.provider.as_deref(),
            model: &self.model,
            price: &self.price,
        }
    }
}

fn parse_entry(table: toml::Table, at: Location) -> Result<Entry, PricingError> {
    // Named before deserialising so that a bad field still says which model it is in.
    let model = table
        .get("model")
        .and_then(toml::Value::as_str)
        .unwrap_or("(no name)")
        .to_owned();
    let raw: RawModel =
        table
            .try_into()
            .map_err(|e: toml::de::Error| PricingError::InvalidEntry {
                at,
                model,
                message: e.message().trim_end().to_owned(),
            })?;
    Entry::new(
        raw.provider.as_deref(),
        &raw.model,
        &raw.aliases,
        ModelPrice {
            input_per_mtok: raw.input_per_mtok,
            output_per_mtok: raw.output_per_mtok,
            cache_read_per_mtok: raw.cache_read_per_mtok,
            cache_write_per_mtok: raw.cache_write_per_mtok,
            tiers: raw.tiers,
        },
        at,
    )
}

fn validate_price(price: &ModelPrice, model: &str, at: Location) -> Result<(), PricingError> {
    let check = |field: &str, value: Option<f64>| match value {
        Some(v) if !v.is_finite() || v < 0.0 => Err(PricingError::InvalidPrice {
            at,
            model: model.to_owned(),
            field: field.to_owned(),
            value: v,
        }),
        _ => Ok(()),
    };
    check("input_per_mtok", Some(price.input_per_mtok))?;
    check("output_per_mtok", Some(price.output_per_mtok))?;
    check("cache_read_per_mtok", price.cache_read_per_mtok)?;
    check("cache_write_per_mtok", price.cache_write_per_mtok)?;
    let mut previous: Option<u64> = None;
    for (i, tier) in price.tiers.iter().enumerate() {
        check(
            &format!("tiers[{i}].input_per_mtok"),
            Some(tier.input_per_mtok),
        )?;
        check(
            &format!("tiers[{i}].output_per_mtok"),
            Some(tier.output_per_mtok),
        )?;
        check(
            &format!("tiers[{i}].cache_read_per_mtok"),
            tier.cache_read_per_mtok,
        )?;
        check(
            &format!("tiers[{i}].cache_write_per_mtok"),
            tier.cache_write_per_mtok,
        )?;
        // Sorted tiers read like the provider's price page and make a
        // duplicated threshold visible as an error rather than a silent tie.
        if let Some(prev) = previous
            && tier.above_input_tokens <= prev
        {
            return Err(PricingError::InvalidEntry {
                at,
                model: model.to_owned(),
                message: format!(
                    "`tiers[{i}].above_input_tokens` is {}, not more than the tier before ({prev}); list tiers from the lowest threshold up",
                    tier.above_input_tokens
                ),
            });
        }
        previous = Some(tier.above_input_tokens);
    }
    Ok(())
}

/// Indexes every name of every entry and rejects names that would be ambiguous
/// for one provider.
fn build_index(entries: &[Entry]) -> Result<HashMap<Box<str>, Box<[usize]>>, PricingError> {
    let mut by_name: HashMap<&str, Vec<usize>> = HashMap::new();
    let mut by_key: HashMap<&str, Vec<usize>> = HashMap::new();
    for (id, e) in entries.iter().enumerate() {
        by_key.entry(&e.key).or_default().push(id);
        for name in std::iter::once(&e.key).chain(&e.aliases) {
            let ids = by_name.entry(name).or_default();
            if let Some(&other) = ids
                .iter()
                .find(|&&other| entries[other].provider == e.provider)
            {
                return Err(name_conflict(&entries[other], other == id, e, name));
            }
            ids.push(id);
        }
    }

    let mut index = HashMap::with_capacity(by_name.len());
    for (name, ids) in by_name {
        let (owners, aliased): (Vec<usize>, Vec<usize>) =
            ids.iter().partition(|&&id| &*entries[id].key == name);
        let mut candidates = owners;
        candidates.extend(aliased);
        let mut listed: HashSet<usize> = candidates.iter().copied().collect();
        for &id in &ids {
            for &same_model in by_key.get(&*entries[id].key).into_iter().flatten() {
                if listed.insert(same_model) {
                    candidates.push(same_model);
                }
            }
        }
        index.insert(name.into(), candidates.into_boxed_slice());
    }
    Ok(index)
}

fn name_conflict(first: &Entry, same_entry: bool, second: &Entry, name: &str) -> PricingError {
    if same_entry {
        return PricingError::InvalidEntry {
            at: second.at,
            model: second.model.to_string(),
            message: format!("alias `{name}` repeats the model name or another alias"),
        };
    }
    let provider = second.provider.as_deref().map(str::to_owned);
    if *first.key == *name && *second.key == *name {
        PricingError::DuplicateModel {
            at: second.at,
            first: first.at,
            model: second.model.to_string(),
            provider,
        }
    } else {
        PricingError::DuplicateName {
            at: second.at,
            first: first.at,
            name: name.to_owned(),
            model: second.model.to_string(),
            other: first.model.to_string(),
            provider,
        }
    }
}

/// 1-based line of a byte offset, for error messages.
fn line_of(text: &str, offset: usize) -> u32 {
    let newlines = text
        .get(..offset)
        .map_or(0, |before| before.bytes().filter(|&b| b == b'\n').count());
    u32::try_from(newlines).map_or(u32::MAX, |n| n.saturating_add(1))
}
