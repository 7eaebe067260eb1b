"""Quart quick start: save as main.py, run ``hypercorn main:app``."""

import asyncio
import logging

from quart import Quart, request

from asgi_bgtasks import BackgroundTasksMiddleware, add_task

logging.basicConfig(level=logging.INFO)
logger = logging.getLogger("quickstart")
app = Quart(__name__)
# Wrap the ASGI callable, not the Quart object: `app` stays a Quart app.
app.asgi_app = BackgroundTasksMiddleware(app.asgi_app)  # type: ignore[method-assign]


async def send_welcome_email(address: str) -> None:
    await asyncio.sleep(1)  # stands in for a slow mail server
    logger.info("welcome e-mail sent to %s", address)


@app.post("/register")
async def register() -> tuple[dict[str, str], int]:
    add_task(send_welcome_email, request.args["email"])  # after the response
    return {"status": "welcome"}, 201
