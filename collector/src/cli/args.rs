//! Command-line arguments.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

/// Tollgate: cost and usage control for AI agents' model calls.
#[derive(Debug, Parser)]
#[command(name = "tollgate", version, about)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the collector (OTLP receivers, store, query API).
    Serve(ServeArgs),
    /// Show usage and cost grouped by dimensions, from a running collector.
    Usage(UsageArgs),
    /// Send realistic GenAI spans to a collector over OTLP.
    Demo(DemoArgs),
    /// Configuration tools.
    #[command(subcommand)]
    Config(ConfigCommand),
    /// Show, enable or disable the inline gateway in a config file.
    #[command(subcommand)]
    Gateway(GatewayCommand),
    /// Create, list and revoke keys (through the admin API).
    #[command(subcommand)]
    Keys(KeysCommand),
}

#[derive(Debug, Subcommand)]
pub enum KeysCommand {
    /// Create a key; its secret is printed once.
    Create(KeysCreateArgs),
    /// List keys (never their secrets).
    List(AdminArgs),
    /// Revoke a key by id; it stops working at once.
    Revoke(KeysRevokeArgs),
    /// Print a new random secret for a `[[auth.keys]]` entry (no collector needed).
    Generate,
}

/// Where the admin API is and how to reach it.
#[derive(Debug, Args)]
pub struct AdminArgs {
    /// Base URL of the collector's API.
    #[arg(
        long,
        env = "TOLLGATE_API_URL",
        default_value = "http://127.0.0.1:7070"
    )]
    pub api: String,
    /// The admin token (admin.token) or an `admin` key.
    #[arg(long, env = "TOLLGATE_ADMIN_TOKEN", hide_env_values = true)]
    pub admin_token: Option<String>,
    /// A CA bundle (PEM) to trust for an `https://` API, on top of the public roots.
    #[arg(long, env = "TOLLGATE_CA_FILE")]
    pub ca_file: Option<PathBuf>,
    /// Print the API's JSON instead of a table.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct KeysCreateArgs {
    #[command(flatten)]
    pub admin: AdminArgs,
    /// What the key may do: ingest, gateway, read, admin (repeat or comma-separate).
    #[arg(long = "role", value_delimiter = ',', required = true)]
    pub roles: Vec<String>,
    /// A label, e.g. "search agents".
    #[arg(long)]
    pub name: Option<String>,
    /// The org the key acts for (its spans are counted there; it reads only there).
    #[arg(long)]
    pub org: Option<String>,
    /// The project within the org.
    #[arg(long)]
    pub project: Option<String>,
    /// The user (gateway keys: the `X-Tollgate-User` header cannot change it).
    #[arg(long)]
    pub user: Option<String>,
    /// The key stops working this long after it is made: 30d, 12h.
    #[arg(long)]
    pub expires_in: Option<String>,
    /// Gateway keys: globs of the models the key may use (repeatable).
    #[arg(long = "allowed-model")]
    pub allowed_models: Vec<String>,
}

#[derive(Debug, Args)]
pub struct KeysRevokeArgs {
    #[command(flatten)]
    pub admin: AdminArgs,
    /// The key's id (`key_...`).
    pub id: String,
}

#[derive(Debug, Subcommand)]
pub enum GatewayCommand {
    /// Whether the config enables the gateway, and whether it answers.
    Status(GatewayArgs),
    /// Set `gateway.enabled = true` (comments and layout kept); the file
    /// must stay valid. Restart `tollgate serve` to apply.
    Enable(GatewayArgs),
    /// Set `gateway.enabled = false`. Restart `tollgate serve` to apply.
    Disable(GatewayArgs),
}

#[derive(Debug, Args)]
pub struct GatewayArgs {
    /// Config file (TOML).
    #[arg(long, short, env = "TOLLGATE_CONFIG", default_value = "tollgate.toml")]
    pub config: PathBuf,
}

#[derive(Debug, Subcommand)]
pub enum ConfigCommand {
    /// Load and validate a config file (and the environment overrides) the
    /// way `serve` does, without starting anything; exit 2 with the error.
    Check(ConfigCheckArgs),
}

#[derive(Debug, Args)]
pub struct ConfigCheckArgs {
    /// Config file (TOML). Without one, the defaults and environment are checked.
    #[arg(long, short, env = "TOLLGATE_CONFIG")]
    pub config: Option<PathBuf>,
}

#[derive(Debug, Args)]
pub struct ServeArgs {
    /// Config file (TOML). Without one, defaults run a collector on the embedded store.
    #[arg(long, short, env = "TOLLGATE_CONFIG")]
    pub config: Option<PathBuf>,
    /// Also run the demo agent fleet against this collector.
    #[arg(long)]
    pub demo: bool,
}

#[derive(Debug, Args)]
pub struct UsageArgs {
    /// Dimensions to group by, comma-separated: org, project, app, environment,
    /// user, session, provider, model, route, error_type, operation, agent.
    #[arg(long, default_value = "project,model")]
    pub by: String,
    /// Time window back from now: 30m, 1h, 24h, 7d.
    #[arg(long, default_value = "24h")]
    pub since: String,
    /// Only calls with these values, e.g. `--filter project=search`.
    #[arg(long = "filter", value_name = "DIM=VALUE")]
    pub filters: Vec<String>,
    /// Print the API's JSON instead of a table.
    #[arg(long)]
    pub json: bool,
    /// Base URL of the collector's API.
    #[arg(
        long,
        env = "TOLLGATE_API_URL",
        default_value = "http://127.0.0.1:7070"
    )]
    pub api: String,
    /// A `read` key, when the collector requires keys.
    #[arg(long, env = "TOLLGATE_KEY", hide_env_values = true)]
    pub key: Option<String>,
    /// A CA bundle (PEM) to trust for an `https://` API, on top of the public roots.
    #[arg(long, env = "TOLLGATE_CA_FILE")]
    pub ca_file: Option<PathBuf>,
}

#[derive(Debug, Args)]
pub struct DemoArgs {
    /// OTLP endpoint of the collector (gRPC).
    #[arg(long, default_value = "http://127.0.0.1:4317")]
    pub endpoint: String,
    /// Calls to send in the first burst.
    #[arg(long, default_value_t = 300)]
    pub calls: usize,
    /// After the burst, keep sending this many calls per second (0 = stop).
    #[arg(long, default_value_t = 0.0)]
    pub rate: f64,
    /// Seed for the generator, for reproducible runs.
    #[arg(long, default_value_t = 7)]
    pub seed: u64,
}
