"""Every scheduled task is counted once; the stats identity always holds."""

import asyncio
import contextlib
import dataclasses
import itertools
import random
from typing import Any

import pytest
from helpers import (
    BODY,
    START_200,
    Lifespan,
    assert_accounted,
    call,
    http_scope,
    with_lifespan,
)

from asgi_bgtasks import BackgroundTasksMiddleware, Stats, add_task
from asgi_bgtasks._stats import Ledger


async def test_stats_is_an_immutable_snapshot() -> None:
    app = BackgroundTasksMiddleware(with_lifespan(lambda *a: None, []))
    before = app.stats

    with pytest.raises(dataclasses.FrozenInstanceError):
        before.scheduled = 1  # type: ignore[misc]
    assert before == Stats(
        scheduled=0,
        succeeded=0,
        failed=0,
        timed_out=0,
        dropped=0,
        running=0,
        pending=0,
        retried=0,
    )


@pytest.mark.parametrize("mode", ["inline", "detached"])
async def test_identity_holds_at_every_step_under_concurrent_mixed_load(
    mode: str,
) -> None:
    rng = random.Random(20261122)
    samples: list[Stats] = []
    middleware: list[BackgroundTasksMiddleware] = []

    def sample() -> None:
        samples.append(middleware[0].stats)

    async def ok() -> None:
        sample()
        await asyncio.sleep(0)

    def blocking_ok() -> None:
        pass

    async def fails() -> None:
        sample()
        raise ValueError("task bug")

    async def hangs() -> None:
        await asyncio.Event().wait()

    kinds = {"ok": ok, "sync": blocking_ok, "fails": fails, "hangs": hangs}
    plans = [
        (
            rng.choice(["200", "200", "200", "500", "crash"]),
            [rng.choice(["ok", "sync", "fails"]) for _ in range(rng.randint(0, 3))],
        )
        for _ in range(300)
    ]
    for n in rng.sample(range(len(plans)), 6):  # a few, each holds a slot 3 s
        plans[n][1].append("hangs")

    async def app(scope: dict[str, str], receive: object, send: object) -> None:
        outcome, plan = plans[int(scope["path"][1:])]
        for kind in plan:
            add_task(kinds[kind])
            sample()
        await asyncio.sleep(0)
        status = 500 if outcome == "500" else 200
        await send({"type": "http.response.start", "status": status, "headers": []})  # type: ignore[operator]
        if outcome == "crash":
            raise RuntimeError("view bug")
        await send(BODY)  # type: ignore[operator]

    middleware.append(
        BackgroundTasksMiddleware(
            with_lifespan(app, []), mode=mode, max_concurrency=20, task_timeout=3
        )
    )  # type: ignore[arg-type]
    lifespan = Lifespan(middleware[0])
    await lifespan.startup()

    async def request(n: int) -> None:
        sample()
        with contextlib.suppress(RuntimeError):
            await call(middleware[0], [], http_scope(f"/{n}"))
        sample()

    await asyncio.gather(*(request(n) for n in range(len(plans))))
    await middleware[0].join()
    await lifespan.shutdown()

    for stats in samples:
        assert_accounted(stats)
    final = middleware[0].stats
    runs = [kinds_ for outcome, kinds_ in plans if outcome == "200"]
    flat = [kind for plan in runs for kind in plan]
    assert final == Stats(
        scheduled=sum(len(plan) for _, plan in plans),
        succeeded=flat.count("ok") + flat.count("sync"),
        failed=flat.count("fails"),
        timed_out=flat.count("hangs"),
        dropped=sum(len(plan) for outcome, plan in plans if outcome != "200"),
        running=0,
        pending=0,
        retried=0,
    )
    assert len(samples) > 1000


async def test_join_returns_for_the_tasks_before_it_under_steady_traffic() -> None:
    release_first, release_later = asyncio.Event(), asyncio.Event()

    async def first() -> None:
        await release_first.wait()

    async def later() -> None:
        await release_later.wait()

    async def quick() -> None:
        pass

    tasks = {"/first": first, "/later": later, "/quick": quick, "/error": quick}

    async def app(scope: dict[str, str], receive: object, send: Any) -> None:
        add_task(tasks[scope["path"]])
        status = 500 if scope["path"] == "/error" else 200
        await send({**START_200, "status": status})
        await send(BODY)

    middleware = BackgroundTasksMiddleware(app, mode="detached")
    await call(middleware, [], http_scope("/first"))
    joined = asyncio.create_task(middleware.join())

    async def steady_traffic() -> None:
        # Newer tasks keep starting and ending (run, or dropped on a 5xx):
        # none of them counts for the join.
        for path in itertools.cycle(["/later", "/quick", "/error"]):
            if joined.done():
                return
            await call(middleware, [], http_scope(path))
            await asyncio.sleep(0)  # a server yields between requests

    traffic = asyncio.create_task(steady_traffic())
    for _ in range(20):  # loop turns: traffic flows, the first task still waits
        await asyncio.sleep(0)
    assert not joined.done()
    release_first.set()
    async with asyncio.timeout(30):  # generous: it returns within loop turns
        await joined
    await traffic

    stats = middleware.stats
    assert stats.succeeded > 1  # newer ones ended meanwhile...
    assert stats.dropped > 0  # ...or were dropped
    assert stats.running > 0  # later tasks, still unfinished
    release_later.set()
    await middleware.join()
    assert_accounted(middleware.stats)


@pytest.mark.parametrize("let_go", ["room is made", "shutdown"])
async def test_a_request_cancelled_while_held_is_passed_over_when_held_ones_go(
    let_go: str,
) -> None:
    ledger = Ledger(max_pending=1)
    ledger.queued = 1  # one task waits for a slot: the queue is full
    cancelled = asyncio.create_task(ledger.room())
    held = asyncio.create_task(ledger.room())
    await asyncio.sleep(0)
    assert len(ledger.holds) == 2

    cancelled.cancel()  # its hold is cancelled; its Task has not resumed yet
    if let_go == "room is made":
        ledger.queued = 0
        ledger.make_room()
    else:
        ledger.release_holds()

    await asyncio.wait_for(held, timeout=30)  # its tasks did not count
    with pytest.raises(asyncio.CancelledError):
        await cancelled
    assert not ledger.holds
