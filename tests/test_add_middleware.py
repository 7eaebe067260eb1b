"""``app.add_middleware(BackgroundTasksMiddleware, ...)``, added last, is a
supported arrangement: the contract holds with the middleware inside
Starlette's own ``ServerErrorMiddleware`` (which is what ``fastapi run`` and
``fastapi dev`` serve), and the test helpers find it inside the app."""

import asyncio
from collections.abc import AsyncIterator, Iterator
from contextlib import ExitStack, asynccontextmanager

import httpx
import pytest
from fastapi import FastAPI, HTTPException
from fastapi.responses import StreamingResponse
from fastapi.testclient import TestClient
from prometheus_client import CollectorRegistry, generate_latest

from asgi_bgtasks import BackgroundTasksMiddleware, DroppedTask, add_task, prometheus
from asgi_bgtasks.testing import settled


def make_app(events: list[str], **options: object) -> FastAPI:
    """An app that records its lifespan, its responses and its tasks."""

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        yield
        events.append("app saw shutdown")

    app = FastAPI(lifespan=lifespan)

    async def slow_task(name: str) -> None:
        await asyncio.sleep(0.05)  # any duration: the drain waits for it
        events.append(f"task {name}")

    @app.post("/register", status_code=201)
    async def register() -> dict[str, str]:
        add_task(events.append, "task register")
        return {"status": "welcome"}

    @app.post("/slow", status_code=202)
    async def slow() -> dict[str, str]:
        add_task(slow_task, "slow")
        return {"status": "accepted"}

    @app.post("/crash")
    async def crash() -> None:
        add_task(events.append, "task crash")
        raise RuntimeError("the endpoint failed")

    @app.post("/unavailable")
    async def unavailable() -> None:
        add_task(events.append, "task unavailable")
        raise HTTPException(status_code=503)

    @app.get("/report")
    async def report() -> StreamingResponse:
        async def chunks() -> AsyncIterator[bytes]:
            for n in (1, 2):
                events.append(f"chunk {n}")
                yield b"row\n"

        add_task(events.append, "task report")
        return StreamingResponse(chunks(), media_type="text/csv")

    app.add_middleware(BackgroundTasksMiddleware, **options)  # type: ignore[arg-type]
    return app


@pytest.fixture
def events() -> list[str]:
    return []


@pytest.fixture
def dropped() -> list[DroppedTask]:
    return []


class Client(TestClient):
    """FastAPI's TestClient, as FastAPI's docs use it: inside ``with`` it
    runs the lifespan (tasks detached, drained as the block ends); without,
    none (tasks inline, inside the request's call). ``end()`` ends the
    lifespan if it runs one."""

    running: ExitStack

    def end(self) -> None:
        self.running.close()


@pytest.fixture(params=["with lifespan", "without lifespan"])
def client(
    request: pytest.FixtureRequest, events: list[str], dropped: list[DroppedTask]
) -> Iterator[Client]:
    app = make_app(events, on_drop=dropped.append)
    client = Client(app, raise_server_exceptions=False)
    with ExitStack() as client.running:
        if request.param == "with lifespan":
            client.running.enter_context(client)
        yield client


def test_testclient_gets_the_response_and_the_task_runs(
    client: Client, events: list[str]
) -> None:
    response = client.post("/register")
    client.end()  # ends the lifespan, if it runs one

    assert response.status_code == 201
    assert events[0] == "task register"


def test_endpoint_crash_answered_500_by_server_error_middleware_drops_the_tasks(
    client: Client, events: list[str], dropped: list[DroppedTask]
) -> None:
    response = client.post("/crash")
    client.end()

    assert response.status_code == 500  # ServerErrorMiddleware, outside ours
    assert "task crash" not in events
    assert [(d.args, d.reason) for d in dropped] == [(("task crash",), "app_failed")]


def test_5xx_http_exception_drops_the_tasks(
    client: Client, events: list[str], dropped: list[DroppedTask]
) -> None:
    response = client.post("/unavailable")
    client.end()

    assert response.status_code == 503
    assert "task unavailable" not in events
    assert [d.reason for d in dropped] == ["error_response"]


def test_streaming_tasks_run_after_the_last_chunk(
    client: Client, events: list[str]
) -> None:
    response = client.get("/report")
    client.end()

    assert response.text == "row\nrow\n"
    assert events[:3] == ["chunk 1", "chunk 2", "task report"]


def test_lifespan_shutdown_drains_tasks_before_the_app_sees_it(
    events: list[str],
) -> None:
    with TestClient(make_app(events)) as client:
        response = client.post("/slow")
        assert events == []  # detached: the response did not wait for the task

    assert response.status_code == 202
    assert events == ["task slow", "app saw shutdown"]


async def test_settled_finds_the_middleware_the_app_added_and_fails_on_its_tasks(
    events: list[str],
) -> None:
    app = make_app(events)

    async def fails() -> None:
        raise ConnectionError("SMTP server down")

    @app.post("/fails", status_code=202)
    async def schedule_failing() -> None:
        add_task(fails)

    async def post_and_settle() -> None:
        transport = httpx.ASGITransport(app=app)
        async with (
            settled(app),
            httpx.AsyncClient(transport=transport, base_url="http://test") as client,
        ):
            await client.post("/fails")

    with pytest.raises(AssertionError, match="fails failed"):
        await post_and_settle()


def test_prometheus_register_finds_the_middleware_the_app_added(
    events: list[str],
) -> None:
    app = make_app(events)
    registry = CollectorRegistry()
    prometheus.register(app, registry)

    with TestClient(app) as client:
        client.post("/register")

    metrics = generate_latest(registry).decode()
    assert 'asgi_bgtasks_tasks_total{middleware="default",outcome="succeeded"} 1.0' in (
        metrics
    )
