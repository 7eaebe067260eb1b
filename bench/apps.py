"""The apps that ``bench/servers.py`` serves, chosen by environment variables.

``BENCH_FRAMEWORK`` is ``starlette`` or ``fastapi``; ``BENCH_VARIANT`` one of

- ``reference``: the framework's own ``BackgroundTasks``, one task a request;
- ``none``: ours installed, no task;
- ``inline`` / ``detached``: ours, one ``add_task`` a request, in that mode;
- ``default``: ours, one ``add_task`` a request, default options.

The task is ``asyncio.sleep(BENCH_TASK_SECONDS)``; when that is 0, it is
``BENCH_TASK_SHAPE``: ``noop`` (nothing) or ``io`` (``asyncio.sleep(0)``,
one suspension, as any task doing I/O).
``BENCH_MAX_PENDING`` sets ours' ``max_pending``. ``POST /`` answers ``ok``;
``GET /stats`` answers JSON: tasks finished (``finished``) and added but not
yet finished (``outstanding``), our middleware's ``pending`` and
``running``, and with ``BENCH_GC_SAVEALL=1`` the objects that only the cycle
collector could free since the last call (``garbage``, ``garbage_types``).
"""

import asyncio
import gc
import os
from collections import Counter
from typing import Any

from fastapi import BackgroundTasks as FastAPIBackgroundTasks
from fastapi import FastAPI
from starlette.applications import Starlette
from starlette.background import BackgroundTasks
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import Route

from asgi_bgtasks import BackgroundTasksMiddleware, add_task

FRAMEWORK = os.environ.get("BENCH_FRAMEWORK", "starlette")
VARIANT = os.environ.get("BENCH_VARIANT", "reference")
TASK_SECONDS = float(os.environ.get("BENCH_TASK_SECONDS") or 0)
TASK_SUSPENDS = os.environ.get("BENCH_TASK_SHAPE", "noop") == "io"
MAX_PENDING = os.environ.get("BENCH_MAX_PENDING")
GC_SAVEALL = os.environ.get("BENCH_GC_SAVEALL") == "1"


class Tally:
    """Tasks added and finished, counted the same way for every variant."""

    added = 0
    finished = 0


async def task() -> None:
    if TASK_SECONDS:
        await asyncio.sleep(TASK_SECONDS)
    elif TASK_SUSPENDS:
        await asyncio.sleep(0)
    Tally.finished += 1


def stats() -> dict[str, Any]:
    report: dict[str, Any] = {
        "finished": Tally.finished,
        "outstanding": Tally.added - Tally.finished,
    }
    if isinstance(app, BackgroundTasksMiddleware):
        snapshot = app.stats
        report |= {"pending": snapshot.pending, "running": snapshot.running}
    if GC_SAVEALL:
        gc.collect()
        types = Counter(type(thing).__qualname__ for thing in gc.garbage)
        report |= {"garbage": len(gc.garbage), "garbage_types": types.most_common(8)}
        gc.garbage.clear()
    return report


def respond_with_ours() -> Response:
    if VARIANT != "none":
        Tally.added += 1
        add_task(task)
    return PlainTextResponse("ok")


async def starlette_ours(request: Request) -> Response:
    return respond_with_ours()


async def starlette_reference(request: Request) -> Response:
    Tally.added += 1
    tasks = BackgroundTasks()
    tasks.add_task(task)
    return PlainTextResponse("ok", background=tasks)


async def stats_route(request: Request) -> Response:
    return JSONResponse(stats())


def starlette_app() -> Starlette:
    endpoint = starlette_reference if VARIANT == "reference" else starlette_ours
    return Starlette(
        routes=[
            Route("/", endpoint, methods=["POST"]),
            Route("/stats", stats_route, methods=["GET"]),
        ]
    )


def fastapi_app() -> FastAPI:
    api = FastAPI()
    if VARIANT == "reference":

        @api.post("/")
        async def reference(background_tasks: FastAPIBackgroundTasks) -> Response:
            Tally.added += 1
            background_tasks.add_task(task)
            return PlainTextResponse("ok")

    else:

        @api.post("/")
        async def with_ours() -> Response:
            return respond_with_ours()

    api.get("/stats")(stats_route)
    return api


def build() -> Any:
    framework_app = starlette_app() if FRAMEWORK == "starlette" else fastapi_app()
    if VARIANT == "reference":
        return framework_app
    options: dict[str, Any] = {}
    if VARIANT in ("inline", "detached"):
        options["mode"] = VARIANT
    if MAX_PENDING:
        options["max_pending"] = int(MAX_PENDING)
    return BackgroundTasksMiddleware(framework_app, **options)


if GC_SAVEALL:
    gc.set_debug(gc.DEBUG_SAVEALL)
app = build()
