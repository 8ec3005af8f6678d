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
pub use keys::{KeysError, run_keys};
pub use usage::{UsageError, run_usage};

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
