"""asgi_bgtasks.testing.settled: waits for the tasks and fails on theirs."""

import asyncio
from collections.abc import AsyncIterator

import httpx
import pytest
from helpers import BODY, scheduling

from asgi_bgtasks import BackgroundTasksMiddleware, add_task
from asgi_bgtasks.testing import settled

START_500 = {"type": "http.response.start", "status": 500, "headers": []}


async def get(app: BackgroundTasksMiddleware) -> httpx.Response:
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
        return await client.get("/")


async def test_block_ends_when_every_task_has_run(events: list[object]) -> None:
    app = BackgroundTasksMiddleware(
        scheduling((events.append, "task")), mode="detached"
    )

    async with settled(app):
        response = await get(app)

    assert response.status_code == 200
    assert events == ["task"]


async def test_a_failing_task_fails_the_test_with_its_own_exception() -> None:
    def send_receipt() -> None:
        raise ConnectionError("SMTP server down")

    app = BackgroundTasksMiddleware(scheduling((send_receipt,)))

    with pytest.raises(AssertionError, match="send_receipt failed") as raised:
        async with settled(app):
            await get(app)

    assert str(raised.value).startswith("1 background task(s) did not succeed")
    assert isinstance(raised.value.__cause__, ConnectionError)


async def test_dropped_tasks_fail_the_test_too(events: list[object]) -> None:
    async def fails_with_500(scope: object, receive: object, send: object) -> None:
        add_task(events.append, "never")
        await send(START_500)  # type: ignore[operator]
        await send(BODY)  # type: ignore[operator]

    app = BackgroundTasksMiddleware(fails_with_500)

    with pytest.raises(AssertionError, match="because the response status was 500"):
        async with settled(app):
            await get(app)
    assert events == []


async def test_block_waits_for_a_follow_up_a_task_adds_and_fails_on_it() -> None:
    def send_receipt() -> None:
        raise ConnectionError("SMTP server down")

    async def confirm() -> None:
        await asyncio.sleep(0)  # running, after the block's end began waiting
        add_task(send_receipt)  # the follow-up: scheduled by a running task

    app = BackgroundTasksMiddleware(scheduling((confirm,)), mode="detached")

    async def receive() -> dict[str, str]:
        return {"type": "http.disconnect"}

    async def send(message: object) -> None:
        pass

    with pytest.raises(AssertionError, match="send_receipt failed") as raised:
        async with settled(app):
            await app({"type": "http", "method": "GET", "path": "/"}, receive, send)

    assert isinstance(raised.value.__cause__, ConnectionError)
    assert app.stats.running == app.stats.pending == 0


async def test_earlier_failures_do_not_count(events: list[object]) -> None:
    def fails() -> None:
        raise ValueError("before the block")

    app = BackgroundTasksMiddleware(scheduling((fails,)))
    await get(app)  # a failure outside the block

    async with settled(app):
        pass

    assert app.stats.failed == 1


sent: list[str] = []


async def send_welcome_email(address: str) -> None:
    sent.append(address)


async def signup(scope: object, receive: object, send: object) -> None:
    add_task(send_welcome_email, "ann@example.com")
    await send({"type": "http.response.start", "status": 201, "headers": []})  # type: ignore[operator]
    await send({"type": "http.response.body", "body": b"welcome"})  # type: ignore[operator]


@pytest.fixture
async def app() -> AsyncIterator[BackgroundTasksMiddleware]:
    """The app under test; any test using it fails if a task of it fails."""
    app = BackgroundTasksMiddleware(signup)
    async with settled(app):
        yield app


async def test_signup_sends_a_welcome_email(app: BackgroundTasksMiddleware) -> None:
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
        response = await client.post("/signup")
    await app.join()

    assert response.status_code == 201
    assert sent[-1] == "ann@example.com"
