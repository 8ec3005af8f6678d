//! The `tollgate` command line: argument definitions and the client-side
//! commands (`usage`). `serve` and `demo` live in [`crate::server`] and
//! [`crate::demo`].

mod args;
mod gateway;
mod usage;

pub use args::{
    Cli, Command, ConfigCheckArgs, ConfigCommand, DemoArgs, GatewayArgs, GatewayCommand, ServeArgs,
    UsageArgs,
};
pub use gateway::{GatewayCliError, run_gateway};
pub use usage::{UsageError, run_usage};
