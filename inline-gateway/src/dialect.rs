//! The wire dialects the gateway speaks, and the operations callers ask for.

use crate::config::ProviderKind;

/// A wire format: request and response shapes, SSE events, error envelopes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dialect {
    /// OpenAI chat completions and embeddings (also Azure, Gemini's
    /// OpenAI-compatible API and every OpenAI-compatible server).
    OpenAi,
    /// Anthropic messages.
    Anthropic,
    /// OpenAI's Responses API: its own request, answer and SSE event
    /// shapes, OpenAI's error envelope.
    Responses,
}

impl Dialect {
    /// The dialect of a provider's chat-style API (what it is sent unless
    /// the call is a Responses call and the provider serves that API).
    pub(crate) fn of(kind: ProviderKind) -> Self {
        match kind {
            ProviderKind::Anthropic => Dialect::Anthropic,
            ProviderKind::Openai
            | ProviderKind::Azure
            | ProviderKind::Gemini
            | ProviderKind::OpenaiCompatible => Dialect::OpenAi,
        }
    }

    /// The error envelope this dialect's SDKs read: the Responses API uses
    /// OpenAI's.
    pub(crate) fn envelope(self) -> Self {
        match self {
            Dialect::OpenAi | Dialect::Responses => Dialect::OpenAi,
            Dialect::Anthropic => Dialect::Anthropic,
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
    /// `POST /v1/responses`.
    Responses,
}

impl Operation {
    /// The dialect the caller speaks (and gets answers and errors in).
    pub(crate) fn dialect(self) -> Dialect {
        match self {
            Operation::Chat | Operation::Embeddings => Dialect::OpenAi,
            Operation::Messages => Dialect::Anthropic,
            Operation::Responses => Dialect::Responses,
        }
    }

    /// The GenAI operation name rows carry.
    pub(crate) fn genai_name(self) -> &'static str {
        match self {
            Operation::Chat | Operation::Messages | Operation::Responses => "chat",
            Operation::Embeddings => "embeddings",
        }
    }

    /// What an upstream whose chat-style API speaks `dialect` is asked
    /// for (`responses_api`: whether it also serves the Responses API);
    /// `None` when it cannot serve this operation (Anthropic has no
    /// embeddings). A Responses call goes to the Responses API where there
    /// is one, else to chat completions or messages, translated.
    pub(crate) fn upstream(self, dialect: Dialect, responses_api: bool) -> Option<UpstreamOp> {
        match (self, dialect) {
            (Operation::Responses, _) if responses_api => Some(UpstreamOp::Responses),
            (Operation::Responses, Dialect::OpenAi | Dialect::Responses) => Some(UpstreamOp::Chat),
            (Operation::Responses, Dialect::Anthropic) => Some(UpstreamOp::Messages),
            (Operation::Chat | Operation::Messages, Dialect::OpenAi | Dialect::Responses) => {
                Some(UpstreamOp::Chat)
            }
            (Operation::Chat | Operation::Messages, Dialect::Anthropic) => {
                Some(UpstreamOp::Messages)
            }
            (Operation::Embeddings, Dialect::OpenAi | Dialect::Responses) => {
                Some(UpstreamOp::Embeddings)
            }
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
    Responses,
}

impl UpstreamOp {
    /// The dialect this endpoint's bodies and streams are written in.
    pub(crate) fn dialect(self) -> Dialect {
        match self {
            UpstreamOp::Chat | UpstreamOp::Embeddings => Dialect::OpenAi,
            UpstreamOp::Messages => Dialect::Anthropic,
            UpstreamOp::Responses => Dialect::Responses,
        }
    }
}
