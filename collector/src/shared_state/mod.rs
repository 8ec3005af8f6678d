//! State shared by every instance of one deployment through the shared
//! ledger's Redis server (`[ledger] type = "redis"`), besides budgets: the
//! kill-switch (when there is no `[kafka]`, whose `<topic>.enforcement`
//! carries it then), virtual keys and their revocation, and rule overrides
//! and snoozes.
//!
//! - [`wire`]: one entry of the stream (origin, kind, JSON payload); a key
//!   travels as the admin log stores it (its hash, never its secret);
//! - [`stream`]: the Redis stream `{prefix}state`: appends on one
//!   connection, blocking reads on another, so neither waits on the other
//!   nor on the ledger's exchanges;
//! - [`log`]: [`SharingLog`], the admin log that also hands each stored
//!   key or override to the stream;
//! - [`sync`]: [`StateSync`], which replays the stream at start-up, then
//!   appends this instance's changes and applies the others' as they come.

pub mod log;
pub mod stream;
pub mod sync;
pub mod wire;

pub use log::SharingLog;
pub use stream::StateStream;
pub use sync::StateSync;
