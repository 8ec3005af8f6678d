"""The example agents (OpenAI Agents SDK, pydantic-ai) run against the
real collector with the examples' budget and the mock provider: each is
stopped by the budget without its refused call reaching the provider, and
runs again once the block is lifted."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any, Dict, List

import pytest
from servers import Collector, CountingProxy

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"
RULE = "example-daily-tokens"
LIMIT = 300


def run(example: str, c: Collector, provider: CountingProxy, project: str, turns: int = 40) -> List[Dict[str, Any]]:
    """The example's JSON lines; it must exit 0 (stopped by the budget) or,
    when it ran all its turns, 1."""
    env = dict(
        os.environ,
        OPENAI_BASE_URL=f"{provider.url}/v1",
        OPENAI_API_KEY="sk-test-openai",
        OTEL_EXPORTER_OTLP_ENDPOINT=c.otlp_http or "",
        TOLLGATE_API_URL=c.api or "",
        TOLLGATE_PROJECT=project,
        TOLLGATE_GATEWAY="off",
        EXAMPLE_MAX_TURNS=str(turns),
    )
    out = subprocess.run(
        [sys.executable, example], cwd=EXAMPLES, env=env, capture_output=True, text=True, timeout=180
    )
    lines = [json.loads(line) for line in out.stdout.splitlines() if line.startswith("{")]
    stopped = bool(lines) and lines[-1].get("stopped") is True
    assert out.returncode == (0 if stopped else 1), f"{example} exited {out.returncode}:\n{out.stdout}\n{out.stderr[-3000:]}"
    return lines


@pytest.mark.parametrize("example", ["openai_agents_budget.py", "pydantic_ai_budget.py"])
def test_the_example_agent_is_stopped_by_its_budget_and_resumes_when_lifted(
    example: str, start_collector: Any, provider: CountingProxy
) -> None:
    c: Collector = start_collector(extra=(EXAMPLES / "tollgate.toml").read_text())
    project = example.split("_budget")[0].replace("_", "-")
    app = {"openai_agents_budget.py": "agents-sdk-support", "pydantic_ai_budget.py": "pydantic-ai-support"}[example]
    before = provider.count
    lines = run(example, c, provider, project)
    stop = lines[-1]
    assert stop["stopped"] is True, lines
    assert (stop["rule"], stop["reason"], stop["scope"]) == (RULE, "budget_exceeded", f"project={project}"), stop
    turns = stop["turns"]
    assert turns >= 2, lines
    # One model call a turn; the refused turn reached nothing.
    assert provider.count - before == turns, (provider.count - before, lines)
    # Each answered call is a row; the refused one too, as an error that
    # used nothing (as the gateway records a refusal).
    rows = c.wait_calls(turns + 1, project=project)
    refused = [r for r in rows if r["status"] != "ok"]
    assert [(r["error_type"], r["input_tokens"], r["output_tokens"]) for r in refused] == [("tollgate.Blocked", 0, 0)], json.dumps(refused)
    rows = [r for r in rows if r["status"] == "ok"]
    assert len(rows) == turns
    used = sum(r["input_tokens"] + r["output_tokens"] for r in rows)
    assert used >= LIMIT
    assert used - (rows[0]["input_tokens"] + rows[0]["output_tokens"]) < LIMIT, "it ran on past the budget"
    assert {(r["user"], r["session"], r["route"], r["app"]) for r in rows + refused} == {
        ("customer-42", "chat-7", "support", app)
    }

    # Lifted by hand: the agent runs again (the rule does not block the
    # same window twice).
    c.lift({"project": project})
    before = provider.count
    again = run(example, c, provider, project, turns=3)
    assert [line.get("turn") for line in again] == [0, 1, 2, None] and again[-1]["stopped"] is False, again
    assert provider.count - before == 3
