"""examples.observability under a real hypercorn: a request whose two tasks
(one fails) appear as spans in the request's trace, and in ``/metrics``."""

from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from served import until

from examples.serve import Server, run_hypercorn

# The client's trace context (W3C traceparent): the server continues it.
TRACE_ID = "0af7651916cd43dd8448eb211c80319c"
CLIENT_SPAN_ID = "b7ad6b7169203331"
TRACEPARENT = f"00-{TRACE_ID}-{CLIENT_SPAN_ID}-01"

# What the request's trace looks like (children in the order they started).
TREE = """\
POST /orders (SERVER)
├── POST /orders http send (INTERNAL)
├── POST /orders http send (INTERNAL)
├── examples.observability.send_receipt (INTERNAL) outcome=succeeded
│   └── smtp send (INTERNAL)
└── examples.observability.sync_crm (INTERNAL) outcome=failed status=ERROR exception
"""

# Lines of /metrics once the request's two tasks have ended.
METRICS = """\
asgi_bgtasks_tasks_scheduled_total{middleware="default"} 2.0
asgi_bgtasks_tasks_total{middleware="default",outcome="succeeded"} 1.0
asgi_bgtasks_tasks_total{middleware="default",outcome="failed"} 1.0
asgi_bgtasks_tasks_total{middleware="default",outcome="timed_out"} 0.0
asgi_bgtasks_tasks_total{middleware="default",outcome="dropped"} 0.0
asgi_bgtasks_task_retries_total{middleware="default"} 0.0
asgi_bgtasks_tasks_running{middleware="default"} 0.0
asgi_bgtasks_tasks_pending{middleware="default"} 0.0
"""
DURATIONS = """\
asgi_bgtasks_task_duration_seconds_count{middleware="default",task="examples.observability.send_receipt"} 1.0
asgi_bgtasks_task_duration_seconds_count{middleware="default",task="examples.observability.sync_crm"} 1.0
asgi_bgtasks_task_wait_seconds_count{middleware="default"} 2.0
"""  # noqa: E501

Span = dict[str, Any]


@pytest.fixture(scope="module")
def server() -> Iterator[Server]:
    """A server of its own: its counters start from zero."""
    with run_hypercorn("examples.observability:app") as running:
        yield running


def in_trace(server: Server) -> list[Span]:
    spans: list[Span] = httpx.get(f"{server.url}/spans").json()
    return [span for span in spans if span["trace_id"] == TRACE_ID]


def tree(spans: list[Span], parent: str = CLIENT_SPAN_ID, indent: str = "") -> str:
    """``spans`` drawn as a tree, from the children of ``parent``."""
    children = sorted(
        (span for span in spans if span["parent_id"] == parent),
        key=lambda span: span["start"],
    )
    drawn = ""
    for n, span in enumerate(children):
        last = n == len(children) - 1
        branch = "" if parent == CLIENT_SPAN_ID else ("└── " if last else "├── ")
        line = f"{span['name']} ({span['kind']})"
        if "asgi_bgtasks.outcome" in span["attributes"]:
            line += f" outcome={span['attributes']['asgi_bgtasks.outcome']}"
        if span["status"] != "UNSET":
            line += f" status={span['status']}"
        line += "".join(f" {event}" for event in span["events"])
        drawn += f"{indent}{branch}{line}\n"
        deeper = "" if parent == CLIENT_SPAN_ID else ("    " if last else "│   ")
        drawn += tree(spans, span["span_id"], indent + deeper)
    return drawn


def test_a_request_s_two_tasks_are_spans_in_its_trace_and_counted(
    server: Server,
) -> None:
    response = httpx.post(
        f"{server.url}/orders",
        params={"email": "ann@example.com"},
        headers={"traceparent": TRACEPARENT},
    )
    assert response.status_code == 201

    spans = until(
        lambda: in_trace(server),
        lambda spans: sum(s["name"].startswith("examples.") for s in spans) == 2,
        timeout=60,
    )
    [request] = [span for span in spans if span["kind"] == "SERVER"]
    tasks = {s["name"]: s for s in spans if s["name"].startswith("examples.")}
    assert {task["parent_id"] for task in tasks.values()} == {request["span_id"]}
    assert tasks["examples.observability.send_receipt"]["attributes"] == {
        "code.function.name": "examples.observability.send_receipt",
        "asgi_bgtasks.outcome": "succeeded",
    }
    assert tasks["examples.observability.sync_crm"]["attributes"] == {
        "code.function.name": "examples.observability.sync_crm",
        "asgi_bgtasks.outcome": "failed",
    }
    assert tree(spans) == TREE
    assert "ann@example.com" not in str(tasks)

    lines = until(
        lambda: httpx.get(f"{server.url}/metrics").text.splitlines(),
        lambda lines: set(METRICS.splitlines()) <= set(lines),
        timeout=60,
    )
    assert set(DURATIONS.splitlines()) <= set(lines)
    assert [line for line in lines if line in METRICS] == METRICS.splitlines()
