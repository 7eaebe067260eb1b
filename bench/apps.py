"""Apps served by hypercorn in the end-to-end benchmark (``bench/e2e.py``)."""

from typing import Any

from asgi_bgtasks import BackgroundTasksMiddleware, add_task

HEADERS = [(b"content-type", b"text/plain"), (b"content-length", b"2")]


async def noop() -> None:
    pass


async def bare(scope: Any, receive: Any, send: Any) -> None:
    if scope["type"] != "http":
        return  # no lifespan: hypercorn carries on without it
    await send({"type": "http.response.start", "status": 200, "headers": HEADERS})
    await send({"type": "http.response.body", "body": b"ok"})


async def one_task(scope: Any, receive: Any, send: Any) -> None:
    add_task(noop)
    await bare(scope, receive, send)


with_middleware = BackgroundTasksMiddleware(bare)
with_one_task = BackgroundTasksMiddleware(one_task)
with_one_task_inline = BackgroundTasksMiddleware(one_task, mode="inline")
