"""Bare ASGI quick start: save as main.py, run ``hypercorn main:app``."""

import asyncio
import logging
from typing import Any
from urllib.parse import parse_qs

from asgi_bgtasks import BackgroundTasksMiddleware, add_task

logging.basicConfig(level=logging.INFO)
logger = logging.getLogger("quickstart")


async def send_welcome_email(address: str) -> None:
    await asyncio.sleep(1)  # stands in for a slow mail server
    logger.info("welcome e-mail sent to %s", address)


async def register(scope: Any, receive: Any, send: Any) -> None:
    if scope["type"] != "http":
        return  # lifespan: the middleware answers it and drains tasks on shutdown
    if scope["path"] != "/register":
        await send({"type": "http.response.start", "status": 404, "headers": []})
        await send({"type": "http.response.body", "body": b"not found"})
        return
    email = parse_qs(scope["query_string"].decode())["email"][0]
    add_task(send_welcome_email, email)  # runs after the response has been sent
    await send({"type": "http.response.start", "status": 201, "headers": []})
    await send({"type": "http.response.body", "body": b'{"status": "welcome"}'})


# Serve this: the middleware wraps the whole app, outermost.
app = BackgroundTasksMiddleware(register)
