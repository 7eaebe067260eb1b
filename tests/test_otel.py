"""OpenTelemetry: a span per attempt of a task, a child of the span current at
``add_task`` and current inside the task; nothing while no tracer provider is
configured (DESIGN.md, "Integrations" → OpenTelemetry)."""

import asyncio
import importlib.util
import logging
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import asgiref
import pytest
from helpers import (
    BODY,
    START_200,
    Lifespan,
    call,
    http_scope,
    scheduling,
    with_lifespan,
)
from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import (
    InMemorySpanExporter,
)
from opentelemetry.trace import SpanKind, StatusCode
from opentelemetry.util._once import Once
from prometheus_client import CollectorRegistry

import asgi_bgtasks
from asgi_bgtasks import BackgroundTasksMiddleware, add_task, prometheus, task_options
from asgi_bgtasks._observe import OBSERVER_FAILED, observers_found
from asgi_bgtasks.otel import Tracing

SECRET = "secret-argument"


def tracer() -> trace.Tracer:
    """The tracer of the provider configured now (a tracer kept from an
    earlier test would stay bound to that test's provider)."""
    return trace.get_tracer("tests")


@pytest.fixture
def spans() -> Iterator[InMemorySpanExporter]:
    """An SDK tracer provider with an in-memory exporter, set globally for one
    test; then OpenTelemetry's globals are reset, as its own test utilities
    do, so that no other test runs with tracing active."""
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    trace.set_tracer_provider(provider)
    try:
        yield exporter
    finally:
        provider.shutdown()
        trace._TRACER_PROVIDER_SET_ONCE = Once()
        trace._TRACER_PROVIDER = None


def named(exporter: InMemorySpanExporter, name: str) -> list[ReadableSpan]:
    return [span for span in exporter.get_finished_spans() if span.name == name]


def parent_id(span: ReadableSpan) -> int | None:
    return None if span.parent is None else span.parent.span_id


def traced_request(*tasks: tuple[Any, ...], status: int = 200) -> Any:
    """An app that answers inside a span "GET /" and adds ``tasks`` in it, as
    an instrumented framework would."""

    async def app(scope: Any, receive: Any, send: Any) -> None:
        with tracer().start_as_current_span("GET /", kind=SpanKind.SERVER):
            for func, *args in tasks:
                add_task(func, *args)
            await send({**START_200, "status": status})
            await send(BODY)

    return app


async def send_receipt(address: str) -> None:
    with tracer().start_as_current_span("smtp"):
        pass


def write_audit(entry: str) -> None:  # plain def: runs in a worker thread
    with tracer().start_as_current_span("insert"):
        pass


async def fails(secret: str) -> None:
    raise ValueError("smtp refused")


@task_options(timeout=0.01)
async def hangs(secret: str) -> None:
    await asyncio.Event().wait()


class Flaky:
    """Fails its first two attempts, then succeeds."""

    attempts = 0


@task_options(retries=2, retry_delay=0)
async def flaky(secret: str) -> None:
    Flaky.attempts += 1
    if Flaky.attempts < 3:
        raise ConnectionError("smtp down")


@pytest.mark.parametrize("mode", ["inline", "detached"])
async def test_a_task_span_is_a_child_of_the_request_span_in_its_trace(
    mode: str, spans: InMemorySpanExporter
) -> None:
    app = BackgroundTasksMiddleware(
        traced_request((send_receipt, "ann@example.com")), mode=mode
    )

    await call(app, [])
    await app.join()

    [request] = named(spans, "GET /")
    [task] = named(spans, "test_otel.send_receipt")
    assert task.context.trace_id == request.context.trace_id
    assert parent_id(task) == request.context.span_id
    assert task.kind is SpanKind.INTERNAL
    assert dict(task.attributes or {}) == {
        "code.function.name": "test_otel.send_receipt",
        "asgi_bgtasks.outcome": "succeeded",
    }
    assert task.status.status_code is StatusCode.UNSET
    assert task.events == ()
    assert task.start_time is not None
    assert request.end_time is not None
    assert task.start_time >= request.end_time  # after the response


@pytest.mark.parametrize(
    ("func", "inner"),
    [(send_receipt, "smtp"), (write_audit, "insert")],
    ids=["async", "plain def in a thread"],
)
async def test_the_task_span_is_current_inside_the_task(
    func: Callable[[str], Any], inner: str, spans: InMemorySpanExporter
) -> None:
    app = BackgroundTasksMiddleware(traced_request((func, "x")), mode="inline")

    await call(app, [])

    [task] = named(spans, f"test_otel.{func.__qualname__}")
    [nested] = named(spans, inner)
    assert parent_id(nested) == task.context.span_id
    assert nested.context.trace_id == task.context.trace_id


async def test_each_request_s_tasks_are_in_that_request_s_trace(
    spans: InMemorySpanExporter,
) -> None:
    app = BackgroundTasksMiddleware(traced_request((send_receipt, "x")))

    await call(app, [])
    await call(app, [])

    requests = named(spans, "GET /")
    tasks = named(spans, "test_otel.send_receipt")
    assert [parent_id(task) for task in tasks] == [
        request.context.span_id for request in requests
    ]
    assert len({task.context.trace_id for task in tasks}) == 2


async def test_a_failed_task_s_span_has_error_status_and_the_exception(
    spans: InMemorySpanExporter,
) -> None:
    app = BackgroundTasksMiddleware(traced_request((fails, SECRET)))

    await call(app, [])

    [task] = named(spans, "test_otel.fails")
    assert task.status.status_code is StatusCode.ERROR
    assert task.status.description == "ValueError"
    assert dict(task.attributes or {})["asgi_bgtasks.outcome"] == "failed"
    [event] = task.events
    assert event.name == "exception"
    attributes = dict(event.attributes or {})
    assert attributes["exception.type"] == "ValueError"
    assert attributes["exception.message"] == "smtp refused"


async def test_a_timed_out_task_s_span_has_error_status_and_a_timeout_error(
    spans: InMemorySpanExporter,
) -> None:
    app = BackgroundTasksMiddleware(traced_request((hangs, SECRET)))

    await call(app, [])

    [task] = named(spans, "test_otel.hangs")
    assert task.status.status_code is StatusCode.ERROR
    assert task.status.description == "TimeoutError"
    assert dict(task.attributes or {})["asgi_bgtasks.outcome"] == "timed_out"
    [event] = task.events
    assert dict(event.attributes or {})["exception.type"] == "TimeoutError"


async def test_a_retried_task_has_a_span_per_attempt_numbered_from_the_second(
    spans: InMemorySpanExporter,
) -> None:
    Flaky.attempts = 0
    app = BackgroundTasksMiddleware(traced_request((flaky, SECRET)))

    await call(app, [])

    [request] = named(spans, "GET /")
    attempts = named(spans, "test_otel.flaky")
    assert [dict(span.attributes or {}) for span in attempts] == [
        {"code.function.name": "test_otel.flaky", "asgi_bgtasks.outcome": "failed"},
        {
            "code.function.name": "test_otel.flaky",
            "asgi_bgtasks.attempt": 2,
            "asgi_bgtasks.outcome": "failed",
        },
        {
            "code.function.name": "test_otel.flaky",
            "asgi_bgtasks.attempt": 3,
            "asgi_bgtasks.outcome": "succeeded",
        },
    ]
    assert [span.status.status_code for span in attempts] == [
        StatusCode.ERROR,
        StatusCode.ERROR,
        StatusCode.UNSET,
    ]
    assert {parent_id(span) for span in attempts} == {request.context.span_id}


async def test_a_task_dropped_by_an_error_response_has_no_span(
    spans: InMemorySpanExporter,
) -> None:
    app = BackgroundTasksMiddleware(traced_request((send_receipt, "x"), status=500))

    await call(app, [])

    assert app.stats.dropped == 1
    assert [span.name for span in spans.get_finished_spans()] == ["GET /"]


async def test_a_task_cancelled_at_shutdown_ends_its_span_as_dropped(
    spans: InMemorySpanExporter,
) -> None:
    started = asyncio.Event()

    async def waits_forever(secret: str) -> None:
        started.set()
        await asyncio.Event().wait()

    events: list[object] = []
    app = BackgroundTasksMiddleware(
        with_lifespan(traced_request((waits_forever, SECRET)), events),
        shutdown_timeout=0.01,
    )
    lifespan = Lifespan(app)
    await lifespan.startup()
    await call(app, events)
    await started.wait()

    await lifespan.shutdown()

    [task] = [s for s in spans.get_finished_spans() if s.name.endswith("forever")]
    assert dict(task.attributes or {})["asgi_bgtasks.outcome"] == "dropped"
    assert task.status.status_code is StatusCode.UNSET
    assert task.events == ()
    assert app.stats.dropped == 1


async def test_no_argument_appears_in_any_span(spans: InMemorySpanExporter) -> None:
    Flaky.attempts = 0
    app = BackgroundTasksMiddleware(
        traced_request((fails, SECRET), (hangs, SECRET), (flaky, SECRET))
    )

    await call(app, [])

    finished = spans.get_finished_spans()
    assert len(finished) == 6  # the request, fails, hangs, flaky three times
    for span in finished:
        assert SECRET not in span.to_json()


async def test_no_span_while_no_tracer_provider_is_configured() -> None:
    # A propagated parent, as a traceparent header gives: with no provider,
    # the task must see it unchanged, not a span of ours.
    remote = trace.NonRecordingSpan(
        trace.SpanContext(trace_id=1, span_id=2, is_remote=True)
    )
    seen: list[object] = []

    async def task() -> None:
        seen.append(trace.get_current_span())

    async def app(scope: Any, receive: Any, send: Any) -> None:
        token = otel_context.attach(trace.set_span_in_context(remote))
        try:
            add_task(task)
        finally:
            otel_context.detach(token)
        await send(START_200)
        await send(BODY)

    middleware = BackgroundTasksMiddleware(app)

    await call(middleware, [])

    assert not Tracing().active()
    assert seen == [remote]
    assert [repr(o) for o in middleware._runner.observers] == [
        "<asgi_bgtasks.otel.Tracing>"
    ]


@pytest.mark.parametrize("mode", ["inline", "detached"])
async def test_who_watches_a_requests_tasks_is_decided_as_it_hands_them_over(
    mode: str, events: list[object]
) -> None:
    opened = asyncio.Event()

    async def holds_the_only_slot() -> None:
        await opened.wait()

    async def app(scope: Any, receive: Any, send: Any) -> None:
        if scope["path"] == "/first":
            add_task(holds_the_only_slot)
        else:
            add_task(events.append, "second ran")
        await send(START_200)
        await send(BODY)

    middleware = BackgroundTasksMiddleware(
        with_lifespan(app, events), mode=mode, max_concurrency=1
    )
    # Another observer that is always on: a request's own choice must not
    # be made again when its slot frees.
    prometheus.register(middleware, CollectorRegistry())
    lifespan = Lifespan(middleware)
    await lifespan.startup()
    first = asyncio.create_task(call(middleware, [], http_scope("/first")))
    second = asyncio.create_task(call(middleware, [], http_scope("/second")))
    while middleware.stats.pending < 1:  # noqa: ASYNC110
        await asyncio.sleep(0)

    exporter = InMemorySpanExporter()  # a provider set after the hand-over
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    trace.set_tracer_provider(provider)
    try:
        opened.set()
        await asyncio.gather(first, second)
        await middleware.join()
    finally:
        provider.shutdown()
        trace._TRACER_PROVIDER_SET_ONCE = Once()
        trace._TRACER_PROVIDER = None
    await lifespan.shutdown()

    assert "second ran" in events
    assert middleware.stats.succeeded == 2
    assert exporter.get_finished_spans() == ()


async def test_tracing_stops_when_the_provider_is_reset(
    spans: InMemorySpanExporter,
) -> None:
    app = BackgroundTasksMiddleware(traced_request((send_receipt, "x")))
    await call(app, [])
    assert len(named(spans, "test_otel.send_receipt")) == 1

    trace._TRACER_PROVIDER = None  # as if none had been configured
    await call(app, [])

    assert len(named(spans, "test_otel.send_receipt")) == 1


async def test_spans_go_to_the_provider_configured_now() -> None:
    app = BackgroundTasksMiddleware(traced_request((send_receipt, "x")))
    exporters = []
    for _ in range(2):
        exporter = InMemorySpanExporter()
        provider = TracerProvider()
        provider.add_span_processor(SimpleSpanProcessor(exporter))
        trace.set_tracer_provider(provider)
        try:
            await call(app, [])
        finally:
            trace._TRACER_PROVIDER_SET_ONCE = Once()
            trace._TRACER_PROVIDER = None
        exporters.append(exporter)

    for exporter in exporters:
        assert len(named(exporter, "test_otel.send_receipt")) == 1


def test_a_provider_named_by_the_environment_is_used(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("OTEL_PYTHON_TRACER_PROVIDER", "sdk_tracer_provider")
    try:
        tracing = Tracing()

        assert tracing.active()
        assert isinstance(trace.get_tracer_provider(), TracerProvider)
    finally:
        trace._TRACER_PROVIDER_SET_ONCE = Once()
        trace._TRACER_PROVIDER = None


def test_without_opentelemetry_no_observer_is_loaded(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    find_spec = importlib.util.find_spec

    def without_opentelemetry(name: str, *args: Any) -> Any:
        return None if name == "opentelemetry" else find_spec(name, *args)

    monkeypatch.setattr(importlib.util, "find_spec", without_opentelemetry)

    assert observers_found() == []


def test_another_opentelemetry_distribution_alone_loads_no_observer(
    tmp_path: Path,
) -> None:
    # Only, say, opentelemetry-proto installed: the ``opentelemetry``
    # namespace package exists, ``opentelemetry.trace`` does not.
    (tmp_path / "opentelemetry" / "proto").mkdir(parents=True)
    (tmp_path / "opentelemetry" / "proto" / "__init__.py").touch()
    for package in (asgiref, asgi_bgtasks):
        (tmp_path / package.__name__).symlink_to(Path(package.__file__).parent)
    code = (
        "import asgi_bgtasks\n"
        "async def app(scope, receive, send): pass\n"
        "print(asgi_bgtasks.BackgroundTasksMiddleware(app)._runner.observers)\n"
    )

    done = subprocess.run(  # -S: no site-packages, only tmp_path
        [sys.executable, "-S", "-c", code],
        env={"PYTHONPATH": str(tmp_path)},
        capture_output=True,
        text=True,
        timeout=60,
    )

    assert (done.stdout, done.stderr) == ("[]\n", "")


async def test_without_observers_tasks_run_as_before() -> None:
    ran: list[str] = []

    async def task(label: str) -> None:
        ran.append(label)

    app = BackgroundTasksMiddleware(scheduling((task, "a"), (task, "b")))
    app._runner.observers.clear()  # as where OpenTelemetry is not installed

    await call(app, [])

    assert ran == ["a", "b"]
    assert app.stats.succeeded == 2


class Faulty:
    """An observer that raises where it is told ``raises``."""

    def __init__(self, raises: str) -> None:
        self.raises = raises

    def __repr__(self) -> str:
        return f"<Faulty {self.raises}>"

    def active(self) -> bool:
        return True

    def started(self, name: str, *args: Any) -> Callable[..., None] | None:
        if self.raises == "started":
            raise RuntimeError("observer broke")
        if self.raises == "nowhere":
            return None  # it does not want to know how the attempt ended

        def ended(*args: Any) -> None:
            raise RuntimeError("observer broke at the end")

        return ended


@pytest.mark.parametrize("mode", ["inline", "detached"])
async def test_an_observer_that_raises_is_logged_and_the_task_still_runs(
    mode: str, spans: InMemorySpanExporter, caplog: pytest.LogCaptureFixture
) -> None:
    app = BackgroundTasksMiddleware(traced_request((send_receipt, SECRET)), mode=mode)
    observers = app._runner.observers
    observers += [Faulty("started"), Faulty("ended"), Faulty("nowhere")]

    await call(app, [])
    await app.join()

    assert app.stats.succeeded == 1
    [task] = named(spans, "test_otel.send_receipt")  # the others still see it
    assert dict(task.attributes or {})["asgi_bgtasks.outcome"] == "succeeded"
    failures = [r for r in caplog.records if r.levelno == logging.ERROR]
    assert [r.msg for r in failures] == [OBSERVER_FAILED, OBSERVER_FAILED]
    assert failures[0].getMessage() == (
        "observer <Faulty started> raised while observing background task "
        "test_otel.send_receipt"
    )
    assert failures[1].getMessage().startswith("observer <function Faulty.")
    assert [vars(r)["task"] for r in failures] == ["test_otel.send_receipt"] * 2
    assert [str(r.exc_info[1]) for r in failures if r.exc_info] == [
        "observer broke",
        "observer broke at the end",
    ]
    for record in caplog.records:
        assert SECRET not in repr(vars(record))


async def test_a_span_processor_that_raises_does_not_reach_the_task(
    spans: InMemorySpanExporter, caplog: pytest.LogCaptureFixture
) -> None:
    class Raising(SimpleSpanProcessor):
        def on_start(self, span: Any, parent_context: Any = None) -> None:
            if span.name == "test_otel.send_receipt":
                raise RuntimeError("exporter down")

    provider = trace.get_tracer_provider()
    assert isinstance(provider, TracerProvider)
    provider.add_span_processor(Raising(InMemorySpanExporter()))
    app = BackgroundTasksMiddleware(traced_request((send_receipt, "x")))

    await call(app, [])

    assert app.stats.succeeded == 1
    [failure] = [r for r in caplog.records if r.levelno == logging.ERROR]
    assert failure.msg == OBSERVER_FAILED
