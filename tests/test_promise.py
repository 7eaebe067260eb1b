"""The promise, round three (issue 23, DESIGN.md v0.3): every task is run or
accounted for, one task cannot hurt the next, nothing waits for ever, and
shutdown stays bounded. One test (or a few) per item and per decision; the
Django items have their own tests."""

import asyncio
import functools
import logging
import subprocess
import sys
import threading
import time
import tracemalloc
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from helpers import (
    BODY,
    START_200,
    Gate,
    Lifespan,
    Recorder,
    assert_accounted,
    call,
    http_scope,
    request_receive,
    scheduling,
    start_request,
    with_lifespan,
)
from prometheus_client import CollectorRegistry

from asgi_bgtasks import (
    BackgroundTasksMiddleware,
    DroppedTask,
    TaskInfo,
    add_task,
    background_tasks,
    task_options,
)
from asgi_bgtasks.prometheus import register
from examples.serve import ROOT, free_port, run_hypercorn

MODES = ["inline", "detached"]
# Seconds a test waits at most for what must happen: only a broken promise
# (a hang) gets near it.
HANG = 30
# The contract's grace for a cancelled task (`_chain.UNWIND_GRACE`).
UNWIND_GRACE = 0.5
NEEDS_ASYNCIO = "asgi-bgtasks needs an asyncio event loop"


def failures(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.levelno >= logging.WARNING]


# 1. A plain def raising StopIteration fails alone.


def reads_an_empty_iterator() -> None:
    next(iter(()))  # an everyday bug: StopIteration


@pytest.mark.parametrize("mode", MODES)
async def test_a_plain_def_raising_stop_iteration_fails_alone_and_frees_its_slot(
    events: list[object], caplog: pytest.LogCaptureFixture, mode: str
) -> None:
    app = BackgroundTasksMiddleware(
        scheduling((reads_an_empty_iterator,), (events.append, "next")),
        mode=mode,
        max_concurrency=1,
    )

    async with asyncio.timeout(HANG):
        await call(app, events)
        await app.join()
        await call(app, events)  # the one slot was released: this runs too
        await app.join()

    assert events.count("next") == 2
    assert (app.stats.failed, app.stats.succeeded, app.stats.running) == (2, 2, 0)
    failed = [r for r in caplog.records if r.levelno == logging.ERROR]
    assert [r.getMessage() for r in failed] == [
        "background task test_promise.reads_an_empty_iterator failed"
    ] * 2
    error = failed[0].exc_info[1] if failed[0].exc_info else None
    assert isinstance(error, StopIteration) or isinstance(
        getattr(error, "__cause__", None), StopIteration
    )


# 2. Under hypercorn's trio worker: fail loudly, never lose tasks silently.


def test_under_hypercorns_trio_worker_lifespan_startup_fails_loudly() -> None:
    pytest.importorskip("trio")
    port = free_port()
    command = [sys.executable, "-m", "hypercorn", "tests.apps.on_trio:app"]
    command += ["--bind", f"127.0.0.1:{port}", "-k", "trio"]

    # It must not serve: startup failed, so the server stops by itself.
    ran = subprocess.run(
        command, cwd=ROOT, capture_output=True, text=True, timeout=HANG * 2
    )

    output = ran.stdout + ran.stderr
    assert "Lifespan failure in startup" in output
    assert NEEDS_ASYNCIO in output
    assert "no running event loop" not in output


@pytest.fixture(scope="module")
def on_trio_without_lifespan() -> Iterator[Any]:
    pytest.importorskip("trio")
    with run_hypercorn("tests.apps.on_trio:without_lifespan", "-k", "trio") as server:
        yield server


def test_under_hypercorns_trio_worker_without_lifespan_add_task_raises(
    on_trio_without_lifespan: Any,
) -> None:
    server = on_trio_without_lifespan

    response = httpx.get(f"{server.url}/", timeout=HANG)

    assert response.status_code == 500
    assert response.text.startswith(f"RuntimeError: {NEEDS_ASYNCIO}")
    assert "(trio?)" in response.text


def test_under_hypercorns_trio_worker_a_request_without_tasks_is_served_cleanly(
    on_trio_without_lifespan: Any,
) -> None:
    server = on_trio_without_lifespan
    before = len(server.output())

    response = httpx.get(f"{server.url}/quiet", timeout=HANG)
    time.sleep(0.2)  # a crash after the body would be logged by now

    assert (response.status_code, response.text) == (200, "no task")
    logged = server.output()[before:]
    assert "no running event loop" not in logged
    assert "Error in ASGI Framework" not in logged


# 3. A chain that cannot start loses nothing and releases its slot.


async def async_step(events: list[object], label: str) -> None:
    events.append(label)


def factory_without_context(
    loop: asyncio.AbstractEventLoop, coro: Any
) -> "asyncio.Task[Any]":
    """A task factory written as asyncio once documented it: no ``context``."""
    return asyncio.Task(coro, loop=loop)


@pytest.mark.parametrize("mode", MODES)
async def test_tasks_a_task_factory_cannot_start_are_dropped_and_free_their_slot(
    events: list[object],
    caplog: pytest.LogCaptureFixture,
    mode: str,
) -> None:
    dropped: list[DroppedTask] = []
    app = BackgroundTasksMiddleware(
        scheduling((async_step, events, "first"), (async_step, events, "second")),
        mode=mode,
        max_concurrency=1,
        on_drop=dropped.append,
    )
    loop = asyncio.get_running_loop()
    own = loop.get_task_factory()  # pytest-asyncio's steps need it back

    try:
        loop.set_task_factory(factory_without_context)
        async with asyncio.timeout(HANG):
            await call(app, events)
            await app.join()
    finally:
        loop.set_task_factory(own)
    async with asyncio.timeout(HANG):
        await call(app, events)  # the factory fixed: the one slot is free
        await app.join()

    assert events[-2:] == ["first", "second"]
    assert events.count("first") == 1
    assert [(d.name, d.args[1]) for d in dropped] == [
        ("test_promise.async_step", "first"),
        ("test_promise.async_step", "second"),
    ]
    assert {d.reason for d in dropped} == {"not_started"}
    errors = [r for r in caplog.records if r.levelno == logging.ERROR]
    assert len(errors) == 1
    assert "could not start" in errors[0].getMessage()
    assert errors[0].exc_info is not None
    assert errors[0].exc_info[0] is TypeError
    assert (app.stats.dropped, app.stats.succeeded, app.stats.running) == (2, 2, 0)
    assert_accounted(app.stats)


# 4. add_task refuses generator functions, however wrapped.


async def stray_async_yield() -> Any:
    yield "never runs"


def stray_yield() -> Any:
    yield "never runs"


class AsyncGeneratorCall:
    async def __call__(self) -> Any:
        yield "never runs"


class GeneratorCall:
    def __call__(self) -> Any:
        yield "never runs"


class Methods:
    async def agen(self) -> Any:
        yield "never runs"

    def gen(self) -> Any:
        yield "never runs"


GENERATORS = {
    "async generator function": stray_async_yield,
    "generator function": stray_yield,
    "partial of an async generator function": functools.partial(stray_async_yield),
    "partial of a generator function": functools.partial(stray_yield),
    "partial of a partial": functools.partial(functools.partial(stray_yield)),
    "callable whose __call__ is an async generator": AsyncGeneratorCall(),
    "callable whose __call__ is a generator": GeneratorCall(),
    "async generator method": Methods().agen,
    "generator method": Methods().gen,
    "task_options on an async generator function": task_options(retries=1)(
        stray_async_yield
    ),
}


@pytest.mark.parametrize("how", ["add_task", "background_tasks(scope).add_task"])
@pytest.mark.parametrize("func", GENERATORS.values(), ids=GENERATORS.keys())
async def test_add_task_refuses_a_generator_function_however_wrapped(
    events: list[object], func: Any, how: str
) -> None:
    async def app(scope: Any, receive: Any, send: Any) -> None:
        schedule = add_task if how == "add_task" else background_tasks(scope).add_task
        try:
            schedule(func)
        except TypeError as refused:
            events.append(str(refused))
        await send(START_200)
        await send(BODY)

    middleware = BackgroundTasksMiddleware(app)

    await call(middleware, events)

    said = events[0]
    assert isinstance(said, str)
    assert "generator function" in said
    assert "none of its body" in said
    assert "stray `yield`" in said
    assert middleware.stats.scheduled == 0


# 5. Error storms meet backpressure like any other response.


@task_options(run_on_error=True)
async def audited(gate: Gate, label: str) -> None:
    await gate.task(label)


async def a_held_error_response(events: list[object], *, per_task: bool) -> None:
    gate = Gate(events)

    async def app(scope: dict[str, str], receive: Any, send: Any) -> None:
        label = scope["path"][1:]
        if per_task:
            add_task(audited, gate, label)
        else:
            add_task(gate.task, label)
        status = 500 if label == "3" else 200
        await send({"type": "http.response.start", "status": status, "headers": []})
        await send(BODY)

    middleware = BackgroundTasksMiddleware(
        app,
        mode="detached",
        max_concurrency=1,
        max_pending=1,
        run_on_error=not per_task,
    )
    await call(middleware, events, http_scope("/1"))
    await gate.arrived["1"].wait()  # 1 holds the one slot
    await call(middleware, events, http_scope("/2"))  # the queue is full
    sent = Recorder(events)
    third = asyncio.create_task(middleware(http_scope("/3"), request_receive, sent))
    for _ in range(20):  # loop turns, not time: its body must stay held
        await asyncio.sleep(0)

    assert not sent.body_sent.is_set()
    assert [m["status"] for m in sent.messages] == [500]
    events.append("gate opens")
    gate.opened.set()
    async with asyncio.timeout(HANG):
        await third
        await middleware.join()

    after = events[events.index("gate opens") :]
    assert after.index("1 done") < after.index("http.response.body")
    assert after[-2:] == ["3 started", "3 done"]  # the 500's task ran, on error
    assert (middleware.stats.succeeded, middleware.stats.dropped) == (3, 0)


async def test_a_5xx_whose_tasks_run_on_error_is_held_at_max_pending(
    events: list[object],
) -> None:
    await a_held_error_response(events, per_task=False)


async def test_a_5xx_whose_task_runs_on_error_by_its_own_option_is_held_at_max_pending(
    events: list[object],
) -> None:
    await a_held_error_response(events, per_task=True)


# 7. The wait histogram measures from the final response message.

LINGER = 0.2  # seconds the app spends after its response (a time, unavoidably)


@pytest.mark.parametrize("mode", MODES)
async def test_prometheus_wait_is_measured_from_the_final_response_message(
    events: list[object], mode: str
) -> None:
    registry = CollectorRegistry()

    async def cleans_up_after_responding(scope: Any, receive: Any, send: Any) -> None:
        add_task(async_step, events, "task")
        await send(START_200)
        await send(BODY)
        await asyncio.sleep(LINGER)  # clean-up, after the response

    app = BackgroundTasksMiddleware(cleans_up_after_responding, mode=mode)
    register(app, registry)

    async with asyncio.timeout(HANG):
        await call(app, events)
        await app.join()

    labels = {"middleware": "default"}
    count = registry.get_sample_value("asgi_bgtasks_task_wait_seconds_count", labels)
    waited = registry.get_sample_value("asgi_bgtasks_task_wait_seconds_sum", labels)
    assert count == 1
    assert waited is not None
    # From the body on: the app's clean-up is part of the wait (timers may
    # fire a little early: a generous lower bound).
    assert waited >= LINGER * 0.75


# 8. A long-lived chain does not grow per task run.

RUNS = 20_000
WARM_UP = 1_000
GROWTH_BOUND = 64 * 1024


@pytest.mark.parametrize("shape", ["alone", "behind another task"])
@pytest.mark.parametrize("mode", MODES)
async def test_a_chain_that_re_adds_its_task_does_not_grow_per_task_run(
    mode: str, shape: str
) -> None:
    traced: dict[str, int] = {}
    done = asyncio.Event()

    async def again(left: int) -> None:
        if left == RUNS - WARM_UP:
            traced["warm"] = tracemalloc.get_traced_memory()[0]
        if left:
            add_task(again, left - 1)  # one pending at a time
        else:
            traced["end"] = tracemalloc.get_traced_memory()[0]
            done.set()

    async def noop() -> None:
        pass

    first = [(noop,)] if shape == "behind another task" else []
    app = BackgroundTasksMiddleware(scheduling(*first, (again, RUNS)), mode=mode)

    tracemalloc.start()
    try:
        async with asyncio.timeout(HANG * 4):
            await call(app, [])
            await done.wait()  # join() would not wait for the follow-ups
            await app.join()
    finally:
        tracemalloc.stop()

    assert app.stats.succeeded == RUNS + 1 + len(first)
    growth = traced["end"] - traced["warm"]
    assert growth < GROWTH_BOUND, f"{growth} bytes over {RUNS - WARM_UP} runs"


# 9. A status the server accepts but ASGI does not type, or none it can read.


def answering_with(start: dict[str, Any], events: list[object]) -> Any:
    async def app(scope: Any, receive: Any, send: Any) -> None:
        add_task(async_step, events, "task")
        await send(start)
        await send({"type": "http.response.body", "body": b"complete body"})

    return app


@pytest.mark.parametrize("mode", MODES)
async def test_a_status_given_as_a_string_is_read_as_the_server_reads_it(
    events: list[object], mode: str
) -> None:
    start = {"type": "http.response.start", "status": "200", "headers": []}
    app = BackgroundTasksMiddleware(answering_with(start, events), mode=mode)

    async with asyncio.timeout(HANG):
        sent = await call(app, events)
        await app.join()

    assert sent.messages[0] is start  # passed on untouched
    assert sent.messages[1]["body"] == b"complete body"
    assert sent.body_sent.is_set()
    assert events[-1] == "task"
    assert (app.stats.succeeded, app.stats.pending, app.stats.running) == (1, 0, 0)


UNREADABLE = {"text": "OK", "none": None, "a list": [200], "missing": ...}


@pytest.mark.parametrize("status", UNREADABLE.values(), ids=UNREADABLE.keys())
@pytest.mark.parametrize("mode", MODES)
async def test_a_status_that_cannot_be_read_fails_the_app_and_reaches_the_server(
    events: list[object], mode: str, status: Any
) -> None:
    start: dict[str, Any] = {"type": "http.response.start", "headers": []}
    if status is not ...:
        start["status"] = status
    dropped: list[DroppedTask] = []
    app = BackgroundTasksMiddleware(
        answering_with(start, events), mode=mode, on_drop=dropped.append
    )

    async with asyncio.timeout(HANG):
        sent = await call(app, events)
        await app.join()

    assert sent.messages[0] is start
    assert start == {"type": "http.response.start", "headers": []} | (
        {} if status is ... else {"status": status}
    )
    assert sent.messages[1]["body"] == b"complete body"
    assert "task" not in events
    assert [d.reason for d in dropped] == ["app_failed"]
    assert (app.stats.dropped, app.stats.pending) == (1, 0)


# Decided: a task's timeout is a bound.


@pytest.mark.parametrize("mode", MODES)
async def test_a_task_swallowing_its_timeouts_cancellation_is_given_up_after_the_grace(
    events: list[object], caplog: pytest.LogCaptureFixture, mode: str
) -> None:
    released, ended_alone = asyncio.Event(), asyncio.Event()
    told: list[tuple[str, BaseException]] = []

    async def swallows() -> None:
        while not released.is_set():
            try:
                await released.wait()
            except asyncio.CancelledError:
                events.append("swallowed")
        ended_alone.set()

    def on_error(info: TaskInfo, error: BaseException) -> None:
        told.append((info.name, error))

    app = BackgroundTasksMiddleware(
        scheduling((swallows,), (events.append, "next")),
        mode=mode,
        task_timeout=0.05,
        on_error=on_error,
    )

    began = time.monotonic()
    async with asyncio.timeout(HANG):
        await call(app, events)
        await app.join()
    took = time.monotonic() - began

    assert events == [
        "http.response.start",
        "http.response.body",
        "swallowed",
        "next",
    ]
    assert took >= UNWIND_GRACE * 0.9  # it was given its grace
    assert not ended_alone.is_set()  # and still runs, on its own
    assert (app.stats.timed_out, app.stats.succeeded, app.stats.running) == (1, 1, 0)
    assert [(name, type(error)) for name, error in told] == [
        (
            "test_promise.test_a_task_swallowing_its_timeouts_cancellation_is_"
            "given_up_after_the_grace.<locals>.swallows",
            TimeoutError,
        )
    ]
    assert any("goes on on its own" in r.getMessage() for r in failures(caplog))
    released.set()
    async with asyncio.timeout(HANG):
        await ended_alone.wait()
    for _ in range(5):
        await asyncio.sleep(0)
    assert app.stats.timed_out == 1  # counted once
    assert_accounted(app.stats)


@pytest.mark.parametrize("mode", MODES)
async def test_a_plain_def_past_its_timeout_does_not_hold_its_chain_beyond_the_grace(
    events: list[object], caplog: pytest.LogCaptureFixture, mode: str
) -> None:
    release, returned = threading.Event(), threading.Event()
    told: list[BaseException] = []

    def blocks() -> None:
        release.wait(HANG)
        returned.set()

    app = BackgroundTasksMiddleware(
        scheduling((blocks,), (events.append, "next")),
        mode=mode,
        task_timeout=0.05,
        on_error=lambda info, error: told.append(error),
    )

    try:
        async with asyncio.timeout(HANG):
            await call(app, events)
            await app.join()

        assert events[-1] == "next"
        assert not returned.is_set()  # its thread still runs
        assert (app.stats.timed_out, app.stats.succeeded) == (1, 1)
        assert [type(error) for error in told] == [TimeoutError]
    finally:
        release.set()
    async with asyncio.timeout(HANG):
        # Its return reaches the loop by a callback of the engine's own.
        while "its worker thread has returned" not in caplog.text:  # noqa: ASYNC110
            await asyncio.sleep(0.01)
    (late,) = [r for r in caplog.records if "has returned" in r.getMessage()]
    assert late.getMessage().startswith(f"background task {__name__}.")
    assert "blocks" in late.getMessage()  # named, though its record was let go
    assert (app.stats.timed_out, app.stats.succeeded, app.stats.running) == (1, 1, 0)
    assert len(told) == 1
    assert_accounted(app.stats)


# Decided: a cancel request a finished task left behind reaches nothing.

LEFT_BEHIND = 0.05  # when the stray cancel fires
WELL_AFTER = 0.3  # when the next task is let go


@pytest.mark.parametrize("next_is", ["async", "plain def"])
@pytest.mark.parametrize("mode", MODES)
async def test_a_cancel_left_behind_by_a_finished_task_reaches_neither_next_nor_chain(
    events: list[object], mode: str, next_is: str
) -> None:
    passed = asyncio.Event()
    passed_in_thread = threading.Event()

    async def leaves_a_cancel_behind() -> None:
        loop = asyncio.get_running_loop()
        loop.call_later(LEFT_BEHIND, asyncio.current_task().cancel)  # type: ignore[union-attr]
        loop.call_later(WELL_AFTER, passed.set)
        loop.call_later(WELL_AFTER, passed_in_thread.set)

    async def waits_async() -> None:
        await passed.wait()
        events.append("next done")

    def waits_in_thread() -> None:
        passed_in_thread.wait(HANG)
        events.append("next done")

    following = waits_async if next_is == "async" else waits_in_thread
    app = BackgroundTasksMiddleware(
        scheduling((leaves_a_cancel_behind,), (following,), (events.append, "last")),
        mode=mode,
    )

    async with asyncio.timeout(HANG):
        await call(app, events)
        await app.join()

    assert events[-2:] == ["next done", "last"]
    assert (app.stats.succeeded, app.stats.failed, app.stats.dropped) == (3, 0, 0)


# Decided: join() from a task's own code raises at once.


@pytest.mark.parametrize("mode", MODES)
async def test_join_awaited_by_a_task_raises_runtime_error_at_once(
    events: list[object], mode: str
) -> None:
    middleware: list[BackgroundTasksMiddleware] = []

    async def joins() -> None:
        try:
            await middleware[0].join()
        except RuntimeError as refused:
            events.append(f"refused: {refused}")

    app = BackgroundTasksMiddleware(
        scheduling((joins,), (events.append, "next")), mode=mode
    )
    middleware.append(app)

    async with asyncio.timeout(HANG):
        await call(app, events)
        await app.join()

    refused = [e for e in events if str(e).startswith("refused: ")]
    assert len(refused) == 1
    assert "it would wait for itself" in str(refused[0])
    assert events[-1] == "next"
    assert (app.stats.succeeded, app.stats.failed) == (2, 0)


# Decided: shutdown logging stays bounded, whatever the backlog.


async def pending_one() -> None:
    pass


async def pending_two() -> None:
    pass


BACKLOG = 20_000
SHUTDOWN_TIMEOUT = 0.1
# Generous: the contract is "about one second" past shutdown_timeout.
SHUTDOWN_BOUND = SHUTDOWN_TIMEOUT + 3.0


@pytest.mark.parametrize("taken", [False, True], ids=["no on_drop", "on_drop takes"])
@pytest.mark.parametrize("mode", MODES)
async def test_shutdown_logs_a_large_backlog_in_one_record_per_function(
    events: list[object], caplog: pytest.LogCaptureFixture, mode: str, taken: bool
) -> None:
    gate = Gate(events)
    dropped: list[DroppedTask] = []
    half = BACKLOG // 2

    async def routes(scope: dict[str, str], receive: Any, send: Any) -> None:
        if scope["path"] == "/1":  # running, with half its tasks unstarted
            add_task(gate.task, "1")
            for _ in range(half):
                add_task(pending_one)
        else:  # waiting for the one slot
            for n in range(half):
                add_task(pending_one if n % 2 else pending_two)
        await send(START_200)
        await send(BODY)

    app = BackgroundTasksMiddleware(
        with_lifespan(routes, events),
        mode=mode,
        max_concurrency=1,
        max_pending=BACKLOG * 2,
        shutdown_timeout=SHUTDOWN_TIMEOUT,
        on_drop=dropped.append if taken else None,
    )
    lifespan = Lifespan(app)
    await lifespan.startup()
    first = await start_request(app, events, "/1")
    await gate.arrived["1"].wait()
    second = await start_request(app, events, "/2")
    caplog.clear()

    began = time.monotonic()
    async with asyncio.timeout(HANG):
        assert await lifespan.shutdown() == {"type": "lifespan.shutdown.complete"}
    took = time.monotonic() - began
    async with asyncio.timeout(HANG):
        await first  # an inline call returns normally: its response was complete
        await second

    assert took < SHUTDOWN_BOUND
    level = logging.WARNING if taken else logging.ERROR
    handed = "; handed over to on_drop" if taken else ""
    records = failures(caplog)
    assert all(r.levelno == level for r in records)
    assert sorted(r.getMessage() for r in records) == sorted(
        [
            "background task helpers.Gate.task did not finish: cancelled while "
            f"running{handed}",
            f"shutdown: {half + half // 2} background task(s) "
            f"test_promise.pending_one did not start: dropped while pending{handed}",
            f"shutdown: {half // 2} background task(s) "
            f"test_promise.pending_two did not start: dropped while pending{handed}",
        ]
    )
    assert len(dropped) == (BACKLOG + 1 if taken else 0)
    assert (app.stats.dropped, app.stats.running, app.stats.pending) == (
        BACKLOG + 1,
        0,
        0,
    )


async def test_on_drop_raising_for_a_large_backlog_is_logged_once_per_function(
    events: list[object], caplog: pytest.LogCaptureFixture
) -> None:
    gate = Gate(events)

    def on_drop(task: DroppedTask) -> None:
        raise RuntimeError("database down")

    async def routes(scope: dict[str, str], receive: Any, send: Any) -> None:
        add_task(gate.task, "1")
        for _ in range(BACKLOG):
            add_task(pending_one)
        await send(START_200)
        await send(BODY)

    app = BackgroundTasksMiddleware(
        with_lifespan(routes, events),
        mode="detached",
        max_pending=BACKLOG * 2,
        shutdown_timeout=SHUTDOWN_TIMEOUT,
        on_drop=on_drop,
    )
    lifespan = Lifespan(app)
    await lifespan.startup()
    await call(app, events)
    await gate.arrived["1"].wait()
    caplog.clear()

    async with asyncio.timeout(HANG):
        assert await lifespan.shutdown() == {"type": "lifespan.shutdown.complete"}

    raised = "on_drop raised while handing over background task"
    assert sorted(
        r.getMessage() for r in failures(caplog) if raised in r.getMessage()
    ) == [
        f"{raised} helpers.Gate.task",
        f"{raised} test_promise.pending_one",
    ]
    assert (
        f"shutdown: on_drop raised for {BACKLOG - 1} more background task(s) "
        "test_promise.pending_one (the first one's traceback is logged above)"
    ) in caplog.messages
    assert len(failures(caplog)) <= 6  # within the bound, whatever the backlog
    assert app.stats.dropped == BACKLOG + 1


# Decided: backpressure counts the unstarted tasks of running chains;
# inline holds nothing.


@pytest.mark.parametrize("mode", MODES)
async def test_unstarted_tasks_of_a_running_chain_count_toward_max_pending(
    events: list[object], mode: str
) -> None:
    gate = Gate(events)

    async def routes(scope: dict[str, str], receive: Any, send: Any) -> None:
        label = scope["path"][1:]
        for n in range(10 if label == "1" else 1):
            add_task(gate.task, f"{label}.{n}")
        await send(START_200)
        await send(BODY)

    app = BackgroundTasksMiddleware(routes, mode=mode, max_concurrency=1, max_pending=5)
    first = asyncio.create_task(call(app, events, http_scope("/1")))
    await gate.arrived["1.0"].wait()  # running; its other 9 have not started
    sent = Recorder(events)
    second = asyncio.create_task(app(http_scope("/2"), request_receive, sent))
    for _ in range(20):  # loop turns, not time
        await asyncio.sleep(0)

    if mode == "detached":
        assert not sent.body_sent.is_set()  # held: 9 tasks wait to start
    else:
        assert sent.body_sent.is_set()  # its own call runs its chain
    events.append("gate opens")
    gate.opened.set()
    async with asyncio.timeout(HANG):
        await asyncio.gather(first, second)
        await app.join()

    assert app.stats.succeeded == 11
    started = [e for e in events if str(e).endswith("started")]
    assert started == [f"1.{n} started" for n in range(10)] + ["2.0 started"]


# The rest: what the items above leave to the edges of the engine.


def test_under_trio_in_process_lifespan_startup_fails_saying_why() -> None:
    trio = pytest.importorskip("trio")
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, str]:
        return {"type": "lifespan.startup"}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    async def app(scope: Any, receive: Any, send: Any) -> None:
        raise AssertionError("the app is never started without asyncio")

    middleware = BackgroundTasksMiddleware(app)
    trio.run(middleware, {"type": "lifespan"}, receive, send)

    (failed,) = sent
    assert failed["type"] == "lifespan.startup.failed"
    assert "needs an asyncio event loop" in failed["message"]
    assert "-k asyncio" in failed["message"]


def test_under_trio_in_process_add_task_raises_saying_why() -> None:
    trio = pytest.importorskip("trio")
    errors: list[BaseException] = []

    async def task() -> None:
        pass

    async def app(scope: Any, receive: Any, send: Any) -> None:
        try:
            add_task(task)
        except RuntimeError as error:
            errors.append(error)
        await send(START_200)
        await send(BODY)

    async def send(message: dict[str, Any]) -> None:
        pass

    trio.run(BackgroundTasksMiddleware(app), http_scope(), request_receive, send)

    (error,) = errors
    assert "needs an asyncio event loop" in str(error)


async def test_add_task_refuses_a_celery_task_naming_delay() -> None:
    celery = pytest.importorskip("celery")
    worker = celery.Celery("promise")

    @worker.task(name="mail.send_welcome_email")
    def send_welcome_email(address: str) -> None:
        raise AssertionError("never run in the web process")

    refused: list[BaseException] = []

    async def app(scope: Any, receive: Any, send: Any) -> None:
        try:
            add_task(send_welcome_email, "ann@example.com")
        except TypeError as error:
            refused.append(error)
        await send(START_200)
        await send(BODY)

    middleware = BackgroundTasksMiddleware(app)
    await call(middleware, [])

    (error,) = refused
    assert "add_task(send_welcome_email.delay, ...)" in str(error)
    assert middleware.stats.scheduled == 0


async def test_a_task_dropped_while_waiting_for_its_retry_logs_its_last_attempt(
    events: list[object], caplog: pytest.LogCaptureFixture
) -> None:
    failed_once = asyncio.Event()

    @task_options(retries=1, retry_delay=HANG)
    async def fails() -> None:
        failed_once.set()
        raise ConnectionError("smtp down")

    app = BackgroundTasksMiddleware(scheduling((fails,)), mode="inline")
    request = asyncio.create_task(app(http_scope(), request_receive, Recorder(events)))
    await failed_once.wait()
    await asyncio.sleep(0)  # its attempt is settled: it waits for its retry
    request.cancel()  # the server gives up on the call
    with pytest.raises(asyncio.CancelledError):
        await request

    (record,) = [r for r in caplog.records if "did not finish" in r.getMessage()]
    assert record.getMessage() == (
        "background task test_promise.test_a_task_dropped_while_waiting_for_its"
        "_retry_logs_its_last_attempt.<locals>.fails did not finish: cancelled "
        "while pending"
    )
    assert (record.outcome, record.attempt) == ("dropped", 1)  # type: ignore[attr-defined]
    assert (app.stats.dropped, app.stats.retried) == (1, 1)


@pytest.mark.parametrize("mode", MODES)
async def test_a_shutdown_during_a_timeouts_grace_lets_the_grace_decide(
    events: list[object], mode: str
) -> None:
    swallowed = asyncio.Event()

    async def swallows_its_timeout() -> None:
        try:
            await asyncio.sleep(HANG)
        except asyncio.CancelledError:
            swallowed.set()
            await asyncio.sleep(HANG)  # past its grace

    app = BackgroundTasksMiddleware(
        with_lifespan(
            scheduling((swallows_its_timeout,), (events.append, "next")), events
        ),
        mode=mode,
        task_timeout=0.01,
        shutdown_timeout=0,
    )
    lifespan = Lifespan(app)
    await lifespan.startup()
    request = await start_request(app, events)
    await swallowed.wait()  # timed out, unwinding within its grace

    async with asyncio.timeout(HANG):
        assert await lifespan.shutdown() == {"type": "lifespan.shutdown.complete"}
        await request

    assert "next" not in events
    stats = app.stats
    assert (stats.timed_out, stats.dropped, stats.running, stats.pending) == (
        1,
        1,
        0,
        0,
    )


# Found in review: a chain that cannot start lets held requests go; a task
# that ended as its timer fired is not timed out; any status is read or
# failed, never raised from.


async def test_a_chain_that_cannot_start_lets_the_requests_it_held_go(
    events: list[object],
) -> None:
    gate = Gate(events)
    refuse = False

    async def quick() -> None:
        pass

    async def routes(scope: dict[str, str], receive: Any, send: Any) -> None:
        if scope["path"] == "/a":
            add_task(gate.task, "a")  # holds the one slot
        elif scope["path"] == "/b":
            add_task(quick)
            add_task(quick)  # queued: the queue is at max_pending
        else:
            add_task(quick)
        await send(START_200)
        await send(BODY)

    def factory(loop: Any, coro: Any, **options: Any) -> "asyncio.Task[Any]":
        if refuse and coro.__qualname__ == "_guarded":
            raise RuntimeError("factory refuses")
        return asyncio.Task(coro, loop=loop, **options)

    app = BackgroundTasksMiddleware(
        routes, mode="detached", max_concurrency=1, max_pending=1
    )
    loop = asyncio.get_running_loop()
    original = loop.get_task_factory()
    loop.set_task_factory(factory)
    try:
        await call(app, events, http_scope("/a"))
        await gate.arrived["a"].wait()
        await call(app, events, http_scope("/b"))
        held = Recorder(events)
        started = asyncio.Event()

        async def send(message: Any) -> None:
            await held(message)
            started.set()  # its final message comes next, and is held

        third = asyncio.create_task(app(http_scope("/c"), request_receive, send))
        async with asyncio.timeout(HANG):
            await started.wait()
        assert not held.body_sent.is_set()
        refuse = True  # /b's chain cannot start: its tasks are dropped
        gate.opened.set()
        async with asyncio.timeout(HANG):
            await held.body_sent.wait()  # nothing waits any more: let go
            await third
    finally:
        loop.set_task_factory(original)
    await app.join()

    # /a's task ran; /b's and then /c's could not start (the factory still
    # refuses): dropped, each chain's slot freed in turn.
    assert (app.stats.succeeded, app.stats.dropped) == (1, 3)
    assert_accounted(app.stats)


@pytest.mark.parametrize("mode", MODES)
async def test_a_task_that_ended_as_its_timer_fired_is_not_timed_out(
    events: list[object], mode: str
) -> None:
    errors: list[BaseException] = []

    async def blocks_then_returns() -> None:
        await asyncio.sleep(0)  # goes on past its first step: its timer runs
        time.sleep(0.1)  # blocks the loop past its timeout  # noqa: ASYNC251
        await asyncio.sleep(0)  # its last step and its timer: one loop turn
        events.append("returned")

    app = BackgroundTasksMiddleware(
        scheduling((blocks_then_returns,)),
        mode=mode,
        task_timeout=0.02,
        on_error=lambda info, error: errors.append(error),
    )
    await call(app, events)
    await app.join()

    # On asyncio its last step runs first, and it returns; uvloop fires due
    # timers before ready callbacks, so there its timeout comes first and
    # cancels it. Either way it counts as what happened to it.
    if events[-1] == "returned":
        assert (app.stats.succeeded, app.stats.timed_out, errors) == (1, 0, [])
    else:
        assert (app.stats.succeeded, app.stats.timed_out) == (0, 1)
        assert [type(error) for error in errors] == [TimeoutError]


async def test_a_status_that_cannot_even_be_converted_goes_to_the_server_untouched(
    events: list[object],
) -> None:
    sent: list[Any] = []

    class ServerRefuses(Exception):
        pass

    async def server_send(message: Any) -> None:
        sent.append(message)
        raise ServerRefuses

    async def app(scope: Any, receive: Any, send: Any) -> None:
        add_task(events.append, "task")
        await send({"type": "http.response.start", "status": float("inf")})

    middleware = BackgroundTasksMiddleware(app, mode="inline")
    with pytest.raises(ServerRefuses):
        await middleware(http_scope(), request_receive, server_send)

    assert len(sent) == 1  # the server saw it, as the app sent it
    assert "task" not in events
    assert middleware.stats.dropped == 1
