"""Memory held by a pending detached task.

With ``max_concurrency=1`` and the first request's task waiting on a gate,
every later request's task stays pending; the Python memory traced while
they are scheduled (``tracemalloc``, after a full collection) divided by
their count is what one pending task holds; the lines that allocated it
are reported too.
"""

import asyncio
import gc
import tracemalloc
from pathlib import Path
from typing import Any

from asgi_bgtasks import BackgroundTasksMiddleware, add_task
from bench.micro import BODY, SCOPE, START, noop, receive, send
from bench.targets import show, target

ROOT = Path(__file__).resolve().parent.parent
TARGET_BYTES = 400


async def bytes_per_pending_task(count: int = 20_000) -> dict[str, Any]:
    gate = asyncio.Event()

    async def held() -> None:
        await gate.wait()

    async def app(scope: Any, receive: Any, send: Any) -> None:
        add_task(scope.get("bench.task", noop))
        await send(START)
        await send(BODY)

    middleware = BackgroundTasksMiddleware(
        app, mode="detached", max_concurrency=1, max_pending=count + 1
    )
    await middleware({**SCOPE, "bench.task": held}, receive, send)
    while middleware.stats.running == 0:  # noqa: ASYNC110
        await asyncio.sleep(0)
    gc.collect()
    tracemalloc.start()
    before = tracemalloc.take_snapshot()
    for _ in range(count):
        await middleware(dict(SCOPE), receive, send)
    gc.collect()
    growth = tracemalloc.take_snapshot().compare_to(before, "lineno")
    tracemalloc.stop()
    held_bytes = sum(stat.size_diff for stat in growth)
    pending = middleware.stats.pending
    gate.set()
    await middleware.join()
    per_task = held_bytes / count
    return {
        "tasks": count,
        "pending": pending,
        "bytes_per_task": per_task,
        "where": {  # the lines that allocated most of it, in bytes per task
            _where(stat.traceback[0]): stat.size_diff / count
            for stat in growth[:6]
            if stat.size_diff > 0
        },
        "targets": [
            target(
                f"memory: ≤ {TARGET_BYTES} bytes per pending detached task",
                per_task <= TARGET_BYTES and pending == count,
                f"{per_task:.0f} bytes ({pending:,} pending)",
            )
        ],
    }


def _where(frame: tracemalloc.Frame) -> str:
    path = Path(frame.filename)
    name = path.relative_to(ROOT) if path.is_relative_to(ROOT) else path.name
    return f"{name}:{frame.lineno}"


if __name__ == "__main__":
    found = asyncio.run(bytes_per_pending_task())
    for where, size in found["where"].items():
        print(f"{size:6.0f} B/task  {where}")
    show(found["targets"])
