"""A pydantic-ai agent whose calls Tollgate can stop.

pydantic-ai's own instrumentation (`Agent.instrument_all()`) records each model
call as a GenAI span on the tracer provider `tollgate.init` set up;
`tollgate.scope` stamps the customer on it, and the collector counts it
against the budget of `tollgate.toml` beside this file. Once the project
passes it, the next turn raises `tollgate.Blocked` before any request
leaves.

    mock-provider --listen 127.0.0.1:8080 &              # or a real provider
    tollgate serve --config sdk-shim/python/examples/tollgate.toml &
    OPENAI_BASE_URL=http://127.0.0.1:8080/v1 python pydantic_ai_budget.py
"""

from __future__ import annotations

import openai
from _common import API_KEY, BASE_URL, MODEL, main, setup
from pydantic_ai import Agent
from pydantic_ai.models.openai import OpenAIChatModel
from pydantic_ai.providers.openai import OpenAIProvider

import tollgate

setup(app="pydantic-ai-support")
Agent.instrument_all()

client = tollgate.guard(openai.AsyncOpenAI(base_url=BASE_URL, api_key=API_KEY))
agent = Agent(
    OpenAIChatModel(MODEL, provider=OpenAIProvider(openai_client=client)),
    instructions="You answer customers' questions about their parcels in one sentence.",
)


def turn(question: str) -> str:
    return agent.run_sync(question).output


if __name__ == "__main__":
    main(turn)
