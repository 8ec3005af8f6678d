//! TLS (rustls, ring provider) for the collector's listeners and its
//! outbound clients.
//!
//! - `files`: reading PEM certificates, keys and CA bundles, with errors
//!   that name the config field and the file.
//! - `server`: the listeners' `ServerConfig`s (TLS 1.2 and 1.3, ALPN per
//!   listener, client certificates on the OTLP receivers when
//!   `tls.client_ca_file` is set) sharing one certificate that is swapped
//!   when its files change on disk.
//! - `outbound`: the extra roots of `tls.ca_file`, trusted by the webhook,
//!   ClickHouse and gateway clients on top of their usual roots.

mod files;
mod outbound;
mod server;

pub use files::TlsError;
pub use outbound::OutboundRoots;
pub use server::{ListenerRole, Reload, ServerTls, ServerTlsSettings, TlsSettings};
