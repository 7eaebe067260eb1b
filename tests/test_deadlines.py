"""Timeouts and the shutdown deadline: a cancelled task is awaited before
anything else starts, nothing starts after the deadline, and shutdown is
bounded whatever the tasks do (DESIGN.md, "Shutdown" and "When tasks run")."""

import asyncio
import threading
import time
from collections.abc import Generator
from typing import Any

import pytest
from helpers import (
    BODY,
    START_200,
    Gate,
    Lifespan,
    call,
    http_scope,
    recording_task,
    scheduling,
    start_request,
    with_lifespan,
)

from asgi_bgtasks import BackgroundTasksMiddleware, DroppedTask, add_task

SHUTDOWN_COMPLETE = {"type": "lifespan.shutdown.complete"}
# Generous: shutdown is bounded at shutdown_timeout + 0.5 s; this only keeps
# a broken bound from hanging the suite.
HANG = 30
# The contract: shutdown completes "no later than about one second after"
# shutdown_timeout (the runner gives unwinding tasks 0.5 s); generous, for a
# loaded machine.
BOUND_PAST_TIMEOUT = 1.5


def unwinds_slowly(events: list[object], opened: asyncio.Event) -> Any:
    """A task that, once cancelled, takes a few loop turns to clean up."""

    async def task() -> None:
        try:
            events.append("task started")
            opened.set()
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            for _ in range(5):
                await asyncio.sleep(0)
            events.append("cleanup done")
            raise

    return task


@pytest.mark.parametrize("mode", ["inline", "detached"])
async def test_a_timed_out_task_finishes_unwinding_before_the_next_task_starts(
    events: list[object], mode: str
) -> None:
    task = unwinds_slowly(events, asyncio.Event())
    app = BackgroundTasksMiddleware(
        # "next" ends in its first step: no timeout can catch it.
        scheduling((task,), (recording_task(events), "next")),
        mode=mode,
        task_timeout=0.01,
    )

    await call(app, events)
    await app.join()

    assert events[-2:] == ["cleanup done", "next"]
    assert (app.stats.timed_out, app.stats.succeeded) == (1, 1)


@pytest.mark.parametrize("mode", ["inline", "detached"])
async def test_a_timed_out_task_still_unwinding_at_shutdown_ends_before_the_app_sees_it(
    mode: str, events: list[object]
) -> None:
    unwinding, released = asyncio.Event(), asyncio.Event()

    async def cleans_up_slowly() -> None:
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            unwinding.set()
            await asyncio.shield(released.wait())
            events.append("cleanup done")
            raise

    app = BackgroundTasksMiddleware(
        with_lifespan(scheduling((cleans_up_slowly,), (events.append, "next")), events),
        mode=mode,
        task_timeout=0.01,
        shutdown_timeout=HANG,
    )
    lifespan = Lifespan(app)
    await lifespan.startup()
    request = await start_request(app, events)
    await unwinding.wait()  # its timeout cancelled it; it cleans up

    shutdown = asyncio.create_task(lifespan.shutdown())
    for _ in range(10):
        await asyncio.sleep(0)
    assert "app saw shutdown" not in events
    released.set()
    async with asyncio.timeout(HANG):
        assert await shutdown == SHUTDOWN_COMPLETE
        await request

    assert events[-3:] == ["cleanup done", "next", "app saw shutdown"]
    assert (app.stats.timed_out, app.stats.succeeded) == (1, 1)


@pytest.mark.parametrize("mode", ["inline", "detached"])
async def test_at_the_deadline_a_cancelled_task_unwinds_before_the_app_sees_shutdown(
    events: list[object], mode: str
) -> None:
    started = asyncio.Event()
    app = BackgroundTasksMiddleware(
        with_lifespan(scheduling((unwinds_slowly(events, started),)), events),
        mode=mode,
        shutdown_timeout=0.01,
    )
    lifespan = Lifespan(app)
    await lifespan.startup()
    request = await start_request(app, events)
    await started.wait()

    assert await lifespan.shutdown() == SHUTDOWN_COMPLETE

    assert events[-2:] == ["cleanup done", "app saw shutdown"]
    await request  # an inline call returns normally: its response was complete
    assert (app.stats.dropped, app.stats.running) == (1, 0)


@pytest.mark.parametrize("mode", ["inline", "detached"])
async def test_after_the_deadline_no_task_starts_though_the_running_one_absorbed_it(
    events: list[object], caplog: pytest.LogCaptureFixture, mode: str
) -> None:
    started = asyncio.Event()

    async def absorbs_cancellation() -> None:
        started.set()
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            events.append("absorbed")

    app = BackgroundTasksMiddleware(
        with_lifespan(
            scheduling((absorbs_cancellation,), (events.append, "next")), events
        ),
        mode=mode,
        shutdown_timeout=0.01,
    )
    lifespan = Lifespan(app)
    await lifespan.startup()
    request = await start_request(app, events)
    await started.wait()

    assert await lifespan.shutdown() == SHUTDOWN_COMPLETE
    await request

    assert "next" not in events
    assert events[-2:] == ["absorbed", "app saw shutdown"]
    assert (
        "shutdown: 1 background task(s) list.append did not start: dropped "
        "while pending" in caplog.messages
    )
    # It did return: it ran to its end, though late.
    assert (app.stats.succeeded, app.stats.dropped) == (1, 1)


@pytest.mark.parametrize("mode", ["inline", "detached"])
async def test_shutdown_is_bounded_when_a_task_swallows_every_cancellation(
    events: list[object], caplog: pytest.LogCaptureFixture, mode: str
) -> None:
    started, released = asyncio.Event(), asyncio.Event()

    async def swallows_cancellation() -> None:
        started.set()
        while not released.is_set():
            try:
                await released.wait()
            except asyncio.CancelledError:
                events.append("swallowed")

    app = BackgroundTasksMiddleware(
        with_lifespan(scheduling((swallows_cancellation,)), events),
        mode=mode,
        shutdown_timeout=0.01,
    )
    lifespan = Lifespan(app)
    await lifespan.startup()
    request = await start_request(app, events)
    await started.wait()

    loop = asyncio.get_running_loop()
    began = loop.time()
    async with asyncio.timeout(HANG):
        assert await lifespan.shutdown() == SHUTDOWN_COMPLETE
        took = loop.time() - began
        await request

    assert took < 0.01 + BOUND_PAST_TIMEOUT
    assert events[-2:] == ["swallowed", "app saw shutdown"]
    assert caplog.messages[-1] == (
        f"background task {__name__}.test_shutdown_is_bounded_when_a_task_swallows_"
        "every_cancellation.<locals>.swallows_cancellation did not finish: "
        "cancelled while running"
    )
    assert (app.stats.dropped, app.stats.running) == (1, 0)
    released.set()  # let it end, counted once: it was given up on already
    await asyncio.sleep(0)
    assert app.stats.dropped == 1
    assert app.stats.scheduled == 1


@pytest.mark.parametrize("mode", ["inline", "detached"])
async def test_a_thread_at_the_deadline_is_logged_unstoppable_and_counted_on_return(
    events: list[object], caplog: pytest.LogCaptureFixture, mode: str
) -> None:
    entered, release = threading.Event(), threading.Event()

    def blocks() -> None:
        entered.set()
        release.wait(timeout=HANG)
        events.append("thread returned")

    app = BackgroundTasksMiddleware(
        with_lifespan(scheduling((blocks,), (events.append, "next")), events),
        mode=mode,
        shutdown_timeout=0.01,
    )
    lifespan = Lifespan(app)
    await lifespan.startup()
    request = await start_request(app, events)
    await asyncio.to_thread(entered.wait)

    assert await lifespan.shutdown() == SHUTDOWN_COMPLETE
    await request

    name = f"{__name__}.test_a_thread_at_the_deadline_is_logged_unstoppable_and_"
    name += "counted_on_return.<locals>.blocks"
    assert (
        f"background task {name} did not finish: running in a worker thread, "
        "which cannot be stopped; it is counted when its thread returns"
    ) in caplog.messages
    assert (app.stats.running, app.stats.dropped) == (1, 1)  # "next" never starts

    release.set()
    await app.join()

    assert events[-1] == "thread returned"
    assert (app.stats.running, app.stats.succeeded, app.stats.dropped) == (0, 1, 1)


async def test_a_second_lifespan_cycle_runs_tasks_detached_again(
    events: list[object],
) -> None:
    gate = Gate(events)
    app = BackgroundTasksMiddleware(
        with_lifespan(scheduling((gate.task, "task")), events)
    )
    first = Lifespan(app)
    await first.startup()
    await first.shutdown()
    second = Lifespan(app)
    await second.startup()

    request = await start_request(app, events)
    await gate.arrived["task"].wait()
    for _ in range(10):  # loop turns, not time: a detached call has returned
        await asyncio.sleep(0)

    assert request.done()
    gate.opened.set()
    assert await second.shutdown() == SHUTDOWN_COMPLETE
    assert events[-2:] == ["task done", "app saw shutdown"]


async def test_inline_chains_of_open_calls_are_ended_and_logged_at_the_deadline(
    events: list[object], caplog: pytest.LogCaptureFixture
) -> None:
    gate = Gate(events)
    app = BackgroundTasksMiddleware(
        with_lifespan(scheduling((gate.task, "1"), (gate.task, "2")), events),
        mode="inline",
        max_concurrency=1,
        shutdown_timeout=0.01,
    )
    lifespan = Lifespan(app)
    await lifespan.startup()
    running = await start_request(app, events)
    waiting = await start_request(app, events)  # waits for the only slot
    await gate.arrived["1"].wait()

    assert await lifespan.shutdown() == SHUTDOWN_COMPLETE

    await running  # both calls return normally: their responses were complete
    await waiting
    name = "helpers.Gate.task"
    assert caplog.messages[-2:] == [
        f"background task {name} did not finish: cancelled while running",
        f"shutdown: 3 background task(s) {name} did not start: dropped while pending",
    ]
    assert app.stats.dropped == 4
    assert events[-1] == "app saw shutdown"


async def test_detached_requests_waiting_for_a_slot_are_dropped_at_the_deadline(
    events: list[object], caplog: pytest.LogCaptureFixture
) -> None:
    gate = Gate(events)
    dropped: list[DroppedTask] = []
    app = BackgroundTasksMiddleware(
        with_lifespan(scheduling((gate.task, "1"), (gate.task, "2")), events),
        mode="detached",
        max_concurrency=1,
        shutdown_timeout=0.01,
        on_drop=dropped.append,
    )
    lifespan = Lifespan(app)
    await lifespan.startup()
    for _ in range(3):  # the first takes the only slot; two wait for it
        await call(app, events)
    await gate.arrived["1"].wait()
    assert app.stats.pending == 5

    assert await lifespan.shutdown() == SHUTDOWN_COMPLETE

    # The waiting requests' tasks first, in order; then the running chain's.
    assert [d.args for d in dropped] == [("1",), ("2",)] * 2 + [("2",), ("1",)]
    assert {d.reason for d in dropped} == {"shutdown"}
    assert caplog.messages[-1] == (
        "shutdown: 5 background task(s) helpers.Gate.task did not start: dropped "
        "while pending; handed over to on_drop"
    )
    stats = app.stats
    assert (stats.dropped, stats.pending, stats.running) == (6, 0, 0)
    assert events.count("1 started") == 1  # only the first request's began
    assert events[-1] == "app saw shutdown"


@pytest.mark.parametrize("mode", ["inline", "detached"])
@pytest.mark.parametrize("where", ["in its request", "in the next request"])
async def test_no_task_starts_after_the_deadline_though_the_loop_was_blocked_past_it(
    mode: str, where: str, events: list[object]
) -> None:
    opened = asyncio.Event()

    async def blocks_the_loop_past_the_deadline() -> None:
        await opened.wait()
        time.sleep(0.15)  # noqa: ASYNC251  # blocks the loop: the deadline passes

    async def app(scope: Any, receive: Any, send: Any) -> None:
        if scope["path"] == "/first":
            add_task(blocks_the_loop_past_the_deadline)
        if scope["path"] == "/second" or where == "in its request":
            add_task(events.append, "started after the deadline")
        await send(START_200)
        await send(BODY)

    app_with_lifespan = with_lifespan(app, events)
    middleware = BackgroundTasksMiddleware(
        app_with_lifespan, mode=mode, max_concurrency=1, shutdown_timeout=0.05
    )
    lifespan = Lifespan(middleware)
    await lifespan.startup()
    requests = [asyncio.create_task(call(middleware, [], http_scope("/first")))]
    if where == "in the next request":
        requests.append(
            asyncio.create_task(call(middleware, [], http_scope("/second")))
        )
    while middleware.stats.running < 1:  # noqa: ASYNC110
        await asyncio.sleep(0)

    shutdown = asyncio.create_task(lifespan.shutdown())
    await asyncio.sleep(0)  # the drain begins: the deadline is set
    opened.set()
    async with asyncio.timeout(HANG):
        assert await shutdown == SHUTDOWN_COMPLETE
        await asyncio.gather(*requests)

    assert "started after the deadline" not in events
    assert (middleware.stats.succeeded, middleware.stats.dropped) == (1, 1)


async def test_a_request_ending_after_the_deadline_drops_its_tasks_loudly(
    events: list[object], caplog: pytest.LogCaptureFixture
) -> None:
    started = asyncio.Event()

    async def hangs(label: str) -> None:
        started.set()
        await asyncio.Event().wait()

    async def app(scope: dict[str, str], receive: Any, send: Any) -> None:
        task = hangs if scope["path"] == "/hangs" else events.append
        await scheduling((task, "late"))(scope, receive, send)

    middleware = BackgroundTasksMiddleware(
        with_lifespan(app, events), shutdown_timeout=0.01
    )
    lifespan = Lifespan(middleware)
    await lifespan.startup()
    await call(middleware, events, http_scope("/hangs"))
    await started.wait()
    await lifespan.shutdown()  # past its deadline: hangs was cancelled

    await call(middleware, events, http_scope("/late"))  # a straggler

    assert "late" not in events
    assert caplog.messages[-1] == (
        "background task list.append did not finish: cancelled while pending"
    )
    assert middleware.stats.dropped == 2


async def test_a_chain_shows_its_state_and_running_task_in_its_repr(
    events: list[object],
) -> None:
    gate = Gate(events)
    middleware = BackgroundTasksMiddleware(
        scheduling((gate.task, "task")), mode="detached"
    )
    await call(middleware, events)
    await gate.arrived["task"].wait()
    (chain,) = middleware._runner._chains
    running = repr(chain)
    gate.opened.set()
    await middleware.join()

    assert running == (
        "<Chain running run=<Run helpers.Gate.task error=NoneType "
        "timed_out=False cancelled_for=None abandoned=False>>"
    )
    assert repr(chain) == "<Chain done run=None>"


class _RecordsAwait:
    """An awaitable that is not a coroutine; records being awaited."""

    def __init__(self, events: list[object]) -> None:
        self.events = events

    def __await__(self) -> Generator[None, None, None]:
        self.events.append("awaitable awaited")
        return
        yield


@pytest.mark.parametrize("kind", ["coroutine", "awaitable"])
async def test_an_awaitable_returned_by_a_thread_after_the_deadline_is_never_awaited(
    events: list[object], kind: str
) -> None:
    entered, release = threading.Event(), threading.Event()

    async def never_started() -> None:
        events.append("coroutine ran")

    def blocks_then_returns_an_awaitable() -> Any:
        entered.set()
        release.wait(timeout=HANG)
        return never_started() if kind == "coroutine" else _RecordsAwait(events)

    app = BackgroundTasksMiddleware(
        with_lifespan(scheduling((blocks_then_returns_an_awaitable,)), events),
        shutdown_timeout=0.01,
    )
    lifespan = Lifespan(app)
    await lifespan.startup()
    await call(app, events)
    await asyncio.to_thread(entered.wait)
    await lifespan.shutdown()

    release.set()
    await app.join()

    assert "coroutine ran" not in events
    assert "awaitable awaited" not in events
    assert (app.stats.dropped, app.stats.running) == (1, 0)
