"""The app the reliability tests serve under a real hypercorn.

Configured by environment: ``BGT_MODE``, ``BGT_MAX_CONCURRENCY``,
``BGT_MAX_PENDING``, ``BGT_TASK_TIMEOUT``, ``BGT_SHUTDOWN_TIMEOUT`` (the
middleware's options), ``BGT_SOAK_TASK_SECONDS`` (how long a soak task
sleeps), ``GATE_PORT`` (a ``tests/gate.py`` gate) and ``EXAMPLES_ACTIVITY``
(where ``record`` writes). ``GET /stats`` reports the middleware's stats; the
final stats are recorded when the app sees the lifespan shutdown, after the
middleware's drain.
"""

import asyncio
import json
import logging
import os
import time
from contextvars import ContextVar
from dataclasses import asdict
from typing import Any
from urllib.parse import parse_qs

from asgi_bgtasks import BackgroundTasksMiddleware, add_task
from examples.tasks import record

logging.basicConfig(level=logging.INFO)
request_id: ContextVar[str] = ContextVar("request_id")


class CallState:
    """Whether the request's ASGI call has returned (shared with its tasks)."""

    returned = False


call_state: ContextVar[CallState] = ContextVar("call_state")
soak_runs: list[tuple[str, str, str, bool]] = []


async def gated(n: str) -> None:
    """Wait at the test's gate until it lets this task through."""
    reader, writer = await asyncio.open_connection("127.0.0.1", GATE_PORT)
    record("started", n=n)
    try:
        await reader.readexactly(1)
    finally:
        writer.close()
    record("finished", n=n)


async def soak_task(n: str, token: str) -> None:
    """Note the arguments, the context it sees and whether it ran inline."""
    await asyncio.sleep(SOAK_TASK_SECONDS)
    inline = not call_state.get().returned
    soak_runs.append((n, token, request_id.get(), inline))


def fails() -> None:
    raise ValueError("task failed on purpose")


async def hangs() -> None:
    await asyncio.Event().wait()


async def adds_another() -> None:
    add_task(record, "added from inside a task")


async def blocks_the_loop() -> None:
    time.sleep(0.2)  # noqa: ASYNC251  a careless task blocks the loop briefly


async def raises_cancelled() -> None:
    raise asyncio.CancelledError


async def raises_keyboard_interrupt() -> None:
    raise KeyboardInterrupt


TASK_FAULTS = {
    "raises": fails,
    "hangs": hangs,
    "adds-from-a-task": adds_another,
    "blocks-the-loop": blocks_the_loop,
    "raises-cancelled-error": raises_cancelled,
    "raises-keyboard-interrupt": raises_keyboard_interrupt,
}


async def respond(send: Any, body: bytes, status: int = 200) -> None:
    headers = [(b"content-length", str(len(body)).encode())]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


async def misbehave(fault: str, receive: Any, send: Any) -> None:
    """Response faults: each schedules one task, then breaks the protocol."""
    add_task(record, f"task of {fault}")
    start = {"type": "http.response.start", "status": 200, "headers": []}
    if fault == "sends-nothing":
        return
    if fault == "body-without-start":
        await send({"type": "http.response.body", "body": b"no start"})
    elif fault == "sends-after-final":
        await respond(send, b"done")
        await send({"type": "http.response.body", "body": b"one too many"})
    else:  # "disconnect-then-raise" / "disconnect-then-return"
        await send(start)
        await send({"type": "http.response.body", "body": b"1", "more_body": True})
        while (await receive())["type"] != "http.disconnect":
            pass
        if fault == "disconnect-then-raise":
            raise OSError("the client went away")


async def reliability_app(scope: Any, receive: Any, send: Any) -> None:
    if scope["type"] == "lifespan":
        await lifespan(receive, send)
        return
    path = scope["path"]
    query = {k: v[0] for k, v in parse_qs(scope["query_string"].decode()).items()}
    if path == "/gated":
        add_task(gated, query["n"])
        await respond(send, b"queued")
    elif path == "/soak":
        request_id.set(query["n"])
        add_task(soak_task, query["n"], query["token"])
        await respond(send, b"ok")
    elif path == "/soak-runs":
        await respond(send, json.dumps(soak_runs).encode())
        if "clear" in query:
            soak_runs.clear()
    elif path == "/stats":
        await respond(send, json.dumps(asdict(app.stats)).encode())
    elif path.startswith("/task-fault/"):
        add_task(TASK_FAULTS[path.removeprefix("/task-fault/")])
        await respond(send, b"scheduled")
    elif path.startswith("/response-fault/"):
        await misbehave(path.removeprefix("/response-fault/"), receive, send)
    else:
        await respond(send, b"not found", 404)


async def lifespan(receive: Any, send: Any) -> None:
    while (await receive())["type"] != "lifespan.shutdown":
        await send({"type": "lifespan.startup.complete"})
    record("final stats", **asdict(app.stats))
    await send({"type": "lifespan.shutdown.complete"})


def marking_returned(inner: Any) -> Any:
    """Outermost: tell tasks whether the request's call has returned."""

    async def wrapper(scope: Any, receive: Any, send: Any) -> None:
        state = CallState()
        call_state.set(state)
        await inner(scope, receive, send)
        state.returned = True

    return wrapper


def _option(name: str, default: str | None) -> Any:
    value = os.environ.get(f"BGT_{name}", default)
    return None if value is None else float(value)


GATE_PORT = int(os.environ.get("GATE_PORT", "0"))
SOAK_TASK_SECONDS = float(os.environ.get("BGT_SOAK_TASK_SECONDS", "0"))
app = BackgroundTasksMiddleware(
    reliability_app,
    mode=os.environ.get("BGT_MODE", "auto"),  # type: ignore[arg-type]
    max_concurrency=int(_option("MAX_CONCURRENCY", "100")),
    max_pending=int(_option("MAX_PENDING", "10000")),
    task_timeout=_option("TASK_TIMEOUT", None),
    shutdown_timeout=_option("SHUTDOWN_TIMEOUT", "30"),
)
served = marking_returned(app)
