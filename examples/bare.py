"""A bare ASGI app with background tasks. Run: ``hypercorn examples.bare:app``.

``POST /signup?email=...`` answers 201 at once; the welcome e-mail and a
notification go out after the response. ``GET /report`` streams a CSV and
logs the download once the last chunk is sent.
"""

import logging
from typing import Any
from urllib.parse import parse_qs

from asgi_bgtasks import BackgroundTasksMiddleware, add_task
from examples.tasks import (
    log_report_download,
    report_chunks,
    send_welcome_email,
    write_notification,
)

logging.basicConfig(level=logging.INFO)


async def start(send: Any, status: int, content_type: bytes) -> None:
    headers = [(b"content-type", content_type)]
    await send({"type": "http.response.start", "status": status, "headers": headers})


async def bare_app(scope: Any, receive: Any, send: Any) -> None:
    if scope["type"] != "http":
        return  # lifespan: the middleware answers it and drains tasks on shutdown
    if scope["method"] == "POST" and scope["path"] == "/signup":
        email = parse_qs(scope["query_string"].decode()).get("email", [""])[0]
        add_task(send_welcome_email, email)
        add_task(write_notification, "someone signed up")
        await start(send, 201, b"application/json")
        await send({"type": "http.response.body", "body": b'{"status": "welcome"}'})
    elif scope["path"] == "/report":
        add_task(log_report_download, "csv")
        await start(send, 200, b"text/csv")
        async for chunk in report_chunks():
            await send({"type": "http.response.body", "body": chunk, "more_body": True})
        await send({"type": "http.response.body", "body": b""})
    else:
        await start(send, 404, b"text/plain")
        await send({"type": "http.response.body", "body": b"not found"})


app = BackgroundTasksMiddleware(bare_app)
