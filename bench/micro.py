"""Added cost per request, in one process and one event loop, in CPU time.

Every variant serves the same request (a start and a body message, a fresh
scope) through a server stub; its cost is its CPU time per request minus
its baseline's. Batches of all variants are interleaved round by round, in
a rotating order, and the median of the rounds is reported: drift and the
neighbours' load hit every variant alike. Time is this thread's CPU time,
not the wall clock, so time the machine gives to other processes is not
counted. It includes running every task to its end (the batch waits for
them), so detached modes are not flattered.
"""

import asyncio
import contextlib
import gc
import importlib.util
import statistics
import time
from collections.abc import (
    AsyncIterator,
    Awaitable,
    Callable,
    Iterator,
    MutableMapping,
    Sequence,
)
from dataclasses import dataclass
from typing import Any

from starlette.background import BackgroundTask
from starlette.responses import Response

from asgi_bgtasks import BackgroundTasksMiddleware, add_task
from bench.targets import show, target

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

# (name, variant, baseline, at most): the targets of issue 11.
TARGETS = [
    ("inline, one task", "ours, one task inline", "floor, one task", 2.5),
    ("no task", "ours, no task", "floor, no task", 1.5),
    ("detached vs inline", "ours, one task detached", "ours, one task inline", 2.0),
]


class Runs:
    """The no-op task counts its runs, so a batch can wait for all of them."""

    count = 0


async def noop() -> None:
    Runs.count += 1


async def receive() -> dict[str, Any]:
    return {"type": "http.request", "body": b"", "more_body": False}


async def send(message: MutableMapping[str, Any]) -> None:
    pass


async def serve_lifespan(receive: Any, send: Any) -> None:
    while (await receive())["type"] == "lifespan.startup":
        await send({"type": "lifespan.startup.complete"})
    await send({"type": "lifespan.shutdown.complete"})


async def bare(scope: Any, receive: Any, send: Any) -> None:
    await send(START)
    await send(BODY)


def scheduling(count: int = 1) -> App:
    """The bare app, plus ``count`` calls of our ``add_task(noop)``."""

    async def app(scope: Any, receive: Any, send: Any) -> None:
        for _ in range(count):
            add_task(noop)
        await send(START)
        await send(BODY)

    return app


class Floor:
    """The least a task middleware can do: wrap ``send``, see the final
    body, then await the request's tasks."""

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


async def nothing() -> None:
    pass


@dataclass
class Variant:
    name: str
    baseline: str  # the variant whose cost is subtracted
    app: App
    tasks: int = 0  # no-op tasks per request
    settle: Callable[[], Awaitable[None]] = nothing  # waits for its tasks
    scale: float = 1.0  # share of a batch's requests (for slow variants)
    # what holds around its batches (outside the timed part)
    around: Callable[[], contextlib.AbstractContextManager[None]] = (
        contextlib.nullcontext
    )


class Lifespan:
    """Runs an app's lifespan from startup until `shutdown`."""

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


@contextlib.asynccontextmanager
async def variants() -> AsyncIterator[list[Variant]]:
    """Every variant; asgi-background's only where it is installed."""
    detached = BackgroundTasksMiddleware(scheduling(), mode="detached")
    ours = BackgroundTasksMiddleware
    found = [
        Variant("bare app", "bare app", bare),
        Variant("floor, no task", "bare app", Floor(bare)),
        Variant("floor, one task", "bare app", Floor(floor_app), 1),
        Variant("ours, no task", "bare app", ours(bare)),
        Variant(
            "ours, one task inline", "bare app", ours(scheduling(), mode="inline"), 1
        ),
        Variant("ours, one task detached", "bare app", detached, 1, detached.join),
        Variant(
            "ours, ten tasks inline",
            "bare app",
            ours(scheduling(10), mode="inline"),
            10,
            scale=0.2,
        ),
        Variant("Starlette Response", "Starlette Response", starlette_plain),
        Variant(
            "Starlette, one BackgroundTask",
            "Starlette Response",
            starlette_background,
            1,
        ),
    ]
    found[5:5] = _observed()
    async with contextlib.AsyncExitStack() as stack:
        if importlib.util.find_spec("asgi_background"):
            found.append(await _asgi_background(stack))
        yield found


def _observed() -> list[Variant]:
    """One task inline with no observer at all (as where opentelemetry-api
    is not installed), and, where the SDK is installed, traced by an SDK
    tracer provider. The other variants of ours run with opentelemetry-api
    installed and no provider configured: its observer is asked once per
    request and declines."""
    untraced = BackgroundTasksMiddleware(scheduling(), mode="inline")
    untraced._runner.observers.clear()
    found = [Variant("ours, one task inline, no observer", "bare app", untraced, 1)]
    if importlib.util.find_spec("opentelemetry.sdk"):
        traced = BackgroundTasksMiddleware(scheduling(), mode="inline")
        found.append(
            Variant(
                "ours, one task inline, OTel SDK",
                "bare app",
                traced,
                1,
                around=_sdk_provider,
            )
        )
    return found


@contextlib.contextmanager
def _sdk_provider() -> Iterator[None]:
    """An SDK tracer provider whose spans go to an exporter that discards
    them, process-wide for one batch only: OpenTelemetry allows one provider
    per process, so its globals are reset afterwards, as its own test
    utilities do, and the other variants stay untraced."""
    from opentelemetry import trace
    from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
    from opentelemetry.sdk.trace.export import (
        SimpleSpanProcessor,
        SpanExporter,
        SpanExportResult,
    )
    from opentelemetry.util._once import Once

    class Discard(SpanExporter):
        def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
            return SpanExportResult.SUCCESS

    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(Discard()))
    trace.set_tracer_provider(provider)
    try:
        yield
    finally:
        trace._TRACER_PROVIDER_SET_ONCE = Once()
        trace._TRACER_PROVIDER = None


async def _asgi_background(stack: contextlib.AsyncExitStack) -> Variant:
    """asgi-background 0.2: an anyio task per task, started in its lifespan."""
    from asgi_background import BackgroundTaskMiddleware, BackgroundTasks

    async def app(scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return await serve_lifespan(receive, send)
        await BackgroundTasks(scope).add_task(noop)
        await send(START)
        await send(BODY)

    middleware = BackgroundTaskMiddleware(app)
    lifespan = Lifespan(middleware)
    await lifespan.startup()
    stack.push_async_callback(lifespan.shutdown)
    return Variant("asgi-background, one task", "bare app", middleware, 1, scale=0.1)


async def time_batch(variant: Variant, requests: int) -> float:
    """CPU microseconds per request for one batch, its tasks run to their end."""
    requests = max(int(requests * variant.scale), 1)
    app, settle = variant.app, variant.settle
    expected = Runs.count + requests * variant.tasks
    with variant.around():
        gc.collect()
        started = time.thread_time_ns()
        for _ in range(requests):
            await app(dict(SCOPE), receive, send)
            await asyncio.sleep(0)  # a server's loop turns between requests
        await settle()
        while Runs.count < expected:  # asgi-background has no join  # noqa: ASYNC110
            await asyncio.sleep(0)
        elapsed = time.thread_time_ns() - started
    return elapsed / requests / 1000


async def measure(requests: int = 2_000, rounds: int = 51) -> dict[str, Any]:
    """Per variant: median CPU µs per request, added µs over its baseline
    (the median of the rounds' differences) and their interquartile range;
    then each target of issue 11 with its ratio."""
    times: dict[str, list[float]] = {}
    async with variants() as found:
        for variant in found:  # warm up
            await time_batch(variant, requests)
        for round_ in range(rounds):
            turn = round_ % len(found)
            for variant in found[turn:] + found[:turn]:
                times.setdefault(variant.name, []).append(
                    await time_batch(variant, requests)
                )
    results: dict[str, Any] = {
        "requests": requests,
        "rounds": rounds,
        "variants": {},
        "targets": [],
    }
    for variant in found:
        added = [
            mine - base
            for mine, base in zip(
                times[variant.name], times[variant.baseline], strict=True
            )
        ]
        results["variants"][variant.name] = {
            "per_request": statistics.median(times[variant.name]),
            "added": statistics.median(added),
            "spread": _iqr(added),
        }
    added_us = {name: row["added"] for name, row in results["variants"].items()}
    for name, mine, base, at_most in TARGETS:
        ratio = added_us[mine] / added_us[base]
        results["targets"].append(
            target(
                f"{name}: added µs ≤ {at_most} x {base}",
                ratio <= at_most,
                f"{added_us[mine]:.2f} / {added_us[base]:.2f} = {ratio:.2f} x",
            )
        )
    return results


def _iqr(values: list[float]) -> float:
    quartiles = statistics.quantiles(values, n=4)
    return quartiles[2] - quartiles[0]


def report(results: dict[str, Any]) -> None:
    for name, row in results["variants"].items():
        print(
            f"{name:32} {row['per_request']:8.2f} µs CPU"
            f"  added {row['added']:+7.2f} µs (IQR {row['spread']:.2f})"
        )
    show(results["targets"])


if __name__ == "__main__":
    report(asyncio.run(measure()))
