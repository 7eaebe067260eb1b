"""Raw-ASGI building blocks shared by the tests."""

import asyncio
from collections import defaultdict
from collections.abc import Callable, Iterable
from typing import Any

from asgi_bgtasks import add_task

Message = dict[str, Any]

START_200: Message = {"type": "http.response.start", "status": 200, "headers": []}
BODY: Message = {"type": "http.response.body", "body": b"ok"}


def http_scope(path: str = "/") -> dict[str, Any]:
    return {
        "type": "http",
        "asgi": {"version": "3.0", "spec_version": "2.4"},
        "http_version": "1.1",
        "method": "GET",
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "query_string": b"",
        "headers": [],
        "client": ("127.0.0.1", 1234),
        "server": ("127.0.0.1", 80),
    }


async def request_receive() -> Message:
    return {"type": "http.request", "body": b"", "more_body": False}


class Recorder:
    """A ``send`` that logs each message type into a shared event list."""

    def __init__(self, events: list[Any]) -> None:
        self.events = events
        self.messages: list[Message] = []
        self.body_sent = asyncio.Event()

    async def __call__(self, message: Message) -> None:
        self.messages.append(message)
        self.events.append(message["type"])
        if message["type"] == "http.response.body" and not message.get("more_body"):
            self.body_sent.set()


def recording_task(events: list[Any]) -> Callable[[str], Any]:
    """An async task that appends its label to ``events``."""

    async def task(label: str) -> None:
        events.append(label)

    return task


def app_that(
    *messages: Message,
    schedule: Iterable[tuple[Callable[..., Any], tuple[Any, ...]]] = (),
    raises: BaseException | None = None,
) -> Callable[..., Any]:
    """An app that schedules tasks, sends ``messages``, then maybe raises."""

    async def app(scope: Any, receive: Any, send: Any) -> None:
        for func, args in schedule:
            add_task(func, *args)
        for message in messages:
            await send(message)
        if raises is not None:
            raise raises

    return app


async def call(app: Any, events: list[Any], scope: Any = None) -> Recorder:
    """Call ``app`` with an HTTP scope, recording what it sends."""
    recorder = Recorder(events)
    await app(scope or http_scope(), request_receive, recorder)
    return recorder


async def start_request(
    app: Any, events: list[Any], path: str = "/"
) -> "asyncio.Task[None]":
    """Call ``app`` in a task; return once the response body has been sent."""
    recorder = Recorder(events)
    request = asyncio.create_task(app(http_scope(path), request_receive, recorder))
    await recorder.body_sent.wait()
    return request


class Gate:
    """Tasks that wait at a gate; the test sees each one arrive."""

    def __init__(self, events: list[Any]) -> None:
        self.events = events
        self.opened = asyncio.Event()
        self.arrived: defaultdict[str, asyncio.Event] = defaultdict(asyncio.Event)

    async def task(self, label: str) -> None:
        self.events.append(f"{label} started")
        self.arrived[label].set()
        await self.opened.wait()
        self.events.append(f"{label} done")


def assert_accounted(stats: Any) -> None:
    """The stats identity of the design contract."""
    assert stats.pending >= 0
    assert stats.running >= 0
    assert stats.scheduled == (
        stats.succeeded
        + stats.failed
        + stats.timed_out
        + stats.dropped
        + stats.running
        + stats.pending
    )


class Lifespan:
    """Drives the lifespan protocol of an app by hand."""

    def __init__(self, app: Any) -> None:
        self.app = app
        self.to_app: asyncio.Queue[Message] = asyncio.Queue()
        self.from_app: asyncio.Queue[Message] = asyncio.Queue()
        self.task: asyncio.Task[None] | None = None

    async def startup(self) -> Message:
        scope = {"type": "lifespan", "asgi": {"version": "3.0"}, "state": {}}
        self.task = asyncio.create_task(
            self.app(scope, self.to_app.get, self.from_app.put)
        )
        await self.to_app.put({"type": "lifespan.startup"})
        return await self.from_app.get()

    async def shutdown(self) -> Message:
        await self.to_app.put({"type": "lifespan.shutdown"})
        return await self.from_app.get()


def with_lifespan(http_app: Any, events: list[Any]) -> Callable[..., Any]:
    """Wrap ``http_app`` in an app that speaks lifespan and logs shutdown."""

    async def app(scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "lifespan":
            await http_app(scope, receive, send)
            return
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            else:
                events.append("app saw shutdown")
                await send({"type": "lifespan.shutdown.complete"})
                return

    return app


def scheduling(*tasks: tuple[Any, ...]) -> Callable[..., Any]:
    """An HTTP app that adds each ``(func, *args)`` and answers 200."""

    async def app(scope: Any, receive: Any, send: Any) -> None:
        for func, *args in tasks:
            add_task(func, *args)
        await send(START_200)
        await send(BODY)

    return app


def lingering(*tasks: tuple[Any, ...]) -> Callable[..., Any]:
    """Like `scheduling`, but the app call then waits until cancelled."""
    respond = scheduling(*tasks)

    async def app(scope: Any, receive: Any, send: Any) -> None:
        await respond(scope, receive, send)
        await asyncio.Event().wait()

    return app
