"""What both example agents share: set-up from the environment, and the
loop of turns that a budget stops."""

from __future__ import annotations

import json
import os
import sys
import time
from typing import Callable

import tollgate

# The mock provider (`cargo run -p tollgate-mock-provider --bin mock-provider`)
# or any OpenAI-compatible server; OPENAI_API_KEY is sent to it.
BASE_URL = os.environ.get("OPENAI_BASE_URL", "http://127.0.0.1:8080/v1")
API_KEY = os.environ.get("OPENAI_API_KEY", "sk-example")
MODEL = os.environ.get("EXAMPLE_MODEL", "gpt-4o-mini")
MAX_TURNS = int(os.environ.get("EXAMPLE_MAX_TURNS", "50"))
QUESTIONS = ["Where is my parcel?", "Can I change the address?", "When will it arrive?", "Can I get a refund?"]


def setup(app: str) -> None:
    """`tollgate.init` from the standard variables: OTEL_EXPORTER_OTLP_ENDPOINT
    (default http://127.0.0.1:4318), TOLLGATE_API_URL (default
    http://127.0.0.1:7070), TOLLGATE_PROJECT, TOLLGATE_KEY, TOLLGATE_GATEWAY."""
    tollgate.init(
        org=os.environ.get("TOLLGATE_ORG", "acme"),
        project=os.environ.get("TOLLGATE_PROJECT", "support-bot"),
        environment=os.environ.get("TOLLGATE_ENVIRONMENT", "dev"),
        app=app,
    )


def run_turns(turn: Callable[[str], str]) -> int:
    """Runs turns until the budget stops the agent; prints one JSON line per
    turn and one for the stop. Exit status 0 when a budget stopped it."""
    for i in range(MAX_TURNS):
        question = QUESTIONS[i % len(QUESTIONS)]
        with tollgate.scope(user="customer-42", session="chat-7", route="support"):
            try:
                answer = turn(question)
            except tollgate.Blocked as blocked:
                print(json.dumps({
                    "stopped": True, "turns": i, "rule": blocked.rule, "reason": blocked.reason,
                    "scope": blocked.scope, "until": blocked.until.isoformat() if blocked.until else None,
                }), flush=True)
                return 0
        print(json.dumps({"turn": i, "question": question, "answer_chars": len(answer)}), flush=True)
        # Spans are exported in batches; a demo sends each turn's at once so
        # the budget counts it before the next turn.
        tollgate.flush()
        time.sleep(0.3)
    print(json.dumps({"stopped": False, "turns": MAX_TURNS}), flush=True)
    return 1


def main(turn: Callable[[str], str]) -> None:
    code = run_turns(turn)
    tollgate.shutdown()
    sys.exit(code)
