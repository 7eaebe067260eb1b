"""Error responses and crashes drop a request's tasks, unless run_on_error."""

import asyncio

import pytest
from helpers import (
    BODY,
    START_200,
    app_that,
    call,
    lingering,
    recording_task,
    start_request,
)

from asgi_bgtasks import BackgroundTasksMiddleware, add_task

START_500 = {"type": "http.response.start", "status": 500, "headers": []}
START_503 = {"type": "http.response.start", "status": 503, "headers": []}
START_499 = {"type": "http.response.start", "status": 499, "headers": []}


def send_welcome_email(address: str) -> None:
    raise AssertionError("must not run")


async def audit(entry: str) -> None:
    raise AssertionError("must not run")


async def test_5xx_response_drops_tasks_with_one_warning_naming_them(
    caplog: pytest.LogCaptureFixture,
) -> None:
    app = BackgroundTasksMiddleware(
        app_that(
            START_503,
            BODY,
            schedule=[(send_welcome_email, ("bob@example.com",)), (audit, ("x",))],
        )
    )

    await call(app, [])

    assert caplog.messages == [
        "dropped 2 background task(s) because the response status was 503: "
        "test_error_responses.send_welcome_email, test_error_responses.audit"
    ]
    assert caplog.records[0].levelname == "WARNING"
    assert "bob@example.com" not in caplog.text
    assert app.stats.dropped == 2


async def test_4xx_response_still_runs_tasks(events: list[object]) -> None:
    task = recording_task(events)
    app = BackgroundTasksMiddleware(
        app_that(START_499, BODY, schedule=[(task, ("task",))])
    )

    await call(app, events)

    assert events[-1] == "task"


async def test_app_crash_drops_tasks_with_a_warning(
    caplog: pytest.LogCaptureFixture,
) -> None:
    app = BackgroundTasksMiddleware(
        app_that(START_200, schedule=[(audit, ("x",))], raises=ValueError("bug"))
    )

    with pytest.raises(ValueError, match="bug"):
        await call(app, [])

    assert caplog.messages == [
        "dropped 1 background task(s) because the app raised ValueError before "
        "its final response message: test_error_responses.audit"
    ]


@pytest.mark.parametrize(
    ("messages", "raises"),
    [
        ((START_500, BODY), None),
        ((START_200,), ValueError("crash")),
        ((), None),
    ],
    ids=["500 response", "crash", "no response"],
)
async def test_run_on_error_runs_the_tasks_anyway(
    events: list[object],
    messages: tuple[dict[str, object], ...],
    raises: BaseException | None,
) -> None:
    task = recording_task(events)
    app = BackgroundTasksMiddleware(
        app_that(*messages, schedule=[(task, ("task",))], raises=raises),
        run_on_error=True,
    )

    try:
        await call(app, events)
    except ValueError:
        assert raises is not None

    assert events[-1] == "task"
    assert app.stats.succeeded == 1


async def test_request_cancelled_after_its_response_loses_inline_tasks_loudly(
    events: list[object], caplog: pytest.LogCaptureFixture
) -> None:
    app = BackgroundTasksMiddleware(
        lingering((recording_task(events), "task")), mode="inline"
    )
    request = await start_request(app, events)
    request.cancel()

    with pytest.raises(asyncio.CancelledError):
        await request

    assert "task" not in events
    assert app.stats.dropped == 1
    assert caplog.messages == [
        "background task helpers.recording_task.<locals>.task did not finish: "
        "cancelled while pending"
    ]
    assert caplog.records[0].levelname == "ERROR"


async def test_request_cancelled_after_its_response_hands_tasks_to_detached(
    events: list[object],
) -> None:
    app = BackgroundTasksMiddleware(
        lingering((recording_task(events), "task")), mode="detached"
    )
    request = await start_request(app, events)
    request.cancel()

    with pytest.raises(asyncio.CancelledError):
        await request
    await app.join()

    assert events[-1] == "task"
    assert app.stats.succeeded == 1


async def test_request_cancelled_before_its_response_drops_tasks(
    caplog: pytest.LogCaptureFixture,
) -> None:
    scheduled = asyncio.Event()

    async def hangs(scope: object, receive: object, send: object) -> None:

        add_task(audit, "x")
        scheduled.set()
        await asyncio.Event().wait()

    app = BackgroundTasksMiddleware(hangs, mode="detached")
    request = asyncio.create_task(call(app, []))
    await scheduled.wait()
    request.cancel()

    with pytest.raises(asyncio.CancelledError):
        await request

    assert caplog.messages == [
        "dropped 1 background task(s) because the app was cancelled before "
        "its final response message: test_error_responses.audit"
    ]
