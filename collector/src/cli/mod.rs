//! The `tollgate` command line: argument definitions and the client-side
//! commands (`usage`, `keys`). `serve` and `demo` live in the `server` and
//! `demo` modules.

mod args;
mod gateway;
mod keys;
mod usage;

pub use args::{
    AdminArgs, Cli, Command, ConfigCheckArgs, ConfigCommand, DemoArgs, GatewayArgs, GatewayCommand,
    KeysCommand, KeysCreateArgs, KeysRevokeArgs, ServeArgs, UsageArgs,
};
pub use gateway::{GatewayCliError, run_gateway};
pub use keys::run_keys;
pub use usage::run_usage;

/// The HTTP client of the CLI's commands: the public roots, plus `ca_file`.
fn http_client(ca_file: Option<&std::path::Path>) -> Result<reqwest::Client, String> {
    let mut builder = reqwest::Client::builder();
    if let Some(path) = ca_file {
        let pem = std::fs::read(path)
            .map_err(|e| format!("cannot read --ca-file {}: {e}", path.display()))?;
        let certs = reqwest::Certificate::from_pem_bundle(&pem)
            .map_err(|e| format!("--ca-file {}: not a PEM bundle: {e}", path.display()))?;
        for cert in certs {
            builder = builder.add_root_certificate(cert);
        }
    }
    builder
        .build()
        .map_err(|e| format!("cannot build the HTTP client: {e}"))
}

/// Sends `request` to the collector at `api`; its JSON answer, or why not
/// (unreachable, or refused with the collector's message).
async fn send(
    request: reqwest::RequestBuilder,
    api: &str,
) -> Result<serde_json::Value, ClientError> {
    let unreachable = |source| ClientError::Unreachable {
        api: api.to_owned(),
        source,
    };
    let response = request.send().await.map_err(unreachable)?;
    let status = response.status();
    let body: serde_json::Value = response.json().await.map_err(unreachable)?;
    if !status.is_success() {
        return Err(ClientError::Refused {
            status: status.as_u16(),
            message: body["message"]
                .as_str()
                .unwrap_or("unknown error")
                .to_owned(),
        });
    }
    Ok(body)
}

/// Why a command that asks a running collector (`usage`, `keys`) failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ClientError {
    #[error(
        "cannot reach the collector at {api}: {source} (is `tollgate serve` running? see --api)"
    )]
    Unreachable {
        api: String,
        #[source]
        source: reqwest::Error,
    },
    #[error("the collector answered {status}: {message}")]
    Refused { status: u16, message: String },
    #[error("bad filter `{0}`: write DIM=VALUE, e.g. project=search")]
    BadFilter(String),
    #[error("no admin token: pass --admin-token or set TOLLGATE_ADMIN_TOKEN")]
    NoToken,
    #[error("unknown role `{0}`: use ingest, gateway, read or admin")]
    BadRole(String),
    #[error("{0}")]
    Tls(String),
}
