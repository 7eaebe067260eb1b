"""Dropped tasks are handed over, not lost (DESIGN.md, "Dropped tasks are
handed over"): every task that will not complete reaches ``on_drop`` once,
with its arguments and the reason; a thread that may yet finish does not."""

import asyncio
import threading
from collections.abc import Callable
from typing import Any

import pytest
from helpers import (
    BODY,
    START_200,
    Lifespan,
    assert_accounted,
    call,
    scheduling,
    start_request,
    with_lifespan,
)

from asgi_bgtasks import BackgroundTasksMiddleware, DroppedTask, add_task, task_options

HANG = 30  # seconds a blocked thread waits at most, should a test fail


async def send_email(address: str, *, subject: str) -> None:
    await asyncio.Event().wait()


def handed(dropped: list[DroppedTask]) -> list[tuple[str, str, object]]:
    """(function name, reason, first argument) of each task handed over."""
    return [
        (d.name.rsplit(".", 1)[-1], d.reason, d.args[0] if d.args else None)
        for d in dropped
    ]


async def shut_down_after(
    task: Callable[..., Any], argument: str, events: list[object], **options: Any
) -> BackgroundTasksMiddleware:
    """Serve one request that schedules ``task(argument)``, then shut down."""
    app = BackgroundTasksMiddleware(
        with_lifespan(scheduling((task, argument)), events), **options
    )
    lifespan = Lifespan(app)
    await lifespan.startup()
    await call(app, events)
    await lifespan.shutdown()
    return app


def app_ending(how: str) -> Callable[..., Any]:
    """An app that schedules a task, then ends its request as ``how`` says."""

    async def app(scope: Any, receive: Any, send: Any) -> None:
        add_task(send_email, "bob@example.com", subject="welcome")
        if how == "500":
            await send({**START_200, "status": 500})
            await send(BODY)
        elif how == "raises before the body":
            await send(START_200)
            raise RuntimeError("view bug")
        elif how == "sends nothing":
            return

    return app


@pytest.mark.parametrize(
    ("how", "reason"),
    [
        ("500", "error_response"),
        ("raises before the body", "app_failed"),
        ("sends nothing", "app_failed"),
    ],
)
@pytest.mark.parametrize("mode", ["inline", "detached"])
async def test_a_failed_requests_tasks_are_handed_over_with_their_arguments(
    how: str, reason: str, mode: str
) -> None:
    dropped: list[DroppedTask] = []
    app = BackgroundTasksMiddleware(app_ending(how), mode=mode, on_drop=dropped.append)

    try:
        await call(app, [])
    except RuntimeError:
        assert how == "raises before the body"

    assert dropped == [
        DroppedTask(
            func=send_email,
            args=("bob@example.com",),
            kwargs={"subject": "welcome"},
            name="test_on_drop.send_email",
            reason=reason,  # type: ignore[arg-type]
        )
    ]
    assert app.stats.dropped == 1


async def test_a_final_send_that_raised_hands_the_tasks_over_as_app_failed() -> None:
    dropped: list[DroppedTask] = []

    async def broken_send(message: Any) -> None:
        if message["type"] == "http.response.body":
            raise OSError("connection reset")

    app = BackgroundTasksMiddleware(
        scheduling((send_email, "bob@example.com")), on_drop=dropped.append
    )
    scope = {"type": "http", "path": "/", "headers": []}

    with pytest.raises(OSError, match="connection reset"):
        await app(scope, lambda: asyncio.sleep(0), broken_send)

    assert handed(dropped) == [("send_email", "app_failed", "bob@example.com")]


async def test_at_the_shutdown_deadline_running_and_pending_tasks_are_handed_over(
    events: list[object],
) -> None:
    dropped: list[DroppedTask] = []

    def on_drop(task: DroppedTask) -> None:
        events.append(f"handed over {task.args[0]}")
        dropped.append(task)

    async def started(label: str) -> None:
        events.append(f"{label} started")
        await asyncio.Event().wait()

    app = BackgroundTasksMiddleware(
        with_lifespan(
            scheduling((started, "first"), (send_email, "never started")), events
        ),
        shutdown_timeout=0.01,
        on_drop=on_drop,
    )
    lifespan = Lifespan(app)
    await lifespan.startup()
    await call(app, events)
    await asyncio.sleep(0)  # the detached chain starts its first task

    await lifespan.shutdown()

    assert events[-3:] == [
        "handed over never started",
        "handed over first",
        "app saw shutdown",
    ]
    assert handed(dropped) == [
        ("send_email", "shutdown", "never started"),
        ("started", "shutdown", "first"),
    ]
    assert (app.stats.dropped, app.stats.running) == (2, 0)


async def test_a_task_waiting_for_its_retry_at_the_deadline_is_handed_over(
    events: list[object],
) -> None:
    dropped: list[DroppedTask] = []

    @task_options(retries=1, retry_delay=60)
    async def flaky(address: str) -> None:
        events.append("attempt")
        raise ConnectionError("smtp down")

    # Shutdown returns at the deadline, not after the 60 s.
    app = await shut_down_after(
        flaky, "bob@example.com", events, shutdown_timeout=0.05, on_drop=dropped.append
    )

    assert handed(dropped) == [("flaky", "shutdown", "bob@example.com")]
    stats = app.stats
    assert (stats.dropped, stats.retried, stats.pending) == (1, 1, 0)
    assert events.count("attempt") == 1


async def test_tasks_of_a_request_that_ends_after_the_deadline_are_handed_over(
    events: list[object],
) -> None:
    dropped: list[DroppedTask] = []
    release = asyncio.Event()

    async def late(scope: Any, receive: Any, send: Any) -> None:
        if scope["path"] == "/late":
            await release.wait()
        add_task(send_email, scope["path"], subject="late")
        await send(START_200)
        await send(BODY)

    app = BackgroundTasksMiddleware(
        with_lifespan(late, events), shutdown_timeout=0.01, on_drop=dropped.append
    )
    lifespan = Lifespan(app)
    await lifespan.startup()
    await call(app, events, {"type": "http", "path": "/hangs"})  # till the deadline
    request = asyncio.create_task(call(app, events, {"type": "http", "path": "/late"}))
    await lifespan.shutdown()

    release.set()
    async with asyncio.timeout(30):  # its task hangs, were it run
        await request

    assert handed(dropped) == [
        ("send_email", "shutdown", "/hangs"),
        ("send_email", "shutdown", "/late"),
    ]


async def test_an_inline_chain_the_server_cancels_is_handed_over_as_cancelled(
    events: list[object],
) -> None:
    dropped: list[DroppedTask] = []
    entered = asyncio.Event()

    async def running(label: str) -> None:
        entered.set()
        await asyncio.Event().wait()

    app = BackgroundTasksMiddleware(
        scheduling((running, "running"), (send_email, "pending")),
        mode="inline",
        on_drop=dropped.append,
    )
    request = await start_request(app, events)
    await entered.wait()

    request.cancel()
    with pytest.raises(asyncio.CancelledError):
        await request

    assert handed(dropped) == [
        ("send_email", "cancelled", "pending"),
        ("running", "cancelled", "running"),
    ]
    assert_accounted(app.stats)


async def test_a_running_thread_is_not_handed_over_one_waiting_for_a_pool_thread_is(
    events: list[object], caplog: pytest.LogCaptureFixture
) -> None:
    dropped: list[DroppedTask] = []
    entered, release = threading.Event(), threading.Event()

    def blocks(label: str) -> None:
        entered.set()
        release.wait(timeout=HANG)
        events.append(f"{label} returned")

    async def schedules(scope: Any, receive: Any, send: Any) -> None:
        add_task(blocks, scope["path"])
        await send(START_200)
        await send(BODY)

    app = BackgroundTasksMiddleware(
        with_lifespan(schedules, events),
        max_threads=1,
        shutdown_timeout=0.01,
        on_drop=dropped.append,
    )
    lifespan = Lifespan(app)
    await lifespan.startup()
    await call(app, events, {"type": "http", "path": "in a thread"})
    await asyncio.to_thread(entered.wait)
    # A second request, whose task waits for the only pool thread.
    await call(app, events, {"type": "http", "path": "waiting"})
    await asyncio.sleep(0)  # its chain starts (deferred under a task factory)
    assert app.stats.running == 2  # waiting for a pool thread counts as running

    await lifespan.shutdown()

    assert handed(dropped) == [("blocks", "shutdown", "waiting")]
    assert app.stats.running == 1  # the thread that cannot be stopped
    release.set()
    await app.join()
    assert events.count("in a thread returned") == 1
    assert "waiting returned" not in events
    assert (app.stats.succeeded, app.stats.dropped) == (1, 1)


async def test_an_on_drop_that_raises_is_logged_and_the_others_are_still_handed_over(
    caplog: pytest.LogCaptureFixture,
) -> None:
    dropped: list[DroppedTask] = []

    def on_drop(task: DroppedTask) -> None:
        dropped.append(task)
        raise RuntimeError("database down")

    async def fails(scope: Any, receive: Any, send: Any) -> None:
        add_task(send_email, "first")
        add_task(send_email, "second")
        await send({**START_200, "status": 503})
        await send(BODY)

    app = BackgroundTasksMiddleware(fails, on_drop=on_drop)

    await call(app, [])

    assert [d.args for d in dropped] == [("first",), ("second",)]
    failures = [r for r in caplog.records if "on_drop raised" in r.getMessage()]
    assert [r.getMessage() for r in failures] == [
        "on_drop raised while handing over background task test_on_drop.send_email"
    ] * 2
    assert all(r.exc_info is not None for r in failures)
    assert "first" not in caplog.text  # never the arguments
    assert "second" not in caplog.text


async def test_a_task_cancelled_at_the_deadline_stays_dropped_past_its_own_timeout(
    events: list[object],
) -> None:
    dropped: list[DroppedTask] = []
    unwinding = asyncio.Event()

    @task_options(timeout=0.05)
    async def slow_to_unwind(label: str) -> None:
        try:
            await asyncio.Event().wait()
        finally:
            unwinding.set()
            await asyncio.sleep(0.1)  # its own timeout passes meanwhile

    app = await shut_down_after(
        slow_to_unwind, "slow", events, shutdown_timeout=0.01, on_drop=dropped.append
    )

    assert unwinding.is_set()
    assert handed(dropped) == [("slow_to_unwind", "shutdown", "slow")]
    assert (app.stats.dropped, app.stats.timed_out) == (1, 0)


async def test_a_clean_up_error_after_the_deadline_is_logged_and_the_task_dropped(
    events: list[object], caplog: pytest.LogCaptureFixture
) -> None:
    dropped: list[DroppedTask] = []

    async def rolls_back(label: str) -> None:
        try:
            await asyncio.Event().wait()
        finally:
            raise ConnectionError("rollback failed: connection closed")

    app = await shut_down_after(
        rolls_back, "order 7", events, shutdown_timeout=0.01, on_drop=dropped.append
    )

    assert handed(dropped) == [("rolls_back", "shutdown", "order 7")]
    assert (app.stats.dropped, app.stats.failed) == (1, 0)
    [record] = [r for r in caplog.records if "cancelled while running" in r.message]
    assert record.exc_info is not None
    assert isinstance(record.exc_info[1], ConnectionError)


async def test_a_callable_with_a_drop_hook_learns_of_its_own_drop() -> None:
    """Integrations (Django's result store) learn of their own tasks' drops
    through the callable's ``_asgi_bgtasks_dropped``, beside ``on_drop``."""

    class Job:
        def __init__(self) -> None:
            self.dropped: list[DroppedTask] = []

        async def __call__(self, address: str) -> None:
            raise AssertionError("a dropped task must not run")

        def _asgi_bgtasks_dropped(self, dropped: DroppedTask) -> None:
            self.dropped.append(dropped)

    async def fails(scope: Any, receive: Any, send: Any) -> None:
        add_task(job, "bob@example.com")
        await send({**START_200, "status": 500})
        await send(BODY)

    job, to_on_drop = Job(), list[DroppedTask]()
    app = BackgroundTasksMiddleware(fails, on_drop=to_on_drop.append)
    await call(app, [])
    assert (
        handed(job.dropped)
        == handed(to_on_drop)
        == [("Job", "error_response", "bob@example.com")]
    )
