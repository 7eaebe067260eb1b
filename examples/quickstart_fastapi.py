"""FastAPI quick start: save as main.py, run ``fastapi run main.py``."""

import asyncio
import logging

from fastapi import FastAPI

from asgi_bgtasks import BackgroundTasksMiddleware, add_task

logging.basicConfig(level=logging.INFO)
logger = logging.getLogger("quickstart")
app = FastAPI()


async def send_welcome_email(address: str) -> None:
    await asyncio.sleep(1)  # stands in for a slow mail server
    logger.info("welcome e-mail sent to %s", address)


@app.post("/register", status_code=201)
async def register(email: str) -> dict[str, str]:
    add_task(send_welcome_email, email)  # runs after the response has been sent
    return {"status": "welcome"}


# Added last, after any other add_middleware: outside every other middleware.
app.add_middleware(BackgroundTasksMiddleware)
