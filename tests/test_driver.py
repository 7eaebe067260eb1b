"""The chain's driver at its edges: calls that fail before a first step,
coroutines closed or given up on, causes of cancellation that meet, and
threads that a timeout or a second shutdown finds."""

import asyncio
import logging
import threading
from typing import Any

import pytest
from helpers import (
    BODY,
    START_200,
    Lifespan,
    Recorder,
    assert_accounted,
    http_scope,
    request_receive,
    scheduling,
    start_request,
    with_lifespan,
)

from asgi_bgtasks import BackgroundTasksMiddleware, DroppedTask, add_task, task_options

HANG = 30  # seconds a blocked thread waits at most, should a test fail


async def needs_two(first: str, second: str) -> None:
    pass


@pytest.mark.parametrize("mode", ["inline", "detached"])
async def test_a_task_whose_call_raises_fails_alone_with_a_timeout_set(
    events: list[object], caplog: pytest.LogCaptureFixture, mode: str
) -> None:
    app = BackgroundTasksMiddleware(
        scheduling((needs_two, "only one"), (events.append, "next")),
        mode=mode,
        task_timeout=60,
    )
    request = await start_request(app, events)
    await request
    await app.join()

    assert events[-1] == "next"
    assert (app.stats.failed, app.stats.succeeded) == (1, 1)
    assert caplog.records[-1].exc_info is not None
    assert caplog.records[-1].exc_info[0] is TypeError


async def test_closing_a_suspended_asgi_call_closes_its_running_task(
    events: list[object],
) -> None:
    async def holds_a_resource() -> None:
        try:
            await asyncio.Event().wait()
        finally:
            events.append("released")

    app = BackgroundTasksMiddleware(scheduling((holds_a_resource,)), mode="inline")
    call = app(http_scope(), request_receive, Recorder(events))
    waiting_on = call.send(None)  # runs up to the task's first wait
    assert isinstance(waiting_on, asyncio.Future)

    call.close()  # as when a pending Task is destroyed

    assert events[-1] == "released"
    waiting_on.cancel()


@pytest.mark.parametrize("mode", ["inline", "detached"])
async def test_a_given_up_task_goes_on_alone_and_may_be_cancelled_again(
    events: list[object], mode: str
) -> None:
    swallowed: asyncio.Queue[None] = asyncio.Queue()
    released = asyncio.Event()

    async def swallows_cancellation() -> None:
        while not released.is_set():
            try:
                await released.wait()
            except asyncio.CancelledError:
                events.append("swallowed")
                swallowed.put_nowait(None)
        events.append("ended alone")

    app = BackgroundTasksMiddleware(
        with_lifespan(scheduling((swallows_cancellation,)), events),
        mode=mode,
        shutdown_timeout=0.01,
    )
    lifespan = Lifespan(app)
    await lifespan.startup()
    await start_request(app, events)
    async with asyncio.timeout(HANG):
        await lifespan.shutdown()
        await swallowed.get()  # the deadline's cancellation
        await swallowed.get()  # given up on: the next one, in a Task of its own
    (alone,) = [
        task
        for task in asyncio.all_tasks()
        if task.get_coro().__qualname__ == "_go_on"  # type: ignore[union-attr]
    ]

    alone.cancel()
    await swallowed.get()
    released.set()
    await alone

    assert events[-2:] == ["swallowed", "ended alone"]
    assert (app.stats.dropped, app.stats.scheduled) == (1, 1)


async def test_the_server_cancelling_a_call_whose_task_unwinds_after_the_deadline(
    events: list[object],
) -> None:
    """Shutdown's deadline and the server both cancel: the first cause stays
    the task's reason, and the server's cancellation goes on to the server."""
    unwinding, dropped = asyncio.Event(), list[DroppedTask]()

    async def slow_to_unwind() -> None:
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            unwinding.set()
            await asyncio.Event().wait()  # until the server cancels it too

    app = BackgroundTasksMiddleware(
        with_lifespan(scheduling((slow_to_unwind,), (events.append, "next")), events),
        mode="inline",
        shutdown_timeout=0.01,
        on_drop=dropped.append,
    )
    lifespan = Lifespan(app)
    await lifespan.startup()
    request = await start_request(app, events)
    shutdown = asyncio.create_task(lifespan.shutdown())
    await unwinding.wait()

    request.cancel()
    with pytest.raises(asyncio.CancelledError):
        await request
    await shutdown

    assert [(d.name.rsplit(".", 1)[-1], d.reason) for d in dropped] == [
        ("append", "shutdown"),
        ("slow_to_unwind", "shutdown"),
    ]
    assert "next" not in events
    assert_accounted(app.stats)


async def test_a_thread_left_running_at_one_shutdown_is_logged_once_at_the_next(
    events: list[object], caplog: pytest.LogCaptureFixture
) -> None:
    entered, release = threading.Event(), threading.Event()

    def blocks() -> None:
        entered.set()
        release.wait(timeout=HANG)
        events.append("thread returned")

    app = BackgroundTasksMiddleware(
        with_lifespan(scheduling((blocks,)), events), shutdown_timeout=0.01
    )
    lifespan = Lifespan(app)
    await lifespan.startup()
    await start_request(app, events)
    await asyncio.to_thread(entered.wait)
    await lifespan.shutdown()
    await lifespan.startup()  # a second cycle, as a test client per test
    await lifespan.shutdown()

    release.set()
    await app.join()

    in_thread = [r for r in caplog.records if "worker thread" in r.getMessage()]
    assert len(in_thread) == 1
    assert in_thread[0].levelno == logging.ERROR
    assert (app.stats.succeeded, app.stats.running) == (1, 0)


async def test_a_plain_def_task_timed_out_while_waiting_for_a_thread_never_runs(
    events: list[object],
) -> None:
    entered, release = threading.Event(), threading.Event()

    def holds_the_only_thread() -> None:
        entered.set()
        release.wait(timeout=HANG)

    @task_options(timeout=0.01)
    def waits_for_a_thread() -> None:
        events.append("ran")

    async def app(scope: Any, receive: Any, send: Any) -> None:
        if scope["path"] == "/hold":
            add_task(holds_the_only_thread)
        else:
            add_task(waits_for_a_thread)
        await send(START_200)
        await send(BODY)

    timed_out = asyncio.Event()
    middleware = BackgroundTasksMiddleware(
        app,
        mode="detached",
        max_threads=1,
        on_error=lambda info, error: timed_out.set(),
    )
    await start_request(middleware, events, "/hold")
    await asyncio.to_thread(entered.wait)
    await start_request(middleware, events, "/wait")
    async with asyncio.timeout(HANG):  # a bound, should the test fail
        await timed_out.wait()

    release.set()
    await middleware.join()

    assert "ran" not in events
    assert (middleware.stats.timed_out, middleware.stats.succeeded) == (1, 1)
