"""Added cost per request, in one process and one event loop.

Every variant serves the same request with the same app (a start and a body
message) through a server stub; the cost of a variant is its time per request
minus its baseline's. Variants are interleaved round by round and the median
of the rounds is reported, so drift hits all of them alike. Time includes
running the scheduled tasks to completion (a join after each batch), so
detached modes are not flattered.
"""

import asyncio
import contextlib
import gc
import statistics
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from asgi_background import BackgroundTaskMiddleware as AsgiBackground
from asgi_background import BackgroundTasks as AsgiBackgroundTasks
from starlette.background import BackgroundTask
from starlette.responses import Response

from asgi_bgtasks import BackgroundTasksMiddleware, add_task

SCOPE = {
    "type": "http",
    "asgi": {"version": "3.0", "spec_version": "2.4"},
    "http_version": "1.1",
    "method": "GET",
    "path": "/",
    "raw_path": b"/",
    "query_string": b"",
    "headers": [],
}
START = {"type": "http.response.start", "status": 200, "headers": []}
BODY = {"type": "http.response.body", "body": b"ok"}
App = Callable[[Any, Any, Any], Awaitable[None]]


class Counter:
    """The no-op task counts its runs, so a batch can wait for all of them."""

    runs = 0
    expected = 0


async def noop() -> None:
    Counter.runs += 1


def sync_noop() -> None:
    Counter.runs += 1


async def receive() -> dict[str, Any]:
    return {"type": "http.request", "body": b"", "more_body": False}


async def send(message: dict[str, Any]) -> None:
    pass


# The apps -----------------------------------------------------------------


async def lifespan(receive: Any, send: Any) -> None:
    while (await receive())["type"] == "lifespan.startup":
        await send({"type": "lifespan.startup.complete"})
    await send({"type": "lifespan.shutdown.complete"})


async def bare(scope: Any, receive: Any, send: Any) -> None:
    if scope["type"] != "http":
        return await lifespan(receive, send)
    await send(START)
    await send(BODY)


def scheduling(func: Callable[[], Any], count: int = 1) -> App:
    """The bare app, plus ``count`` calls of our ``add_task(func)``."""

    async def app(scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return await lifespan(receive, send)
        for _ in range(count):
            add_task(func)
        await send(START)
        await send(BODY)

    return app


class PassThrough:
    """A middleware that only calls the app: the cost of one more layer."""

    def __init__(self, app: App) -> None:
        self.app = app

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        await self.app(scope, receive, send)


class Floor:
    """The least a middleware can do: watch for the final body, then await."""

    def __init__(self, app: App) -> None:
        self.app = app

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        tasks: list[Callable[[], Awaitable[None]]] = []
        scope["floor.tasks"] = tasks
        ended = False

        async def watch(message: dict[str, Any]) -> None:
            nonlocal ended
            if message["type"] == "http.response.body" and not message.get(
                "more_body", False
            ):
                ended = True
            await send(message)

        await self.app(scope, receive, watch)
        if ended:
            for task in tasks:
                await task()


async def floor_app(scope: Any, receive: Any, send: Any) -> None:
    scope["floor.tasks"].append(noop)
    await send(START)
    await send(BODY)


async def starlette_plain(scope: Any, receive: Any, send: Any) -> None:
    await Response(b"ok")(scope, receive, send)


async def starlette_background(scope: Any, receive: Any, send: Any) -> None:
    await Response(b"ok", background=BackgroundTask(noop))(scope, receive, send)


async def starlette_sync_background(scope: Any, receive: Any, send: Any) -> None:
    await Response(b"ok", background=BackgroundTask(sync_noop))(scope, receive, send)


async def asgi_background_app(scope: Any, receive: Any, send: Any) -> None:
    if scope["type"] != "http":
        return await lifespan(receive, send)
    await AsgiBackgroundTasks(scope).add_task(noop)
    await send(START)
    await send(BODY)


# Variants -----------------------------------------------------------------


@dataclass
class Variant:
    name: str
    baseline: str  # the variant whose time is subtracted
    app: App
    settle: Callable[[], Awaitable[None]]
    requests: int  # per round


async def nothing() -> None:
    pass


class Lifespan:
    """Starts an app's lifespan and keeps it running until ``shutdown``."""

    def __init__(self, app: App) -> None:
        self.to_app: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        self.from_app: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        scope = {"type": "lifespan", "asgi": {"version": "3.0"}, "state": {}}
        self.task = asyncio.ensure_future(
            app(scope, self.to_app.get, self.from_app.put)
        )

    async def startup(self) -> None:
        await self.to_app.put({"type": "lifespan.startup"})
        assert (await self.from_app.get())["type"] == "lifespan.startup.complete"

    async def shutdown(self) -> None:
        await self.to_app.put({"type": "lifespan.shutdown"})
        await self.from_app.get()
        await self.task


async def wait_for_runs(target: int) -> None:
    """asgi-background has no join: yield to its task group until all ran."""
    while Counter.runs < target:  # noqa: ASYNC110
        await asyncio.sleep(0)


@contextlib.asynccontextmanager
async def variants(requests: int) -> AsyncIterator[list[Variant]]:
    """Every variant, with lifespans started where a variant needs one."""
    detached = BackgroundTasksMiddleware(scheduling(noop), mode="detached")
    asgi_background = AsgiBackground(asgi_background_app)
    asgi_background_empty = AsgiBackground(bare)
    lifespans = [Lifespan(asgi_background), Lifespan(asgi_background_empty)]
    for lifespan in lifespans:
        await lifespan.startup()

    async def settle_asgi_background() -> None:
        await wait_for_runs(Counter.expected)

    inline = BackgroundTasksMiddleware
    sync_requests = max(requests // 20, 200)
    yield [
        Variant("bare app", "bare app", bare, nothing, requests),
        Variant("pass-through layer", "bare app", PassThrough(bare), nothing, requests),
        Variant("floor, no task", "bare app", Floor(bare), nothing, requests),
        Variant("floor, one task", "bare app", Floor(floor_app), nothing, requests),
        Variant("ours, no task", "bare app", inline(bare), nothing, requests),
        Variant(
            "ours, one async task inline",
            "bare app",
            inline(scheduling(noop), mode="inline"),
            nothing,
            requests,
        ),
        Variant(
            "ours, one async task detached",
            "bare app",
            detached,
            detached.join,
            requests,
        ),
        Variant(
            "ours, one sync task",
            "bare app",
            inline(scheduling(sync_noop), mode="inline"),
            nothing,
            sync_requests,
        ),
        Variant(
            "Starlette Response",
            "Starlette Response",
            starlette_plain,
            nothing,
            requests,
        ),
        Variant(
            "Starlette, one async BackgroundTask",
            "Starlette Response",
            starlette_background,
            nothing,
            requests,
        ),
        Variant(
            "Starlette, one sync BackgroundTask",
            "Starlette Response",
            starlette_sync_background,
            nothing,
            sync_requests,
        ),
        Variant(
            "asgi-background, no task",
            "bare app",
            asgi_background_empty,
            nothing,
            requests,
        ),
        Variant(
            "asgi-background, one task",
            "bare app",
            asgi_background,
            settle_asgi_background,
            requests,
        ),
    ]
    for lifespan in lifespans:
        await lifespan.shutdown()


async def time_batch(variant: Variant) -> float:
    """Microseconds per request for one batch, tasks finished included."""
    gc.collect()
    Counter.expected = Counter.runs + variant.requests
    app, requests = variant.app, variant.requests
    started = time.perf_counter_ns()
    for _ in range(requests):
        await app(dict(SCOPE), receive, send)
    await variant.settle()
    return (time.perf_counter_ns() - started) / requests / 1000


async def measure(
    requests: int = 20_000, rounds: int = 7
) -> dict[str, dict[str, float]]:
    """``{variant: {"per_request": µs, "added": µs over its baseline}}``."""
    times: dict[str, list[float]] = {}
    async with variants(requests) as all_variants:
        for variant in all_variants:  # warm up
            await time_batch(variant)
        for _ in range(rounds):
            for variant in all_variants:
                times.setdefault(variant.name, []).append(await time_batch(variant))
        baselines = {v.name: v.baseline for v in all_variants}
    medians = {name: statistics.median(values) for name, values in times.items()}
    return {
        name: {
            "per_request": medians[name],
            "added": medians[name] - medians[baselines[name]],
            "spread": (max(times[name]) - min(times[name])) / 2,
        }
        for name in medians
    }


if __name__ == "__main__":
    for name, result in asyncio.run(measure()).items():
        cost = f"{result['per_request']:8.2f} µs  added {result['added']:+7.2f} µs"
        print(f"{name:40} {cost}")
