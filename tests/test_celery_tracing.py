"""Trace continuity of the durable hand-off: the Celery job's span joins the
trace of the request that enqueued it, through the background task's span.

``examples/celery_handoff.py`` with ``EXAMPLES_TRACE_FILE``: the web process
(under hypercorn) and the Celery worker (solo pool) each trace into a file of
their own (``examples/trace_file.py``), with opentelemetry-instrumentation-celery
in both. A Redis of its own, as in ``test_celery_handoff.py``: skipped without
``redis-server``, or failed when ``ASGI_BGTASKS_REQUIRE_REDIS=1``.
"""

import json
from collections.abc import Iterator

import httpx
import pytest
from served import Example, until
from test_celery_handoff import APP, ENQUEUE, Redis, celery_worker, running_redis
from test_observability_e2e import CLIENT_SPAN_ID, TRACE_ID, TRACEPARENT, Span, tree

from examples.serve import free_port, run_hypercorn
from examples.smtp_sink import SmtpSink

JOB = "examples.celery_handoff.send_welcome_email_job"

# The request's trace, from the spans of both processes (children in the
# order they started): the worker's run continues the publish.
TREE = """\
POST /signup (SERVER)
├── POST /signup http send (INTERNAL)
├── POST /signup http send (INTERNAL)
└── examples.celery_handoff.enqueue_welcome_email (INTERNAL) outcome=succeeded
    └── apply_async/examples.celery_handoff.send_welcome_email_job (PRODUCER)
        └── run/examples.celery_handoff.send_welcome_email_job (CONSUMER)
"""


@pytest.fixture(scope="module")
def broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Redis]:
    with running_redis(free_port(), tmp_path_factory.mktemp("redis")) as server:
        yield server


@pytest.fixture(scope="module")
def worker(
    broker: Redis, sink: SmtpSink, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Example]:
    folder = tmp_path_factory.mktemp("traced-worker")
    env = {
        **broker.env(),
        "SMTP_PORT": str(sink.port),
        "EXAMPLES_TRACE_FILE": str(folder / "spans.jsonl"),
    }
    with celery_worker(env, folder) as running:
        yield running


@pytest.fixture(scope="module")
def web(
    broker: Redis, sink: SmtpSink, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Example]:
    folder = tmp_path_factory.mktemp("traced-web")
    env = {
        **broker.env(),
        "SMTP_PORT": str(sink.port),
        "EXAMPLES_ACTIVITY": str(folder / "activity.jsonl"),
        "EXAMPLES_TRACE_FILE": str(folder / "spans.jsonl"),
    }
    with run_hypercorn(APP, env=env) as server:
        yield Example(server, folder / "activity.jsonl")


def in_trace(example: Example) -> list[Span]:
    """The spans of the request's trace that the process has written so far
    (whole lines only)."""
    path = example.activity.parent / "spans.jsonl"
    text = path.read_text() if path.exists() else ""
    spans = [json.loads(line) for line in text[: text.rfind("\n") + 1].splitlines()]
    return [span for span in spans if span["trace_id"] == TRACE_ID]


def named(name: str, spans: list[Span]) -> bool:
    return any(span["name"] == name for span in spans)


def test_the_celery_job_s_span_joins_the_request_s_trace_through_the_task_span(
    broker: Redis, worker: Example, web: Example, sink: SmtpSink, address: str
) -> None:
    response = httpx.post(
        f"{web.url}/signup",
        params={"email": address},
        headers={"traceparent": TRACEPARENT},
    )
    assert response.status_code == 201
    job = response.json()["job"]

    # The task's span ends after the publish it holds; the run's, after the job.
    in_web = until(lambda: in_trace(web), lambda s: named(ENQUEUE, s), timeout=60)
    in_worker = until(lambda: in_trace(worker), lambda s: named(f"run/{JOB}", s), 60)
    [request] = [s for s in in_web if s["kind"] == "SERVER"]
    [task] = [s for s in in_web if s["name"] == ENQUEUE]
    [publish] = [s for s in in_web if s["name"] == f"apply_async/{JOB}"]
    [run] = in_worker  # all the worker's spans in the trace: the job's run
    assert run["name"] == f"run/{JOB}"
    assert request["parent_id"] == CLIENT_SPAN_ID
    assert task["parent_id"] == request["span_id"]
    assert publish["parent_id"] == task["span_id"]
    assert run["parent_id"] == publish["span_id"]
    assert publish["attributes"]["messaging.message.id"] == job
    assert run["attributes"]["messaging.message.id"] == job
    assert tree([*in_web, *in_worker]) == TREE
    assert address not in str([task, publish, run])  # no arguments in spans
    sink.wait_for_mail(address)
