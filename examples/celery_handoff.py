"""Durable hand-off: Celery on a Redis broker, behind the same ``add_task``.

Run, from the repository root, each in a terminal of its own (Debian:
``apt-get install redis-server``)::

    redis-server --bind 127.0.0.1 --port 6379 --save ''
    python -m aiosmtpd -n -l 127.0.0.1:8025
    celery -A examples.celery_handoff:celery worker --pool solo --loglevel INFO
    hypercorn examples.celery_handoff:app

``CELERY_BROKER_URL`` and ``CELERY_RESULT_BACKEND`` default to databases 0
and 1 of that Redis; e-mail goes to ``SMTP_PORT`` (see ``examples/tasks.py``).
With ``EXAMPLES_TRACE_FILE`` set (to a file per process), the web process and
the worker trace into that file (``examples/trace_file.py``), and a job's span
joins the trace of the request that enqueued it.

- ``POST /signup?email=...`` answers 201 with a job id at once. After the
  response, a background task enqueues the welcome e-mail job (a network
  round-trip to the broker); a Celery worker runs it, retries it, and keeps it
  through a restart of this web process. ``&fail=1`` answers 503, as when
  saving the member fails: nothing is enqueued.
- ``GET /jobs/{id}``: the job's state and result, from the result backend.
- ``POST /invite?email=a&email=b`` sends the invitations in this process, one
  after another. At shutdown, what the drain (``SHUTDOWN_TIMEOUT`` seconds,
  default 30) could not finish spills over to Celery through ``on_drop``.
"""

import contextlib
import logging
import os
import uuid
from collections.abc import AsyncIterator, Callable
from typing import Any

from celery import Celery
from celery.result import AsyncResult
from celery.signals import worker_process_init
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from asgi_bgtasks import (
    BackgroundTasksMiddleware,
    DroppedTask,
    TaskInfo,
    add_task,
)
from examples.tasks import record, send_email, send_welcome_email

logging.basicConfig(level=logging.INFO)
logger = logging.getLogger(__name__)

TRACE_FILE = os.environ.get("EXAMPLES_TRACE_FILE")  # unset: no tracing
if TRACE_FILE:
    from opentelemetry.instrumentation.asgi import OpenTelemetryMiddleware

    from examples.trace_file import trace_to_file

celery = Celery(
    "examples",
    broker=os.environ.get("CELERY_BROKER_URL", "redis://127.0.0.1:6379/0"),
    backend=os.environ.get("CELERY_RESULT_BACKEND", "redis://127.0.0.1:6379/1"),
)
celery.conf.update(
    # At least once: a job is acknowledged when it ends, so a job whose
    # worker dies is run again by another (make jobs safe to run twice).
    task_acks_late=True,
    task_reject_on_worker_lost=True,
    worker_prefetch_multiplier=1,
    broker_connection_retry_on_startup=True,
    # A Redis that is down fails an enqueue in about a second, instead of
    # holding a thread of the web process through 20 reconnection attempts.
    result_backend_transport_options={
        "retry_policy": {"max_retries": 3, "interval_step": 0.2, "interval_max": 0.5}
    },
)


@celery.task(autoretry_for=(OSError,), retry_backoff=True, max_retries=5)
def send_welcome_email_job(address: str) -> str:
    """Runs in a Celery worker: retried there if the SMTP server is down."""
    send_welcome_email(address)
    return "sent"


def enqueue_welcome_email(address: str, job: str) -> AsyncResult:
    """Runs in our background task: hands the job to the broker."""
    return send_welcome_email_job.apply_async((address,), task_id=job)


async def signup(request: Request) -> JSONResponse:
    job = str(uuid.uuid4())
    add_task(enqueue_welcome_email, request.query_params["email"], job)
    if "fail" in request.query_params:  # saving the member failed
        return JSONResponse({"error": "try again later"}, status_code=503)
    return JSONResponse({"status": "welcome", "job": job}, status_code=201)


def job_status(request: Request) -> JSONResponse:
    """A plain ``def``: reading the result backend blocks, so it runs in a thread."""
    job = celery.AsyncResult(request.path_params["job"])
    status: dict[str, Any] = {"job": job.id, "state": job.state}
    if job.successful():
        status["result"] = job.result
    return JSONResponse(status)


def send_invitation(address: str) -> None:
    send_email(address, "You are invited")


@celery.task(autoretry_for=(OSError,), retry_backoff=True, max_retries=5)
def send_invitation_job(address: str) -> str:
    """The same work as ``send_invitation``, for a Celery worker."""
    send_invitation(address)
    return "sent"


async def invite(request: Request) -> JSONResponse:
    addresses = request.query_params.getlist("email")
    for address in addresses:
        add_task(send_invitation, address)  # in this process, after the response
    return JSONResponse({"invited": len(addresses)}, status_code=202)


# What each task dropped at shutdown becomes, by its name: a Celery job.
SPILL_OVER: dict[str, Callable[..., AsyncResult]] = {
    "examples.celery_handoff.enqueue_welcome_email": enqueue_welcome_email,
    "examples.celery_handoff.send_invitation": send_invitation_job.delay,
}
SPILLED_OVER = "background task %s was dropped (%s): handed over to Celery as job %s"


def spill_over_to_celery(dropped: DroppedTask) -> None:
    """``on_drop``: a task that shutdown could not finish becomes a Celery job.

    One enqueue, on the event loop, before the app sees the shutdown. A task
    dropped because its request failed (a 5xx) is not run anywhere.
    """
    if dropped.reason in ("shutdown", "cancelled"):
        job = SPILL_OVER[dropped.name](*dropped.args, **dropped.kwargs)
        logger.warning(SPILLED_OVER, dropped.name, dropped.reason, job.id)


def report_failure(task: TaskInfo, error: BaseException) -> None:
    """``on_error``: where an error tracker would hear of it (no arguments)."""
    record("background task failed", task=task.name, error=type(error).__name__)


@worker_process_init.connect
def trace_worker_process(**kwargs: object) -> None:
    """In each worker process (solo pool: the worker itself), before its first
    job: a tracer provider, then the Celery instrumentation."""
    if TRACE_FILE:
        trace_to_file(TRACE_FILE)


@contextlib.asynccontextmanager
async def lifespan(app: Starlette) -> AsyncIterator[None]:
    """At the web process's start-up: the same, for the enqueues."""
    if TRACE_FILE:
        trace_to_file(TRACE_FILE)
    yield


web = Starlette(
    routes=[
        Route("/signup", signup, methods=["POST"]),
        Route("/jobs/{job}", job_status),
        Route("/invite", invite, methods=["POST"]),
    ],
    lifespan=lifespan,
)
if TRACE_FILE:  # the request's span, continuing the client's traceparent
    web = OpenTelemetryMiddleware(web, excluded_urls="/jobs")

app = BackgroundTasksMiddleware(
    web,
    shutdown_timeout=float(os.environ.get("SHUTDOWN_TIMEOUT", "30")),
    on_error=report_failure,
    on_drop=spill_over_to_celery,
)
