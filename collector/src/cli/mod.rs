//! The `tollgate` command line: argument definitions and the client-side
//! commands (`usage`). `serve` and `demo` live in [`crate::server`] and
//! [`crate::demo`].

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
