//! Identifiers and timestamps in the providers' formats. Ids derive from the
//! mock's per-instance request sequence so a fresh mock answers a scripted
//! run with the same ids every time (captured fixtures stay reproducible).

use std::time::{SystemTime, UNIX_EPOCH};

/// `x-request-id` (OpenAI) / `request-id` (Anthropic) header value.
pub(crate) fn request_id(sequence: u64) -> String {
    format!("req_mock{sequence:024x}")
}

/// OpenAI chat completion id.
pub(crate) fn chat_completion_id(sequence: u64) -> String {
    format!("chatcmpl-mock{sequence:016x}")
}

/// OpenAI tool call id.
pub(crate) fn tool_call_id(sequence: u64) -> String {
    format!("call_mock{sequence:016x}")
}

/// OpenAI Responses API response id.
pub(crate) fn response_id(sequence: u64) -> String {
    format!("resp_mock{sequence:016x}")
}

/// OpenAI Responses API output message item id.
pub(crate) fn response_message_id(sequence: u64) -> String {
    format!("msg_mock{sequence:016x}")
}

/// OpenAI Responses API function call item id (the call itself is named by
/// [`tool_call_id`], its `call_id`).
pub(crate) fn function_call_item_id(sequence: u64) -> String {
    format!("fc_mock{sequence:016x}")
}

/// OpenAI Responses API reasoning item id.
pub(crate) fn reasoning_item_id(sequence: u64) -> String {
    format!("rs_mock{sequence:016x}")
}

/// Anthropic message id.
pub(crate) fn message_id(sequence: u64) -> String {
    format!("msg_mock{sequence:016x}")
}

/// Anthropic tool use id.
pub(crate) fn tool_use_id(sequence: u64) -> String {
    format!("toolu_mock{sequence:016x}")
}

/// Seconds since the Unix epoch, OpenAI's `created`.
pub(crate) fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |elapsed| elapsed.as_secs())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_have_the_provider_prefixes() {
        assert_eq!(chat_completion_id(1), "chatcmpl-mock0000000000000001");
        assert_eq!(message_id(255), "msg_mock00000000000000ff");
        assert!(tool_call_id(2).starts_with("call_"));
        assert!(tool_use_id(2).starts_with("toolu_"));
        assert_eq!(response_id(1), "resp_mock0000000000000001");
        assert!(response_message_id(3).starts_with("msg_"));
        assert!(function_call_item_id(3).starts_with("fc_"));
        assert!(reasoning_item_id(3).starts_with("rs_"));
        assert_eq!(request_id(1).len(), "req_mock".len() + 24);
    }
}
