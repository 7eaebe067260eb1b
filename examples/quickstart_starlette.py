"""Starlette quick start: save as main.py, run ``hypercorn main:app``."""

import asyncio
import logging

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from asgi_bgtasks import BackgroundTasksMiddleware, add_task

logging.basicConfig(level=logging.INFO)
logger = logging.getLogger("quickstart")


async def send_welcome_email(address: str) -> None:
    await asyncio.sleep(1)  # stands in for a slow mail server
    logger.info("welcome e-mail sent to %s", address)


async def register(request: Request) -> JSONResponse:
    add_task(send_welcome_email, request.query_params["email"])  # after the response
    return JSONResponse({"status": "welcome"}, status_code=201)


routes = [Route("/register", register, methods=["POST"])]
# Serve this: the middleware wraps the whole app, outermost.
app = BackgroundTasksMiddleware(Starlette(routes=routes))
