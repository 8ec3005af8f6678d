//! Loading: file text -> `${VAR}` expansion -> TOML -> `TOLLGATE_` env overrides -> validation.

use std::path::Path;

use figment::Figment;
use figment::providers::{Env, Format, Toml};

use super::error::ConfigError;
use super::expand_env;
use super::raw::RawConfig;
use super::validate::Config;

/// Loads the configuration from `path` (if any) and the process environment.
///
/// Without a file the defaults run a complete collector on the embedded store.
/// `TOLLGATE_<SECTION>__<FIELD>` variables override the file, e.g.
/// `TOLLGATE_STORAGE__PATH=/var/lib/tollgate` or `TOLLGATE_GATEWAY__ENABLED=true`.
/// Every config key lives in a section, so a variable without `__`
/// (`TOLLGATE_CONFIG`, `TOLLGATE_API_URL`, a `TOLLGATE_ADMIN_TOKEN` that the
/// file expands as `${TOLLGATE_ADMIN_TOKEN}`) is never read as a config key.
pub fn load(path: Option<&Path>) -> Result<Config, ConfigError> {
    load_with_env(path, Env::prefixed("TOLLGATE_"))
}

pub(crate) fn load_with_env(path: Option<&Path>, env: Env) -> Result<Config, ConfigError> {
    let text = path
        .map(|path| {
            std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
                path: path.display().to_string(),
                source,
            })
        })
        .transpose()?;
    let mut config = from_text(text.as_deref(), path, env, |name| std::env::var(name).ok())?;
    config.source = path.map(Path::to_path_buf);
    Ok(config)
}

/// The file's `text` (read from `path`, which errors name) through
/// expansion with `lookup`, TOML, `env` overrides and validation.
pub(crate) fn from_text(
    text: Option<&str>,
    path: Option<&Path>,
    env: Env,
    lookup: impl Fn(&str) -> Option<String>,
) -> Result<Config, ConfigError> {
    let mut figment = Figment::new();
    if let Some(text) = text {
        let expanded = expand_env(text, lookup).map_err(|message| ConfigError::Expand {
            path: path.map_or_else(|| "config".to_owned(), |p| p.display().to_string()),
            message,
        })?;
        figment = figment.merge(Toml::string(&expanded));
    }
    figment = figment.merge(env.filter(|key| key.as_str().contains("__")).split("__"));
    let raw: RawConfig = figment
        .extract()
        .map_err(|e| ConfigError::Parse(one_line(&e, path)))?;
    raw.validate()
}

/// Figment's errors are multi-line and name its internal profile; users get
/// one line naming the field and where it came from.
fn one_line(err: &figment::Error, path: Option<&Path>) -> String {
    let mut parts = Vec::new();
    for e in err.clone() {
        let key = e.path.join(".");
        let origin = match &e.metadata {
            Some(m) if m.name.contains("environment") => "environment".to_owned(),
            _ => path.map_or_else(|| "config".to_owned(), |p| p.display().to_string()),
        };
        if key.is_empty() {
            parts.push(format!("{origin}: {}", e.kind));
        } else {
            parts.push(format!("{origin}: `{key}`: {}", e.kind));
        }
    }
    format!("invalid config: {}", parts.join("; "))
}

#[cfg(test)]
// figment's `Jail` closure signature is fixed by the crate.
#[allow(clippy::result_large_err)]
mod tests {
    use super::*;
    use crate::config::StorageConfig;
    use std::time::Duration;

    fn write(text: &str) -> tempfile::NamedTempFile {
        let f = tempfile::NamedTempFile::new().unwrap();
        std::fs::write(f.path(), text).unwrap();
        f
    }

    fn no_env() -> Env {
        Env::prefixed("TOLLGATE_TEST_NOTHING_")
    }

    #[test]
    fn defaults_run_without_a_file() {
        let c = load_with_env(None, no_env()).unwrap();
        assert_eq!(c.grpc_listen.port(), 4317);
        assert_eq!(c.http_listen.port(), 4318);
        assert_eq!(c.api_listen.port(), 7070);
        assert_eq!(c.grpc_max_message_bytes, 4 * 1024 * 1024);
        assert!(matches!(&c.storage, StorageConfig::Sqlite { dir, .. } if dir.ends_with("data")));
        assert!(!c.gateway.enabled);
        let StorageConfig::Sqlite { read, .. } = &c.storage else {
            panic!("{:?}", c.storage)
        };
        assert_eq!(read.readers, 4);
        assert_eq!(read.query_timeout, Duration::from_secs(10));
        assert_eq!(c.max_query_range, Duration::from_secs(400 * 86_400));
    }

    #[test]
    fn query_bounds_come_from_the_api_section_or_the_retention() {
        let f = write(
            "[api]
query_timeout = \"2s\"
max_query_range = \"30d\"
\
             [storage]
type = \"sqlite\"
readers = 2
",
        );
        let c = load_with_env(Some(f.path()), no_env()).unwrap();
        assert_eq!(c.max_query_range, Duration::from_secs(30 * 86_400));
        let StorageConfig::Sqlite { read, .. } = &c.storage else {
            panic!("{:?}", c.storage)
        };
        assert_eq!(
            (read.readers, read.query_timeout),
            (2, Duration::from_secs(2))
        );

        // Without a configured range, a ClickHouse store's retention is the range.
        let f = write(
            "[api]
query_timeout = \"3s\"
\
             [storage]
type = \"clickhouse\"
url = \"http://127.0.0.1:8123\"
retention_days = 90
",
        );
        let c = load_with_env(Some(f.path()), no_env()).unwrap();
        assert_eq!(c.max_query_range, Duration::from_secs(90 * 86_400));
        let StorageConfig::Clickhouse(ch) = &c.storage else {
            panic!("{:?}", c.storage)
        };
        assert_eq!(ch.query_timeout, Duration::from_secs(3));

        for (text, field) in [
            (
                "[api]
query_timeout = \"0s\"
",
                "api.query_timeout",
            ),
            (
                "[api]
max_query_range = \"0s\"
",
                "api.max_query_range",
            ),
            (
                "[storage]
type = \"sqlite\"
readers = 0
",
                "storage.readers",
            ),
            (
                "[storage]
type = \"sqlite\"
readers = 65
",
                "storage.readers",
            ),
        ] {
            let f = write(text);
            let err = load_with_env(Some(f.path()), no_env())
                .unwrap_err()
                .to_string();
            assert!(err.contains(field), "{text}: {err}");
        }
    }

    #[test]
    fn unknown_field_is_one_line_naming_it() {
        let f = write("[storage]\ntype = \"sqlite\"\npaht = \"/tmp\"\n");
        let err = load_with_env(Some(f.path()), no_env())
            .unwrap_err()
            .to_string();
        assert!(!err.contains('\n'), "{err}");
        assert!(err.contains("paht"), "{err}");
    }

    #[test]
    fn wrong_type_names_the_field() {
        let f = write("[pipeline]\nqueue_capacity_rows = \"lots\"\n");
        let err = load_with_env(Some(f.path()), no_env())
            .unwrap_err()
            .to_string();
        assert!(err.contains("pipeline.queue_capacity_rows"), "{err}");
    }

    #[test]
    fn env_overrides_the_file() {
        let f = write(
            "[api]\nlisten = \"127.0.0.1:9000\"\n\
             [[gateway.providers]]\nname = \"local\"\nkind = \"openai_compatible\"\n\
             base_url = \"http://127.0.0.1:11434/v1\"\n",
        );
        figment::Jail::expect_with(|jail| {
            jail.set_env("TGX_API__LISTEN", "127.0.0.1:9100");
            jail.set_env("TGX_GATEWAY__ENABLED", "true");
            let c = load_with_env(Some(f.path()), Env::prefixed("TGX_")).unwrap();
            assert_eq!(c.api_listen.port(), 9100);
            assert!(c.gateway.enabled);
            Ok(())
        });
    }

    #[test]
    fn the_gateway_runs_on_kafka_ingest_instances_only() {
        let config = |role: &str| {
            write(&format!(
                "[gateway]\nenabled = true\n\
                 [[gateway.providers]]\nname = \"local\"\nkind = \"openai_compatible\"\n\
                 base_url = \"http://127.0.0.1:11434/v1\"\n\
                 [kafka]\nbrokers = \"127.0.0.1:9092\"\nrole = \"{role}\"\n"
            ))
        };
        for role in ["ingest", "all"] {
            let f = config(role);
            let c = load_with_env(Some(f.path()), no_env()).unwrap();
            assert!(c.gateway.enabled && c.kafka.is_some_and(|k| k.ingests()));
        }
        let f = config("process");
        let err = load_with_env(Some(f.path()), no_env())
            .unwrap_err()
            .to_string();
        assert!(err.contains("gateway.enabled"), "{err}");
        assert!(err.contains("kafka.role = \"ingest\""), "{err}");
        assert_eq!(err.lines().count(), 1, "{err}");
    }

    #[test]
    fn prefixed_variables_without_a_section_are_not_config_keys() {
        figment::Jail::expect_with(|jail| {
            jail.set_env("TGX_CONFIG", "/etc/tollgate.toml");
            jail.set_env("TGX_ADMIN_TOKEN", "s3cret");
            jail.set_env("TGX_TEST_STRICT", "1");
            jail.set_env("TGX_ADMIN__TOKEN", "from-the-environment");
            let c = load_with_env(None, Env::prefixed("TGX_")).unwrap();
            let token = c.admin_token.as_ref().map(|t| t.expose());
            assert_eq!(token, Some("from-the-environment"));
            Ok(())
        });
    }

    #[test]
    fn unknown_section_from_the_environment_is_named() {
        figment::Jail::expect_with(|jail| {
            jail.set_env("TGX_API__LISTNE", "127.0.0.1:9000");
            let err = load_with_env(None, Env::prefixed("TGX_"))
                .unwrap_err()
                .to_string();
            assert!(
                err.contains("environment") && err.contains("listne"),
                "{err}"
            );
            Ok(())
        });
    }

    #[test]
    fn variables_expand_in_the_file() {
        figment::Jail::expect_with(|jail| {
            jail.set_env("TOLLGATE_TEST_DIR", "/srv/tg");
            let f = write("[storage]\ntype = \"sqlite\"\npath = \"${TOLLGATE_TEST_DIR}/rows\"\n");
            let c = load_with_env(Some(f.path()), no_env()).unwrap();
            assert!(
                matches!(&c.storage, StorageConfig::Sqlite { dir, .. } if dir == Path::new("/srv/tg/rows"))
            );
            Ok(())
        });
    }

    #[test]
    fn invalid_values_are_refused_with_the_field() {
        let f = write("[receivers.otlp]\ngrpc_listen = \"nowhere\"\n");
        let err = load_with_env(Some(f.path()), no_env())
            .unwrap_err()
            .to_string();
        assert!(err.contains("receivers.otlp.grpc_listen"), "{err}");
        let f = write("[pipeline]\nqueue_capacity_rows = 0\n");
        let err = load_with_env(Some(f.path()), no_env())
            .unwrap_err()
            .to_string();
        assert!(err.contains("pipeline.queue_capacity_rows"), "{err}");
        let f = write("[ledger]\nmax_counters = 10\n");
        let err = load_with_env(Some(f.path()), no_env())
            .unwrap_err()
            .to_string();
        assert!(err.contains("ledger.max_counters"), "{err}");
        let f = write(
            "[[pricing.models]]\nmodel = \"m\"\ninput_per_mtok = -1.0\noutput_per_mtok = 1.0\n",
        );
        let err = load_with_env(Some(f.path()), no_env())
            .unwrap_err()
            .to_string();
        assert!(err.contains("pricing"), "{err}");
    }

    #[test]
    fn a_shared_ledger_needs_its_server_and_says_what_is_wrong() {
        let cases = [
            (
                "[ledger]\ntype = \"redis\"\n",
                "ledger.redis",
                "needs [ledger.redis]",
            ),
            (
                "[ledger.redis]\nurl = \"redis://127.0.0.1:6379\"\n",
                "ledger.type",
                "set type = \"redis\"",
            ),
            (
                "[ledger]\ntype = \"redis\"\n[ledger.redis]\nurl = \"http://127.0.0.1:6379\"\n",
                "ledger.redis",
                "redis://",
            ),
            (
                "[ledger]\ntype = \"redis\"\nlease_ttl = \"10s\"\nsync_interval = \"5s\"\n[ledger.redis]\nurl = \"redis://h:1\"\n",
                "ledger.sync_interval",
                "quarter",
            ),
        ];
        for (text, field, says) in cases {
            let f = write(text);
            let err = load_with_env(Some(f.path()), no_env())
                .unwrap_err()
                .to_string();
            assert!(err.contains(field) && err.contains(says), "{text}: {err}");
        }
        let f = write(
            "[ledger]\ntype = \"redis\"\nlease_ttl = \"4s\"\n[ledger.redis]\nurl = \"redis://:s3cret-pass@127.0.0.1:6379\"\n",
        );
        let c = load_with_env(Some(f.path()), no_env()).unwrap();
        let shared = c.shared_ledger.expect("shared");
        assert_eq!(shared.policy.ttl_ms, 4_000);
        assert!(!format!("{shared:?}").contains("s3cret"));
    }
}

#[cfg(test)]
mod example_file {
    use super::*;

    /// The documented example must stay loadable, and equal to the defaults.
    #[test]
    fn example_config_loads_and_matches_the_defaults() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../tollgate.example.toml");
        let mut example =
            load_with_env(Some(&path), Env::prefixed("TOLLGATE_TEST_NOTHING_")).unwrap();
        example.source = None;
        let defaults = load_with_env(None, Env::prefixed("TOLLGATE_TEST_NOTHING_")).unwrap();
        assert_eq!(format!("{example:?}"), format!("{defaults:?}"));
    }
}
