"""Durable hand-off: a Celery job enqueued after the response.

Run: ``hypercorn examples.celery_handoff:app`` with a broker in
``CELERY_BROKER_URL`` (e.g. ``redis://127.0.0.1:6379/0``) and a worker
(``celery -A examples.celery_handoff worker``). ``POST /signup?email=...``
answers 201 at once; the enqueue — a network round-trip to the broker — runs
after the response, and the e-mail is sent by a Celery worker, which
retries it and survives a restart of this web process.
"""

import logging
import os

from celery import Celery
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from asgi_bgtasks import BackgroundTasksMiddleware, add_task
from examples.tasks import send_welcome_email

logging.basicConfig(level=logging.INFO)
celery = Celery("examples", broker=os.environ.get("CELERY_BROKER_URL", "memory://"))


@celery.task(autoretry_for=(OSError,), retry_backoff=True, max_retries=5)
def send_welcome_email_job(address: str) -> None:
    """Runs in a Celery worker: retried there if the SMTP server is down."""
    send_welcome_email(address)


def enqueue_welcome_email(address: str) -> None:
    """Runs in our background task: hands the job to the broker."""
    send_welcome_email_job.delay(address)


async def signup(request: Request) -> JSONResponse:
    add_task(enqueue_welcome_email, request.query_params["email"])
    return JSONResponse({"status": "welcome"}, status_code=201)


app = BackgroundTasksMiddleware(
    Starlette(routes=[Route("/signup", signup, methods=["POST"])])
)
