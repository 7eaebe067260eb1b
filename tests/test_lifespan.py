"""Lifespan: drain before the app sees shutdown; speak it for apps that don't."""

import asyncio

import pytest
from helpers import Gate, Lifespan, call, http_scope, scheduling, with_lifespan

from asgi_bgtasks import BackgroundTasksMiddleware

COMPLETE = {"type": "lifespan.startup.complete"}
SHUTDOWN_COMPLETE = {"type": "lifespan.shutdown.complete"}
UNSUPPORTED = (
    "the app does not handle lifespan (it {}); BackgroundTasksMiddleware "
    "completes the lifespan protocol itself so that tasks drain on shutdown"
)
DETACHED = (
    "lifespan startup seen: background tasks run detached and are drained "
    "on shutdown for up to 30.0 s"
)


async def test_shutdown_drains_tasks_before_the_app_sees_shutdown(
    events: list[object],
) -> None:
    gate = Gate(events)
    app = BackgroundTasksMiddleware(
        with_lifespan(scheduling((gate.task, "task")), events)
    )
    lifespan = Lifespan(app)
    await lifespan.startup()
    await call(app, events)
    await gate.arrived["task"].wait()

    await lifespan.to_app.put({"type": "lifespan.shutdown"})
    for _ in range(20):  # loop turns, not time: shutdown must wait for the task
        await asyncio.sleep(0)
    assert "app saw shutdown" not in events
    gate.opened.set()

    assert await lifespan.from_app.get() == SHUTDOWN_COMPLETE
    assert events[-2:] == ["task done", "app saw shutdown"]
    assert app.stats.succeeded == 1


@pytest.mark.parametrize("task_timeout", [None, 60.0])
async def test_shutdown_timeout_cancels_and_logs_each_unfinished_task(
    events: list[object], caplog: pytest.LogCaptureFixture, task_timeout: float | None
) -> None:
    gate = Gate(events)
    app = BackgroundTasksMiddleware(
        with_lifespan(scheduling((gate.task, "first"), (gate.task, "second")), events),
        max_concurrency=1,
        shutdown_timeout=0.01,
        task_timeout=task_timeout,
    )
    lifespan = Lifespan(app)
    await lifespan.startup()
    await call(app, events)  # a chain: first runs, second waits behind it
    await call(app, events)  # another chain, queued for the only slot
    await gate.arrived["first"].wait()

    assert await lifespan.shutdown() == SHUTDOWN_COMPLETE

    name = "helpers.Gate.task"
    assert caplog.messages[1:] == [
        "shutdown: waiting up to 0.01 s for 4 unfinished background task(s)",
        f"background task {name} did not finish: cancelled while running",
        f"shutdown: 3 background task(s) {name} did not start: dropped while pending",
    ]
    assert {r.levelname for r in caplog.records[2:]} == {"ERROR"}
    assert app.stats.dropped == 4
    assert (app.stats.running, app.stats.pending) == (0, 0)
    assert events[-1] == "app saw shutdown"


@pytest.mark.parametrize(
    ("behaviour", "logged"),
    [
        ("raise", "raised ValueError: Django can only handle ASGI/HTTP connections"),
        ("return", "returned"),
    ],
)
async def test_app_without_lifespan_gets_the_protocol_completed_and_drained(
    events: list[object],
    caplog: pytest.LogCaptureFixture,
    behaviour: str,
    logged: str,
) -> None:
    http = scheduling((events.append, "task"))

    async def django_like(scope: dict[str, str], receive: object, send: object) -> None:
        if scope["type"] != "http":
            if behaviour == "raise":
                raise ValueError("Django can only handle ASGI/HTTP connections")
            return
        await http(scope, receive, send)

    app = BackgroundTasksMiddleware(django_like)
    lifespan = Lifespan(app)

    assert await lifespan.startup() == COMPLETE
    await call(app, events)
    assert await lifespan.shutdown() == SHUTDOWN_COMPLETE

    assert caplog.messages[:2] == [UNSUPPORTED.format(logged), DETACHED]
    assert (app.stats.succeeded, events[-1]) == (1, "task")
    assert caplog.records[0].levelname == "INFO"
    assert events[-1] == "task"
    assert app.stats.succeeded == 1


async def test_app_that_fails_after_receiving_startup_warns_and_is_completed(
    caplog: pytest.LogCaptureFixture,
) -> None:
    async def half_lifespan(scope: object, receive: object, send: object) -> None:
        await receive()  # type: ignore[operator]
        raise OSError("cache unreachable")

    app = BackgroundTasksMiddleware(half_lifespan)
    lifespan = Lifespan(app)

    assert await lifespan.startup() == COMPLETE
    assert await lifespan.shutdown() == SHUTDOWN_COMPLETE
    assert caplog.records[0].levelname == "WARNING"
    assert caplog.messages[0] == (
        "the app received lifespan.startup but raised OSError: cache unreachable "
        "without answering it; BackgroundTasksMiddleware completes the lifespan "
        "protocol itself so that tasks drain on shutdown"
    )
    assert caplog.records[0].exc_info is not None


async def test_startup_failed_passes_through_and_tasks_stay_inline(
    events: list[object],
) -> None:
    http = scheduling((events.append, "task"))

    async def failing_startup(
        scope: dict[str, str], receive: object, send: object
    ) -> None:
        if scope["type"] == "lifespan":
            await receive()  # type: ignore[operator]
            await send({"type": "lifespan.startup.failed", "message": "no db"})  # type: ignore[operator]
            return
        await http(scope, receive, send)

    app = BackgroundTasksMiddleware(failing_startup)

    assert await Lifespan(app).startup() == {
        "type": "lifespan.startup.failed",
        "message": "no db",
    }
    await call(app, events, http_scope())
    events.append("call returned")
    assert events[-2:] == ["task", "call returned"]


async def test_app_crashing_after_startup_complete_propagates() -> None:
    async def crashes_later(scope: object, receive: object, send: object) -> None:
        await receive()  # type: ignore[operator]
        await send(COMPLETE)  # type: ignore[operator]
        await receive()  # type: ignore[operator]
        raise RuntimeError("shutdown hook failed")

    app = BackgroundTasksMiddleware(crashes_later)
    lifespan = Lifespan(app)
    await lifespan.startup()
    await lifespan.to_app.put({"type": "lifespan.shutdown"})

    assert lifespan.task is not None
    with pytest.raises(RuntimeError, match="shutdown hook failed"):
        await lifespan.task


async def test_nested_middleware_both_drain_on_shutdown(events: list[object]) -> None:
    inner = BackgroundTasksMiddleware(
        with_lifespan(scheduling((events.append, "task")), events)
    )
    outer = BackgroundTasksMiddleware(inner)
    lifespan = Lifespan(outer)
    await lifespan.startup()
    await call(outer, events)

    assert await lifespan.shutdown() == SHUTDOWN_COMPLETE
    assert events[-2:] == ["task", "app saw shutdown"]
    assert events.count("task") == 1
