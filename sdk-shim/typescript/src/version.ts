//! The package's version, sent in the `user-agent` of its requests to the collector.

export const VERSION = "0.1.0";
