//! `tollgate gateway status|enable|disable`: flips `gateway.enabled` in the
//! config file without touching its comments or layout (`toml_edit`), and
//! refuses a flip that would leave the file invalid.

use std::path::Path;
use std::time::Duration;

use toml_edit::{DocumentMut, Item, Table, value};

use super::args::GatewayCommand;
use crate::config;

/// Why a gateway command failed (one line).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum GatewayCliError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("{path} is not TOML: {message}")]
    Parse { path: String, message: String },
    #[error("{path}: `[gateway]` is not a table")]
    NotATable { path: String },
    #[error("not changed: with gateway.enabled = {enabled} the config is invalid: {message}")]
    Invalid { enabled: bool, message: String },
    #[error("cannot write {path}: {source}")]
    Write {
        path: String,
        source: std::io::Error,
    },
}

fn read(path: &Path) -> Result<DocumentMut, GatewayCliError> {
    let shown = path.display().to_string();
    let text = std::fs::read_to_string(path).map_err(|source| GatewayCliError::Read {
        path: shown.clone(),
        source,
    })?;
    text.parse::<DocumentMut>()
        .map_err(|e| GatewayCliError::Parse {
            path: shown,
            message: e.to_string().lines().next().unwrap_or_default().to_owned(),
        })
}

/// The text of `doc` with `gateway.enabled` set.
fn with_enabled(
    doc: &mut DocumentMut,
    enabled: bool,
    path: &Path,
) -> Result<String, GatewayCliError> {
    let gateway = doc
        .entry("gateway")
        .or_insert_with(|| Item::Table(Table::new()));
    let Some(table) = gateway.as_table_like_mut() else {
        return Err(GatewayCliError::NotATable {
            path: path.display().to_string(),
        });
    };
    match table.get_mut("enabled") {
        // Replaced in place: the key keeps its comments, the value its spacing.
        Some(item) => {
            let decor = item.as_value().map(|v| v.decor().clone());
            *item = value(enabled);
            if let (Some(decor), Some(v)) = (decor, item.as_value_mut()) {
                *v.decor_mut() = decor;
            }
        }
        None => {
            table.insert("enabled", value(enabled));
        }
    }
    Ok(doc.to_string())
}

/// Runs a gateway command; returns what to print.
pub async fn run_gateway(command: &GatewayCommand) -> Result<String, GatewayCliError> {
    match command {
        GatewayCommand::Status(args) => status(&args.config).await,
        GatewayCommand::Enable(args) => flip(&args.config, true),
        GatewayCommand::Disable(args) => flip(&args.config, false),
    }
}

fn flip(path: &Path, enabled: bool) -> Result<String, GatewayCliError> {
    let mut doc = read(path)?;
    let before = doc
        .get("gateway")
        .and_then(|g| g.get("enabled"))
        .and_then(Item::as_bool)
        .unwrap_or(false);
    if before == enabled {
        return Ok(format!(
            "gateway already {} in {}",
            if enabled { "enabled" } else { "disabled" },
            path.display()
        ));
    }
    let text = with_enabled(&mut doc, enabled, path)?;
    // Check the result the way `serve` would load it, before replacing the file.
    let dir = path.parent().filter(|p| !p.as_os_str().is_empty());
    let candidate = tempfile_in(dir.unwrap_or(Path::new(".")), &text).map_err(|source| {
        GatewayCliError::Write {
            path: path.display().to_string(),
            source,
        }
    })?;
    if let Err(e) = config::load(Some(candidate.path())) {
        return Err(GatewayCliError::Invalid {
            enabled,
            message: e.to_string(),
        });
    }
    candidate
        .persist(path)
        .map_err(|e| GatewayCliError::Write {
            path: path.display().to_string(),
            source: e.error,
        })?;
    Ok(format!(
        "gateway {} in {}; restart `tollgate serve` to apply",
        if enabled { "enabled" } else { "disabled" },
        path.display()
    ))
}

fn tempfile_in(dir: &Path, text: &str) -> std::io::Result<tempfile::NamedTempFile> {
    use std::io::Write;
    let mut f = tempfile::Builder::new()
        .prefix(".tollgate-")
        .suffix(".toml")
        .tempfile_in(dir)?;
    f.write_all(text.as_bytes())?;
    f.flush()?;
    Ok(f)
}

async fn status(path: &Path) -> Result<String, GatewayCliError> {
    let loaded = config::load(Some(path));
    let c = match loaded {
        Ok(c) => c,
        Err(e) => {
            return Err(GatewayCliError::Invalid {
                enabled: read(path)?
                    .get("gateway")
                    .and_then(|g| g.get("enabled"))
                    .and_then(Item::as_bool)
                    .unwrap_or(false),
                message: e.to_string(),
            });
        }
    };
    if !c.gateway.enabled {
        return Ok(format!("gateway: disabled in {}", path.display()));
    }
    let listen = c.gateway.listen.clone();
    let answering = reqwest::Client::builder()
        .timeout(Duration::from_secs(2))
        .build()
        .ok();
    let up = match answering {
        Some(client) => client
            .get(format!("http://{listen}/v1/models"))
            .send()
            .await
            .is_ok(),
        None => false,
    };
    Ok(format!(
        "gateway: enabled in {} on {listen}, {} provider(s), {} route(s); {}",
        path.display(),
        c.gateway.providers.len(),
        c.gateway.routes.len(),
        if up {
            "answering"
        } else {
            "not answering (is `tollgate serve` running with this config?)"
        }
    ))
}
