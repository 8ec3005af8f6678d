"""The mock provider's deterministic usage rule, mirrored from
tests/mock-provider/src/usage.rs so the manifest can state what the mock
returned for each call without trusting the instrumentation under test.
The capture run cross-checks these numbers against what the SDKs parsed.
"""

import math
from typing import Any, Optional

DEFAULT_OUTPUT_TOKENS = 20


def input_tokens(chars: int, token_ids: int = 0) -> int:
    return max(1, math.ceil(chars / 4) + token_ids)


def _content_chars(content: Any) -> int:
    if isinstance(content, str):
        return len(content)
    total = 0
    if isinstance(content, list):
        for part in content:
            if isinstance(part, dict):
                if isinstance(part.get("text"), str):
                    total += len(part["text"])
                if part.get("type") == "tool_result":
                    total += _content_chars(part.get("content"))
    return total


def text_input_tokens(api: str, request: dict) -> int:
    if api == "openai_chat":
        chars = sum(_content_chars(m.get("content")) for m in request.get("messages", []))
        return input_tokens(chars)
    if api == "anthropic_messages":
        chars = _content_chars(request.get("system"))
        chars += sum(_content_chars(m.get("content")) for m in request.get("messages", []))
        return input_tokens(chars)
    if api == "openai_responses":
        chars = _content_chars(request.get("instructions"))
        items = request.get("input")
        if isinstance(items, str):
            chars += len(items)
        for item in items if isinstance(items, list) else []:
            kind = item.get("type", "message")
            if kind == "message":
                chars += _content_chars(item.get("content"))
            elif kind in ("function_call_output", "custom_tool_call_output"):
                chars += _content_chars(item.get("output"))
        return input_tokens(chars)
    if api == "openai_embeddings":
        chars, ids = 0, 0
        inputs = request["input"]
        items = [inputs] if isinstance(inputs, (str, int)) else inputs
        for item in items:
            if isinstance(item, str):
                chars += len(item)
            elif isinstance(item, int):
                ids += 1
            else:
                ids += len(item)
        return input_tokens(chars, ids)
    raise ValueError(api)


def expected_usage(api: str, request: dict, headers: Optional[dict] = None) -> dict:
    """Provider-neutral counts plus the provider's wire usage object."""
    headers = {k.lower(): v for k, v in (headers or {}).items()}
    text = text_input_tokens(api, request)
    if api == "openai_embeddings":
        return {
            "text_input_tokens": text,
            "cache_read_tokens": 0,
            "cache_write_tokens": 0,
            "output_tokens": 0,
            "reasoning_tokens": 0,
            "total_input_tokens": text,
            "truncated": False,
            "wire": {"prompt_tokens": text, "total_tokens": text},
        }
    read = int(headers.get("x-mock-cache-read-tokens", 0))
    write = int(headers.get("x-mock-cache-write-tokens", 0))
    reasoning = int(headers.get("x-mock-reasoning-tokens", 0))
    if "x-mock-output-tokens" in headers:
        output, truncated = int(headers["x-mock-output-tokens"]), False
    else:
        if api == "openai_responses":
            max_tokens = request.get("max_output_tokens")
        else:
            max_tokens = request.get("max_completion_tokens", request.get("max_tokens"))
        if max_tokens is not None and max_tokens < DEFAULT_OUTPUT_TOKENS:
            output, truncated = max_tokens, True
        else:
            output, truncated = DEFAULT_OUTPUT_TOKENS, False
    usage = {
        "text_input_tokens": text,
        "cache_read_tokens": read,
        "cache_write_tokens": write,
        "output_tokens": output + reasoning,
        "reasoning_tokens": reasoning,
        "total_input_tokens": text + read + write,
        "truncated": truncated,
    }
    if api == "openai_chat":
        usage["wire"] = {
            "prompt_tokens": text + read + write,
            "completion_tokens": output + reasoning,
            "total_tokens": text + read + write + output + reasoning,
            "prompt_tokens_details.cached_tokens": read,
            "completion_tokens_details.reasoning_tokens": reasoning,
        }
    elif api == "openai_responses":
        usage["wire"] = {
            "input_tokens": text + read + write,
            "output_tokens": output + reasoning,
            "total_tokens": text + read + write + output + reasoning,
            "input_tokens_details.cached_tokens": read,
            "input_tokens_details.cache_write_tokens": write,
            "output_tokens_details.reasoning_tokens": reasoning,
        }
    else:
        usage["wire"] = {
            "input_tokens": text,
            "output_tokens": output + reasoning,
            "cache_read_input_tokens": read,
            "cache_creation_input_tokens": write,
        }
    return usage
