"""An OpenAI Agents SDK agent whose calls Tollgate can stop.

The agent is unchanged Agents SDK code; Tollgate adds three lines:
`tollgate.init`, `tollgate.guard` around the OpenAI client the agent uses,
and `tollgate.scope` around each turn. OpenInference's OpenAI
instrumentation records each model call as a span, which the collector
counts against the budget of `tollgate.toml` beside this file; once the
project passes it, the next turn raises `tollgate.Blocked` before any
request leaves.

    mock-provider --listen 127.0.0.1:8080 &              # or a real provider
    tollgate serve --config sdk-shim/python/examples/tollgate.toml &
    OPENAI_BASE_URL=http://127.0.0.1:8080/v1 python openai_agents_budget.py
"""

from __future__ import annotations

import openai
from _common import API_KEY, BASE_URL, MODEL, main, setup
from agents import Agent, OpenAIChatCompletionsModel, Runner, set_tracing_disabled
from openinference.instrumentation.openai import OpenAIInstrumentor

import tollgate

setup(app="agents-sdk-support")
OpenAIInstrumentor().instrument()
# The Agents SDK's own traces go to OpenAI's platform; spans go to Tollgate.
set_tracing_disabled(True)

client = tollgate.guard(openai.AsyncOpenAI(base_url=BASE_URL, api_key=API_KEY))
agent = Agent(
    name="support",
    instructions="You answer customers' questions about their parcels in one sentence.",
    model=OpenAIChatCompletionsModel(model=MODEL, openai_client=client),
)


def turn(question: str) -> str:
    return str(Runner.run_sync(agent, question).final_output)


if __name__ == "__main__":
    main(turn)
