"""The chain's driver at its edges: calls that fail before a first step,
coroutines given up on, causes of cancellation that meet, and threads that
a timeout or a second shutdown finds."""

import asyncio
import contextlib
import logging
import sys
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


@pytest.mark.parametrize("mode", ["inline", "detached"])
async def test_a_given_up_task_goes_on_alone_and_may_be_cancelled_again(
    events: list[object], mode: str
) -> None:
    swallowed: asyncio.Queue[None] = asyncio.Queue()
    released = asyncio.Event()
    its_task: list[asyncio.Task[Any] | None] = []

    async def swallows_cancellation() -> None:
        its_task.append(asyncio.current_task())
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
    (alone,) = its_task  # given up on, it goes on in its own Task
    assert alone is not None
    assert not alone.done()

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


def dropped_as(dropped: list[DroppedTask]) -> list[tuple[str, str]]:
    return [(d.name.rsplit(".", 1)[-1], d.reason) for d in dropped]


async def test_the_servers_cancellation_reaches_it_though_the_tasks_clean_up_raised(
    events: list[object],
) -> None:
    started, dropped = asyncio.Event(), list[DroppedTask]()

    async def cleans_up_badly() -> None:
        try:
            started.set()
            await asyncio.Event().wait()
        finally:
            raise RuntimeError("closing the connection failed")

    app = BackgroundTasksMiddleware(
        scheduling((cleans_up_badly,), (events.append, "next")),
        mode="inline",
        on_drop=dropped.append,
    )
    request = await start_request(app, events)
    await started.wait()

    request.cancel()
    with pytest.raises(asyncio.CancelledError):
        await request

    assert "next" not in events
    assert dropped_as(dropped) == [
        ("append", "cancelled"),
        ("cleans_up_badly", "cancelled"),
    ]
    assert_accounted(app.stats)


async def leaves_a_task_group_then_cancels_on_its_own() -> None:
    async def fails_later() -> None:
        await asyncio.sleep(0)
        raise ConnectionError("smtp down")

    with contextlib.suppress(ExceptionGroup):
        async with asyncio.TaskGroup() as group:
            group.create_task(fails_later())
    # A TaskGroup whose child failed during its exit leaves a cancel request
    # on its Task on Python < 3.13; then the task's own cancellation.
    future = asyncio.get_running_loop().create_future()
    future.cancel()
    await future


async def is_cancelled_by_a_task_it_started() -> None:
    me = asyncio.current_task()
    assert me is not None

    async def watchdog() -> None:
        await asyncio.sleep(0)
        me.cancel()

    child = asyncio.create_task(watchdog())
    try:
        await asyncio.Event().wait()
    finally:
        await child


@pytest.mark.parametrize(
    "task",
    [leaves_a_task_group_then_cancels_on_its_own, is_cancelled_by_a_task_it_started],
)
@pytest.mark.parametrize("mode", ["inline", "detached"])
async def test_cancellations_the_task_caused_are_its_own_failure(
    events: list[object], mode: str, task: Any
) -> None:
    app = BackgroundTasksMiddleware(
        scheduling((task,), (events.append, "next")), mode=mode
    )
    request = await start_request(app, events)
    await request  # the server sees no cancellation
    await app.join()

    assert events[-1] == "next"
    assert (app.stats.failed, app.stats.succeeded) == (1, 1)


async def test_a_task_that_withdraws_its_timeouts_cancel_leaves_the_next_cancellable(
    events: list[object],
) -> None:
    second_started, dropped = asyncio.Event(), list[DroppedTask]()

    @task_options(timeout=0.01)
    async def withdraws_its_timeout() -> None:
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            asyncio.current_task().uncancel()  # type: ignore[union-attr]

    async def second() -> None:
        second_started.set()
        await asyncio.Event().wait()

    app = BackgroundTasksMiddleware(
        scheduling((withdraws_its_timeout,), (second,), (events.append, "third")),
        mode="inline",
        on_drop=dropped.append,
    )
    request = await start_request(app, events)
    await second_started.wait()

    request.cancel()
    with pytest.raises(asyncio.CancelledError):
        await request

    assert "third" not in events
    assert app.stats.timed_out == 1
    assert dropped_as(dropped) == [("append", "cancelled"), ("second", "cancelled")]


async def test_a_coroutine_a_plain_def_returns_after_its_timeout_never_runs(
    events: list[object],
) -> None:
    release = threading.Event()

    async def never_awaited() -> None:
        events.append("coroutine ran")

    @task_options(timeout=0.01)
    def returns_a_coroutine_late() -> Any:
        release.wait(timeout=HANG)
        return never_awaited()

    class ReleaseOnceTimedOut(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            release.set()

    logger = logging.getLogger("asgi_bgtasks")
    handler = ReleaseOnceTimedOut(logging.WARNING)
    logger.addHandler(handler)
    try:
        app = BackgroundTasksMiddleware(
            scheduling((returns_a_coroutine_late,), (events.append, "next")),
            mode="inline",
        )
        request = await start_request(app, events)
        await request
    finally:
        logger.removeHandler(handler)

    assert "coroutine ran" not in events
    assert events[-1] == "next"
    assert (app.stats.timed_out, app.stats.succeeded) == (1, 1)


@pytest.mark.parametrize("mode", ["inline", "detached"])
async def test_a_cancel_a_task_left_behind_ends_not_its_chain_while_it_waits(
    events: list[object], mode: str
) -> None:
    """A task that arranges for its own Task to be cancelled later, and
    returns: the cancellation lands while the chain waits to retry the next
    task, and reaches nothing: the retry runs."""
    fired = asyncio.Event()

    async def leaves_a_cancel_behind() -> None:
        me = asyncio.current_task()
        assert me is not None

        def cancel() -> None:
            me.cancel()
            fired.set()

        asyncio.get_running_loop().call_soon(cancel)

    @task_options(retries=1, retry_delay=0)
    async def fails_once() -> None:
        events.append("attempt")
        if events.count("attempt") == 1:
            await fired.wait()
            raise ConnectionError("smtp down")

    app = BackgroundTasksMiddleware(
        scheduling((leaves_a_cancel_behind,), (fails_once,)), mode=mode
    )
    request = await start_request(app, events)
    await request
    await app.join()

    assert events.count("attempt") == 2
    assert (app.stats.succeeded, app.stats.dropped) == (2, 0)
    assert_accounted(app.stats)


@pytest.mark.skipif(
    sys.version_info < (3, 12), reason="eager start: Python 3.12 and later"
)
async def test_an_inline_chain_whose_tasks_end_at_once_ends_within_the_calls_step(
    events: list[Any],
) -> None:
    async def at_once(label: str) -> None:
        events.append(label)

    app = BackgroundTasksMiddleware(
        scheduling((at_once, "first"), (at_once, "second")), mode="inline"
    )
    call = app(http_scope(), request_receive, Recorder(events))

    with pytest.raises(StopIteration):  # no loop turn was waited for
        call.send(None)
    assert events[-2:] == ["first", "second"]
    assert app.stats.succeeded == 2


@pytest.mark.parametrize("mode", ["inline", "detached"])
async def test_a_task_is_in_its_chains_task_from_its_first_step_to_its_last(
    mode: str,
) -> None:
    seen: list[asyncio.Task[Any] | None] = []

    async def twice() -> None:
        seen.append(asyncio.current_task())
        async with asyncio.timeout(60):  # bound to the Task of its first step
            await asyncio.sleep(0)
            seen.append(asyncio.current_task())

    app = BackgroundTasksMiddleware(scheduling((twice,)), mode=mode)
    request = asyncio.current_task()
    await app(http_scope(), request_receive, Recorder([]))
    await app.join()

    assert len(seen) == 2
    assert seen[0] is seen[1]
    assert seen[0] is not request
    assert app.stats.succeeded == 1


@pytest.mark.parametrize("mode", ["inline", "detached"])
async def test_a_task_that_cancels_itself_then_awaits_cancels_what_it_awaits(
    mode: str, events: list[Any]
) -> None:
    async def child() -> None:
        await asyncio.sleep(0)  # an eager task factory runs this step at once
        events.append("child finished")  # a cancelled Task never gets here

    async def cancels_itself_then_awaits() -> None:
        started = asyncio.get_running_loop().create_task(child())
        asyncio.current_task().cancel()  # type: ignore[union-attr]
        await started

    app = BackgroundTasksMiddleware(
        scheduling((cancels_itself_then_awaits,)), mode=mode
    )
    await app(http_scope(), request_receive, Recorder(events))
    await app.join()
    for _ in range(3):  # the child's first step, had it been left to run
        await asyncio.sleep(0)

    assert "child finished" not in events
    assert app.stats.failed == 1


async def test_the_server_cancelling_an_inline_call_lets_the_task_unwind_first(
    events: list[Any],
) -> None:
    async def cleans_up() -> None:
        try:
            await asyncio.Event().wait()
        finally:
            await asyncio.sleep(0)  # clean-up that awaits
            events.append("cleaned up")

    app = BackgroundTasksMiddleware(scheduling((cleans_up,)), mode="inline")
    request = await start_request(app, events)
    await asyncio.sleep(0)  # the task waits

    request.cancel()
    with pytest.raises(asyncio.CancelledError):
        await request

    assert events[-1] == "cleaned up"  # before the call returned
    assert app.stats.dropped == 1


async def test_the_server_cancelling_a_call_in_the_shutdown_grace_leaves_the_task_it(
    events: list[Any],
) -> None:
    unwinding, finish_unwinding = asyncio.Event(), asyncio.Event()

    async def unwinds_on_request() -> None:
        try:
            await asyncio.Event().wait()
        finally:
            unwinding.set()
            await asyncio.shield(finish_unwinding.wait())
            events.append("unwound")

    app = BackgroundTasksMiddleware(
        with_lifespan(scheduling((unwinds_on_request,)), events),
        mode="inline",
        shutdown_timeout=0,
    )
    lifespan = Lifespan(app)
    await lifespan.startup()
    request = await start_request(app, events)
    shutdown = asyncio.create_task(lifespan.shutdown())
    await unwinding.wait()  # the deadline passed: the task unwinds in its grace

    request.cancel()  # the server cancels the call meanwhile
    for _ in range(5):  # turns in which a shared wait would have ended
        await asyncio.sleep(0)
    assert not shutdown.done()  # the grace goes on
    finish_unwinding.set()
    await shutdown
    with contextlib.suppress(asyncio.CancelledError):
        await request

    assert events.index("unwound") < events.index("app saw shutdown")
