"""Litestar quick start: save as main.py, run ``hypercorn main:app``."""

import asyncio
import logging

from litestar import Litestar, post

from asgi_bgtasks import BackgroundTasksMiddleware, add_task

logging.basicConfig(level=logging.INFO)
logger = logging.getLogger("quickstart")


async def send_welcome_email(address: str) -> None:
    await asyncio.sleep(1)  # stands in for a slow mail server
    logger.info("welcome e-mail sent to %s", address)


@post("/register")
async def register(email: str) -> dict[str, str]:
    add_task(send_welcome_email, email)  # runs after the response has been sent
    return {"status": "welcome"}


# Serve this, not the Litestar object: the middleware wraps it, outermost.
app = BackgroundTasksMiddleware(Litestar([register]))
