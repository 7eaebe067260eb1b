"""Quart with background tasks. Run: ``hypercorn examples.quart_app:app``.

``POST /register?email=...`` answers 201; our task sends the welcome e-mail
after the response, while Quart's own ``add_background_task`` writes a
notification beside it. ``GET /report`` streams a CSV; its download is logged
after the last chunk.
"""

import logging
from typing import Any

from quart import Quart, current_app, request

from asgi_bgtasks import BackgroundTasksMiddleware, add_task
from examples.tasks import (
    log_report_download,
    report_chunks,
    send_welcome_email,
    write_notification,
)

logging.basicConfig(level=logging.INFO)
app = Quart(__name__)
# Wrap the ASGI callable, not the Quart object: `app` stays a Quart app.
app.asgi_app = BackgroundTasksMiddleware(app.asgi_app)  # type: ignore[method-assign]


@app.post("/register")
async def register() -> tuple[dict[str, str], int]:
    add_task(send_welcome_email, request.args["email"])
    current_app.add_background_task(write_notification, "someone registered")
    return {"status": "welcome"}, 201


@app.get("/report")
async def report() -> tuple[Any, int, dict[str, str]]:
    add_task(log_report_download, "csv")
    return report_chunks(), 200, {"content-type": "text/csv"}
