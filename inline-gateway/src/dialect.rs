//! The two wire dialects the gateway speaks, and the operations callers ask for.

use crate::config::ProviderKind;

/// A wire format: request and response shapes, SSE events, error envelopes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dialect {
    /// OpenAI chat completions and embeddings (also Azure, Gemini's
    /// OpenAI-compatible API and every OpenAI-compatible server).
    OpenAi,
    /// Anthropic messages.
    Anthropic,
}

impl Dialect {
    pub(crate) fn of(kind: ProviderKind) -> Self {
        match kind {
            ProviderKind::Anthropic => Dialect::Anthropic,
            ProviderKind::Openai
            | ProviderKind::Azure
            | ProviderKind::Gemini
            | ProviderKind::OpenaiCompatible => Dialect::OpenAi,
        }
    }
}

/// What the caller asked for, by endpoint.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Operation {
    /// `POST /v1/chat/completions`.
    Chat,
    /// `POST /v1/embeddings`.
    Embeddings,
    /// `POST /v1/messages`.
    Messages,
}

impl Operation {
    /// The dialect the caller speaks (and gets answers and errors in).
    pub(crate) fn dialect(self) -> Dialect {
        match self {
            Operation::Chat | Operation::Embeddings => Dialect::OpenAi,
            Operation::Messages => Dialect::Anthropic,
        }
    }

    /// The GenAI operation name rows carry.
    pub(crate) fn genai_name(self) -> &'static str {
        match self {
            Operation::Chat | Operation::Messages => "chat",
            Operation::Embeddings => "embeddings",
        }
    }

    /// What an upstream of `dialect` is asked for; `None` when it cannot
    /// serve this operation (Anthropic has no embeddings).
    pub(crate) fn upstream(self, dialect: Dialect) -> Option<UpstreamOp> {
        match (self, dialect) {
            (Operation::Chat | Operation::Messages, Dialect::OpenAi) => Some(UpstreamOp::Chat),
            (Operation::Chat | Operation::Messages, Dialect::Anthropic) => {
                Some(UpstreamOp::Messages)
            }
            (Operation::Embeddings, Dialect::OpenAi) => Some(UpstreamOp::Embeddings),
            (Operation::Embeddings, Dialect::Anthropic) => None,
        }
    }
}

/// An endpoint of an upstream provider.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum UpstreamOp {
    Chat,
    Embeddings,
    Messages,
}
