"""A bare ASGI app with background tasks. Run: ``hypercorn examples.bare:app``.

``POST /signup?email=...`` answers 201 at once; the welcome e-mail (slow) and
an audit line (blocking) go out after the response. ``GET /events`` shows
what the tasks did, with ``time.monotonic()`` stamps.
"""

import asyncio
import json
import logging
import time
from typing import Any
from urllib.parse import parse_qs

from asgi_bgtasks import BackgroundTasksMiddleware, add_task

logging.basicConfig(level=logging.INFO)
logger = logging.getLogger("examples.bare")

events: list[dict[str, Any]] = []


def record(what: str) -> None:
    events.append({"event": what, "at": time.monotonic()})
    logger.info(what)


async def send_welcome_email(address: str) -> None:
    record("send_welcome_email started")
    await asyncio.sleep(0.5)  # stands in for a slow SMTP server
    record("send_welcome_email finished")


def write_audit_line(action: str) -> None:
    record(f"write_audit_line({action}) ran in a worker thread")


async def respond(send: Any, status: int, body: bytes) -> None:
    headers = [(b"content-type", b"application/json")]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


async def bare_app(scope: Any, receive: Any, send: Any) -> None:
    if scope["type"] != "http":
        return  # lifespan: the middleware answers it and drains tasks on shutdown
    if scope["method"] == "POST" and scope["path"] == "/signup":
        email = parse_qs(scope["query_string"].decode()).get("email", [""])[0]
        add_task(send_welcome_email, email)
        add_task(write_audit_line, "signup")
        await respond(send, 201, b'{"status": "welcome"}')
    elif scope["path"] == "/events":
        await respond(send, 200, json.dumps(events).encode())
    else:
        await respond(send, 404, b'{"error": "not found"}')


app = BackgroundTasksMiddleware(bare_app)
