"""Litestar with background tasks. Run: ``hypercorn examples.litestar_app:app``.

``POST /register?email=...`` answers 201; the welcome e-mail and a
notification go out after the response. ``GET /report`` streams a CSV; its
download is logged after the last chunk.
"""

import logging

from litestar import Litestar, get, post
from litestar.params import FromQuery
from litestar.response import Stream

from asgi_bgtasks import BackgroundTasksMiddleware, add_task
from examples.tasks import (
    log_report_download,
    report_chunks,
    send_welcome_email,
    write_notification,
)

logging.basicConfig(level=logging.INFO)


@post("/register")
async def register(email: FromQuery[str]) -> dict[str, str]:
    add_task(send_welcome_email, email)
    add_task(write_notification, "someone registered")
    return {"status": "welcome"}


@get("/report")
async def report() -> Stream:
    add_task(log_report_download, "csv")
    return Stream(report_chunks(), media_type="text/csv")


# Outermost: nothing that buffers the response may sit outside it.
app = BackgroundTasksMiddleware(Litestar([register, report]))
