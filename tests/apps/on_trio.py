"""Apps for hypercorn's trio worker (`hypercorn -k trio`), where the
middleware must refuse to run (DESIGN.md, "Public API"): ``app`` sees
lifespan; ``without_lifespan`` answers lifespan itself, so the middleware
only sees requests, and tells what ``add_task`` raised."""

from typing import Any

from asgi_bgtasks import BackgroundTasksMiddleware, add_task


def never_runs() -> None:
    """A task that must never be scheduled under trio."""


async def schedules(scope: Any, receive: Any, send: Any) -> None:
    """Adds a task (but at ``/quiet``) and answers 200; 500 with what
    ``add_task`` raised, if it did."""
    if scope["path"] == "/quiet":
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"no task"})
        return
    try:
        add_task(never_runs)
    except RuntimeError as refused:
        body = f"RuntimeError: {refused}".encode()
        await send({"type": "http.response.start", "status": 500, "headers": []})
        await send({"type": "http.response.body", "body": body})
        return
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": b"scheduled"})


app = BackgroundTasksMiddleware(schedules)

_inner = BackgroundTasksMiddleware(schedules)


async def without_lifespan(scope: Any, receive: Any, send: Any) -> None:
    """Lifespan answered here: the middleware never sees it."""
    if scope["type"] == "lifespan":
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            else:
                await send({"type": "lifespan.shutdown.complete"})
                return
    await _inner(scope, receive, send)
