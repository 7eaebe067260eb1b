"""How the cost grows: with tasks per request, and with pending detached tasks."""

import asyncio
import gc
import statistics
import time
import tracemalloc
from typing import Any

from asgi_bgtasks import BackgroundTasksMiddleware
from bench.micro import (
    SCOPE,
    Variant,
    bare,
    noop,
    nothing,
    receive,
    scheduling,
    send,
    time_batch,
)


async def tasks_per_request(
    counts: tuple[int, ...] = (0, 1, 10, 100), rounds: int = 5
) -> dict[int, dict[str, float]]:
    """``{k: {"per_request": µs, "per_task": µs}}`` with k tasks per request,
    inline; per task = (cost with k - cost of the bare app) / k."""
    batches: dict[int | str, Variant] = {
        "bare": Variant("bare app", "bare app", bare, nothing, 20_000)
    }
    for k in counts:
        app = BackgroundTasksMiddleware(scheduling(noop, k))
        requests = max(200, 20_000 // max(k, 1))
        batches[k] = Variant(f"{k} tasks", "bare app", app, app.join, requests)
    times: dict[int | str, list[float]] = {key: [] for key in batches}
    for _ in range(rounds):
        for key, variant in batches.items():
            times[key].append(await time_batch(variant))
    bare_us = statistics.median(times["bare"])
    results = {}
    for k in counts:
        cost = statistics.median(times[k])
        results[k] = {
            "per_request": cost,
            "per_task": (cost - bare_us) / k if k else 0.0,
        }
    return results


async def pending(count: int) -> dict[str, float]:
    """``count`` requests' tasks scheduled detached before any of them runs:
    the memory they hold (traced Python allocations) and the time per task
    until all have run (measured in a second, untraced pass)."""
    tracemalloc.start()
    app, _ = await _schedule(count)
    held = tracemalloc.get_traced_memory()[0]
    tracemalloc.stop()
    await app.join()
    app, started = await _schedule(count)
    await app.join()
    seconds = time.perf_counter() - started
    return {
        "memory_mib": held / 1024 / 1024,
        "bytes_per_task": held / count,
        "us_per_task": seconds / count * 1e6,
    }


async def _schedule(count: int) -> tuple[BackgroundTasksMiddleware, float]:
    app = BackgroundTasksMiddleware(
        scheduling(noop), mode="detached", max_pending=count
    )
    gc.collect()
    started = time.perf_counter()
    for _ in range(count):  # no await yields to the loop: nothing runs yet
        await app(dict(SCOPE), receive, send)
    assert app.stats.pending + app.stats.running == count
    return app, started


async def measure() -> dict[str, Any]:
    per_request_counts = await tasks_per_request()
    pending_counts = {n: await pending(n) for n in (1_000, 10_000, 100_000)}
    return {"tasks_per_request": per_request_counts, "pending": pending_counts}


if __name__ == "__main__":
    results = asyncio.run(measure())
    for k, row in results["tasks_per_request"].items():
        print(
            f"{k:4} tasks/request: {row['per_request']:9.2f} µs/request"
            f"  {row['per_task']:6.2f} µs/task"
        )
    for n, row in results["pending"].items():
        print(
            f"{n:7} pending: {row['memory_mib']:7.1f} MiB"
            f" ({row['bytes_per_task']:.0f} B/task), {row['us_per_task']:.2f} µs/task"
        )
