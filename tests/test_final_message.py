"""Tasks start only once the final response message has been handed over."""

from typing import Any

import pytest
from helpers import (
    BODY,
    START_200,
    app_that,
    call,
    http_scope,
    recording_task,
    request_receive,
)

from asgi_bgtasks import BackgroundTasksMiddleware, add_task

START_WITH_TRAILERS = {**START_200, "trailers": True}

FINAL_ENDINGS = {
    "body without more_body": [START_200, {"type": "http.response.body"}],
    "body with more_body false": [
        START_200,
        {"type": "http.response.body", "body": b"x", "more_body": False},
    ],
    "pathsend": [START_200, {"type": "http.response.pathsend", "path": "/etc/hosts"}],
    "zerocopysend without more_body": [
        START_200,
        {"type": "http.response.zerocopysend", "file": 3},
    ],
    "trailers after announced trailers": [
        START_WITH_TRAILERS,
        {"type": "http.response.body", "body": b"x"},
        {"type": "http.response.trailers", "headers": []},
    ],
}

NOT_FINAL_ENDINGS = {
    "body with more_body": [
        START_200,
        {"type": "http.response.body", "body": b"x", "more_body": True},
    ],
    "zerocopysend with more_body": [
        START_200,
        {"type": "http.response.zerocopysend", "file": 3, "more_body": True},
    ],
    "body when trailers are announced": [
        START_WITH_TRAILERS,
        {"type": "http.response.body", "body": b"x"},
    ],
    "pathsend when trailers are announced": [
        START_WITH_TRAILERS,
        {"type": "http.response.pathsend", "path": "/etc/hosts"},
    ],
    "trailers with more_trailers": [
        START_WITH_TRAILERS,
        {"type": "http.response.body", "body": b"x"},
        {"type": "http.response.trailers", "headers": [], "more_trailers": True},
    ],
    "trailers that were not announced": [
        START_200,
        {"type": "http.response.body", "body": b"x", "more_body": True},
        {"type": "http.response.trailers", "headers": []},
    ],
}


async def test_tasks_run_after_final_body(events: list[object]) -> None:
    task = recording_task(events)
    app = BackgroundTasksMiddleware(
        app_that(START_200, BODY, schedule=[(task, ("task",))])
    )

    await call(app, events)

    assert events == ["http.response.start", "http.response.body", "task"]


async def test_tasks_run_after_final_body_of_stream(events: list[object]) -> None:
    task = recording_task(events)

    async def streaming(scope: object, receive: object, send: object) -> None:
        await send(START_200)
        for chunk in (b"a", b"b"):
            events.append(f"chunk {chunk.decode()} sent")
            await send({"type": "http.response.body", "body": chunk, "more_body": True})

            add_task(task, f"task from chunk {chunk.decode()}")
        await send({"type": "http.response.body", "body": b""})

    await call(BackgroundTasksMiddleware(streaming), events)

    assert events == [
        "http.response.start",
        "chunk a sent",
        "http.response.body",
        "chunk b sent",
        "http.response.body",
        "http.response.body",
        "task from chunk a",
        "task from chunk b",
    ]


@pytest.mark.parametrize("messages", FINAL_ENDINGS.values(), ids=FINAL_ENDINGS)
async def test_app_crash_after_final_message_still_runs_tasks(
    events: list[object], messages: list[dict[str, object]]
) -> None:
    task = recording_task(events)
    inner = app_that(*messages, schedule=[(task, ("task",))], raises=KeyError("late"))
    app = BackgroundTasksMiddleware(inner)

    with pytest.raises(KeyError, match="late"):
        await call(app, events)

    assert events[-1] == "task"
    assert app.stats.succeeded == 1


@pytest.mark.parametrize("messages", NOT_FINAL_ENDINGS.values(), ids=NOT_FINAL_ENDINGS)
async def test_app_crash_before_final_message_drops_tasks(
    events: list[object], messages: list[dict[str, object]]
) -> None:
    task = recording_task(events)
    inner = app_that(*messages, schedule=[(task, ("task",))], raises=KeyError("x"))
    app = BackgroundTasksMiddleware(inner)

    with pytest.raises(KeyError):
        await call(app, events)

    assert "task" not in events
    assert app.stats.dropped == 1


async def test_tasks_run_when_app_returns_after_start_without_final_message(
    events: list[object],
) -> None:
    task = recording_task(events)
    app = BackgroundTasksMiddleware(app_that(START_200, schedule=[(task, ("task",))]))

    await call(app, events)

    assert events == ["http.response.start", "task"]


async def test_tasks_are_dropped_when_app_sends_no_response(
    events: list[object], caplog: pytest.LogCaptureFixture
) -> None:
    task = recording_task(events)
    app = BackgroundTasksMiddleware(app_that(schedule=[(task, ("task",))]))

    await call(app, events)

    assert events == []
    assert app.stats.dropped == 1
    assert caplog.messages == [
        "dropped 1 background task(s) because the app sent no response: "
        "helpers.recording_task.<locals>.task"
    ]


async def test_tasks_added_after_final_message_run_too(events: list[object]) -> None:
    task = recording_task(events)

    async def inner(scope: object, receive: object, send: object) -> None:

        await send(START_200)
        await send(BODY)
        add_task(task, "added after the body")

    await call(BackgroundTasksMiddleware(inner), events)

    assert events == [
        "http.response.start",
        "http.response.body",
        "added after the body",
    ]


async def test_websocket_tasks_run_after_the_app_call_ends(
    events: list[object],
) -> None:
    task = recording_task(events)

    async def chat(scope: object, receive: object, send: object) -> None:

        add_task(task, "task")
        await send({"type": "websocket.close", "code": 1000})
        events.append("app call ending")

    scope = {"type": "websocket", "path": "/ws", "headers": []}
    await BackgroundTasksMiddleware(chat)(scope, _websocket_connect, _ignore)

    assert events == ["app call ending", "task"]


async def test_websocket_tasks_are_dropped_when_the_app_raises(
    events: list[object], caplog: pytest.LogCaptureFixture
) -> None:
    task = recording_task(events)
    app = BackgroundTasksMiddleware(
        app_that(schedule=[(task, ("task",))], raises=ConnectionError("boom"))
    )
    scope = {"type": "websocket", "path": "/ws", "headers": []}

    with pytest.raises(ConnectionError):
        await app(scope, _websocket_connect, _ignore)

    assert events == []
    assert caplog.messages == [
        "dropped 1 background task(s) because the app raised ConnectionError: "
        "helpers.recording_task.<locals>.task"
    ]


async def test_other_scope_types_pass_through_untouched(events: list[object]) -> None:
    seen: list[dict[str, object]] = []

    async def inner(scope: dict[str, object], receive: object, send: object) -> None:
        seen.append(dict(scope))

    await BackgroundTasksMiddleware(inner)(
        {"type": "custom"}, _websocket_connect, _ignore
    )

    assert seen == [{"type": "custom"}]


async def _websocket_connect() -> dict[str, object]:
    return {"type": "websocket.connect"}


async def _ignore(message: object) -> None:
    pass


@pytest.mark.parametrize("app_swallows_it", [False, True])
async def test_tasks_are_dropped_when_the_servers_send_of_the_final_body_raises(
    events: list[object], caplog: pytest.LogCaptureFixture, app_swallows_it: bool
) -> None:
    task = recording_task(events)

    async def app(scope: object, receive: object, send: Any) -> None:
        add_task(task, "task")
        await send(START_200)
        try:
            await send(BODY)
        except OSError:
            if not app_swallows_it:
                raise

    async def send_fails_on_body(message: dict[str, Any]) -> None:
        if message["type"] == "http.response.body":
            raise OSError("connection reset by peer")

    middleware = BackgroundTasksMiddleware(app)
    if app_swallows_it:
        await middleware(http_scope(), request_receive, send_fails_on_body)
    else:
        with pytest.raises(OSError, match="connection reset"):
            await middleware(http_scope(), request_receive, send_fails_on_body)

    assert events == []
    assert middleware.stats.dropped == 1
    assert caplog.messages == [
        "dropped 1 background task(s) because the server's send of the final "
        "response message raised: helpers.recording_task.<locals>.task"
    ]


async def test_a_late_start_after_the_final_message_changes_nothing(
    events: list[object],
) -> None:
    task = recording_task(events)
    late_error = {"type": "http.response.start", "status": 500, "headers": []}
    app = BackgroundTasksMiddleware(
        app_that(START_200, BODY, late_error, schedule=[(task, ("task",))])
    )

    await call(app, events)

    assert events[-1] == "task"
    assert app.stats.succeeded == 1
