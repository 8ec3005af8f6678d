"""Calls the Tollgate gateway with the unmodified official `openai` and
`anthropic` Python SDKs, changing only their base URL and API key.

    sdk_calls.py GATEWAY_URL VIRTUAL_KEY
    (or TOLLGATE_GATEWAY_URL / TOLLGATE_GATEWAY_KEY in the environment)

Prints one JSON line per call with what the SDK itself parsed: the gateway's
request id (to find the call's row), model, ids, finish reasons, tool calls
and usage. tests/e2e_python_sdk.rs compares those lines with the rows. Any
SDK exception (or an answer missing what the call asked for) ends the run
with a traceback and a non-zero status.
"""

import json
import os
import sys

import anthropic
import openai

CHAT_MODEL = "gpt-4o-mini"
EMBEDDING_MODEL = "text-embedding-3-small"
MESSAGES_MODEL = "claude-3-5-haiku-20241022"
PROMPT = "Say hello to the Python SDK test."

WEATHER_FUNCTION = {
    "name": "get_weather",
    "description": "The current weather in a city.",
    "parameters": {
        "type": "object",
        "properties": {
            "city": {"type": "string"},
            "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]},
        },
        "required": ["city"],
    },
}


def emit(call, **fields):
    print(json.dumps({"call": call, **fields}), flush=True)


def openai_usage(usage):
    if usage is None:
        return None
    return {
        "input": usage.prompt_tokens,
        "output": getattr(usage, "completion_tokens", 0) or 0,
        "total": usage.total_tokens,
    }


def anthropic_usage(usage):
    return {"input": usage.input_tokens, "output": usage.output_tokens}


def require(condition, what):
    if not condition:
        raise AssertionError(what)


def chat_json(client):
    completion = client.chat.completions.create(
        model=CHAT_MODEL,
        max_tokens=40,
        messages=[{"role": "user", "content": PROMPT}],
    )
    choice = completion.choices[0]
    require(choice.message.content, "chat_json: no content")
    emit(
        "chat_json",
        request_id=completion._request_id,
        model=completion.model,
        id=completion.id,
        finish_reason=choice.finish_reason,
        usage=openai_usage(completion.usage),
    )


def chat_stream(client, include_usage):
    kwargs = {"stream_options": {"include_usage": True}} if include_usage else {}
    stream = client.chat.completions.create(
        model=CHAT_MODEL,
        max_tokens=40,
        stream=True,
        messages=[{"role": "user", "content": PROMPT}],
        **kwargs,
    )
    text, ids, finish_reason, usage, usage_chunks, chunks = "", set(), None, None, 0, 0
    with stream:
        for chunk in stream:
            chunks += 1
            ids.add(chunk.id)
            if chunk.usage is not None:
                usage_chunks += 1
                usage = chunk.usage
            for choice in chunk.choices:
                text += choice.delta.content or ""
                finish_reason = choice.finish_reason or finish_reason
    require(text, "chat_stream: no text")
    emit(
        "chat_stream_usage" if include_usage else "chat_stream",
        request_id=stream.response.headers.get("x-request-id"),
        ids=sorted(ids),
        chunks=chunks,
        text_chars=len(text),
        finish_reason=finish_reason,
        usage_chunks=usage_chunks,
        usage=openai_usage(usage),
    )


def embeddings(client):
    result = client.embeddings.create(
        model=EMBEDDING_MODEL, input=["the first text", "and a second one"]
    )
    require(len(result.data) == 2, "embeddings: not two vectors")
    require(len(result.data[0].embedding) > 0, "embeddings: an empty vector")
    emit(
        "embeddings",
        request_id=result._request_id,
        model=result.model,
        vectors=len(result.data),
        dimensions=len(result.data[0].embedding),
        usage=openai_usage(result.usage),
    )


def chat_tools(client):
    completion = client.chat.completions.create(
        model=CHAT_MODEL,
        max_tokens=60,
        messages=[{"role": "user", "content": "What is the weather in Paris?"}],
        tools=[{"type": "function", "function": WEATHER_FUNCTION}],
    )
    choice = completion.choices[0]
    calls = choice.message.tool_calls or []
    require(calls, "chat_tools: no tool_calls")
    for call in calls:
        json.loads(call.function.arguments)  # the SDK leaves arguments as JSON text
    emit(
        "chat_tools",
        request_id=completion._request_id,
        id=completion.id,
        finish_reason=choice.finish_reason,
        tool_calls=[
            {"id": c.id, "name": c.function.name, "arguments": json.loads(c.function.arguments)}
            for c in calls
        ],
        usage=openai_usage(completion.usage),
    )


def messages_json(client):
    message = client.messages.create(
        model=MESSAGES_MODEL,
        max_tokens=40,
        system="You are terse.",
        messages=[{"role": "user", "content": PROMPT}],
    )
    text = "".join(b.text for b in message.content if b.type == "text")
    require(text, "messages_json: no text")
    emit(
        "messages_json",
        request_id=message._request_id,
        model=message.model,
        id=message.id,
        finish_reason=message.stop_reason,
        usage=anthropic_usage(message.usage),
    )


def messages_stream(client):
    events = 0
    with client.messages.stream(
        model=MESSAGES_MODEL,
        max_tokens=40,
        messages=[{"role": "user", "content": PROMPT}],
    ) as stream:
        for _event in stream:
            events += 1
        message = stream.get_final_message()
        request_id = stream.response.headers.get("request-id")
    text = "".join(b.text for b in message.content if b.type == "text")
    require(text, "messages_stream: no text")
    emit(
        "messages_stream",
        request_id=request_id,
        model=message.model,
        id=message.id,
        events=events,
        finish_reason=message.stop_reason,
        usage=anthropic_usage(message.usage),
    )


def messages_tools(client):
    message = client.messages.create(
        model=MESSAGES_MODEL,
        max_tokens=60,
        messages=[{"role": "user", "content": "What is the weather in Paris?"}],
        tools=[
            {
                "name": WEATHER_FUNCTION["name"],
                "description": WEATHER_FUNCTION["description"],
                "input_schema": WEATHER_FUNCTION["parameters"],
            }
        ],
    )
    uses = [b for b in message.content if b.type == "tool_use"]
    require(uses, "messages_tools: no tool_use block")
    emit(
        "messages_tools",
        request_id=message._request_id,
        id=message.id,
        finish_reason=message.stop_reason,
        tool_calls=[{"id": u.id, "name": u.name, "arguments": u.input} for u in uses],
        usage=anthropic_usage(message.usage),
    )


def main():
    args = sys.argv[1:]
    gateway = args[0] if args else os.environ.get("TOLLGATE_GATEWAY_URL")
    key = args[1] if len(args) > 1 else os.environ.get("TOLLGATE_GATEWAY_KEY")
    if not gateway or not key:
        sys.exit("usage: sdk_calls.py GATEWAY_URL VIRTUAL_KEY")
    gateway = gateway.rstrip("/")
    # No retries: a failure must show, not be papered over by a second try.
    oa = openai.OpenAI(base_url=gateway + "/v1", api_key=key, max_retries=0, timeout=30)
    an = anthropic.Anthropic(base_url=gateway, api_key=key, max_retries=0, timeout=30)
    emit("versions", openai=openai.__version__, anthropic=anthropic.__version__)
    chat_json(oa)
    chat_stream(oa, include_usage=False)
    chat_stream(oa, include_usage=True)
    embeddings(oa)
    chat_tools(oa)
    messages_json(an)
    messages_stream(an)
    messages_tools(an)


if __name__ == "__main__":
    main()
