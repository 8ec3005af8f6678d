"""Small agents the tests run: the official clients, guarded, pointed at
the mock provider (through its counting proxy)."""

from __future__ import annotations

import anthropic
import openai

import tollgate

MODEL = "gpt-4o-mini"
CLAUDE = "claude-haiku-4-5"
MESSAGES = [{"role": "user", "content": "What is the capital of France?"}]


def openai_client(provider_url: str) -> openai.OpenAI:
    return tollgate.guard(openai.OpenAI(api_key="sk-test-openai", base_url=f"{provider_url}/v1", max_retries=0))


def async_openai_client(provider_url: str) -> openai.AsyncOpenAI:
    return tollgate.guard(openai.AsyncOpenAI(api_key="sk-test-openai", base_url=f"{provider_url}/v1", max_retries=0))


def anthropic_client(provider_url: str) -> anthropic.Anthropic:
    return tollgate.guard(anthropic.Anthropic(api_key="sk-ant-test", base_url=provider_url, max_retries=0))


def async_anthropic_client(provider_url: str) -> anthropic.AsyncAnthropic:
    return tollgate.guard(anthropic.AsyncAnthropic(api_key="sk-ant-test", base_url=provider_url, max_retries=0))


def chat(client: openai.OpenAI, stream: bool = False) -> str:
    if stream:
        parts = []
        for chunk in client.chat.completions.create(
            model=MODEL, messages=MESSAGES, max_tokens=16, stream=True, stream_options={"include_usage": True}
        ):
            if chunk.choices and chunk.choices[0].delta.content:
                parts.append(chunk.choices[0].delta.content)
        return "".join(parts)
    answer = client.chat.completions.create(model=MODEL, messages=MESSAGES, max_tokens=16)
    return answer.choices[0].message.content or ""


async def achat(client: openai.AsyncOpenAI, stream: bool = False) -> str:
    if stream:
        parts = []
        async for chunk in await client.chat.completions.create(
            model=MODEL, messages=MESSAGES, max_tokens=16, stream=True, stream_options={"include_usage": True}
        ):
            if chunk.choices and chunk.choices[0].delta.content:
                parts.append(chunk.choices[0].delta.content)
        return "".join(parts)
    answer = await client.chat.completions.create(model=MODEL, messages=MESSAGES, max_tokens=16)
    return answer.choices[0].message.content or ""


def message(client: anthropic.Anthropic, stream: bool = False) -> str:
    if stream:
        with client.messages.stream(model=CLAUDE, max_tokens=16, messages=MESSAGES) as s:
            return s.get_final_message().content[0].text
    answer = client.messages.create(model=CLAUDE, max_tokens=16, messages=MESSAGES)
    return answer.content[0].text


async def amessage(client: anthropic.AsyncAnthropic, stream: bool = False) -> str:
    if stream:
        async with client.messages.stream(model=CLAUDE, max_tokens=16, messages=MESSAGES) as s:
            return (await s.get_final_message()).content[0].text
    answer = await client.messages.create(model=CLAUDE, max_tokens=16, messages=MESSAGES)
    return answer.content[0].text
