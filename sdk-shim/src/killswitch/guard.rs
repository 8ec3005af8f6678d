//! The result of a call made through [`KillSwitch::guarded_call`](super::KillSwitch::guarded_call).

use super::state::Blocked;

/// Either the kill-switch refused the call (and the provider was never
/// contacted), or the call itself failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum GuardError<E> {
    /// The scope is blocked; the call was not made.
    #[error(transparent)]
    Blocked(#[from] Blocked),
    /// The call was made and returned this error.
    #[error(transparent)]
    Call(E),
}

impl<E> GuardError<E> {
    /// The refusal, when the kill-switch refused.
    pub fn blocked(&self) -> Option<&Blocked> {
        match self {
            Self::Blocked(b) => Some(b),
            Self::Call(_) => None,
        }
    }
}
