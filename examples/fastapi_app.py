"""FastAPI with background tasks. Run: ``hypercorn examples.fastapi_app:app``.

``POST /register`` shows a dependency and the handler adding to one ordered
list; ``POST /register-fastapi-style`` does the same job with FastAPI's own
``BackgroundTasks`` for comparison. ``POST /uploads`` (a CSV file) answers 202
and processes the file afterwards; ``GET /report`` streams a CSV.
"""

import logging
from typing import Annotated

from fastapi import BackgroundTasks, Depends, FastAPI, Request, UploadFile
from fastapi.responses import StreamingResponse

from asgi_bgtasks import BackgroundTasksMiddleware, add_task
from examples.tasks import (
    log_report_download,
    process_csv,
    record,
    report_chunks,
    send_welcome_email,
    write_notification,
)

logging.basicConfig(level=logging.INFO)
api = FastAPI()


def audit(path: str) -> None:
    record("access audited", path=path)


def audited(request: Request) -> None:
    """A dependency that schedules its own task, ahead of the handler's."""
    add_task(audit, request.url.path)


@api.post("/register", status_code=201, dependencies=[Depends(audited)])
async def register(email: str) -> dict[str, str]:
    add_task(send_welcome_email, email)
    add_task(write_notification, "someone registered")
    return {"status": "welcome"}


@api.post("/register-fastapi-style", status_code=201)
async def register_fastapi_style(
    email: str, tasks: BackgroundTasks, _: Annotated[None, Depends(audited)]
) -> dict[str, str]:
    # FastAPI's own list: runs inside the response, only for FastAPI responses.
    tasks.add_task(send_welcome_email, email)
    return {"status": "welcome"}


@api.post("/uploads", status_code=202)
async def upload(file: UploadFile) -> dict[str, str]:
    data = await file.read()  # read it now: the upload is closed after the response
    name = file.filename or "upload.csv"
    add_task(process_csv, name, data)
    return {"status": "processing", "name": name}


@api.get("/report")
async def report() -> StreamingResponse:
    add_task(log_report_download, "csv")
    return StreamingResponse(report_chunks(), media_type="text/csv")


# Outermost: nothing that buffers the response may sit outside it.
app = BackgroundTasksMiddleware(api)
