"""add_task from many threads: every task counted and run, none lost."""

import asyncio
import contextvars
import itertools
import sys
import threading
from typing import Any

import pytest
from asgiref.sync import sync_to_async
from helpers import BODY, START_200, Lifespan, assert_accounted, call, with_lifespan

from asgi_bgtasks import BackgroundTasksMiddleware, add_task, task_options

HANG = 60  # generous: a race that leaves a list open hangs the test instead


async def test_tasks_added_from_many_threads_at_once_all_run(
    events: list[object],
) -> None:
    def sync_view() -> None:  # its threads run in copies of its context

        start = threading.Barrier(8)

        def adder(n: int) -> None:
            start.wait()
            for i in range(200):
                add_task(events.append, (n, i))

        threads = [
            threading.Thread(target=contextvars.copy_context().run, args=(adder, n))
            for n in range(8)
        ]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()

    async def app(scope: object, receive: object, send: Any) -> None:
        await sync_to_async(sync_view)()
        await send(START_200)
        await send(BODY)

    middleware = BackgroundTasksMiddleware(app)
    await call(middleware, events)

    ran = [event for event in events if isinstance(event, tuple)]
    assert sorted(ran) == [(n, i) for n in range(8) for i in range(200)]
    assert middleware.stats.scheduled == middleware.stats.succeeded == 1600


class Adders:
    """Threads that call ``add_task`` until it refuses, counting their calls.

    They run in copies of the request's context, as a sync view's threads do.
    A monitor thread takes `stats` snapshots meanwhile and keeps any that
    breaks the identity of the contract.
    """

    def __init__(self, middleware: BackgroundTasksMiddleware, ran: list[object]):
        self.middleware = middleware
        self.ran = ran
        self.added = 0
        self.refused = 0
        self.first_added = threading.Event()
        self.bad_snapshots: list[object] = []
        self._lock = threading.Lock()
        self._threads: list[threading.Thread] = []
        self._stop = threading.Event()

    def start(self, count: int = 4, calls: int | None = None) -> None:
        """Start the adders; call inside the request."""
        for n in range(count):
            run = contextvars.copy_context().run
            thread = threading.Thread(target=run, args=(self._add, n, calls))
            self._threads.append(thread)
            thread.start()
        monitor = threading.Thread(target=self._monitor)
        self._threads.append(monitor)
        monitor.start()

    async def stop(self) -> None:
        """Wait for the adders (each stops at its first refusal)."""
        for thread in self._threads[:-1]:
            await asyncio.to_thread(thread.join)
        self._stop.set()
        await asyncio.to_thread(self._threads[-1].join)

    def _add(self, n: int, calls: int | None) -> None:
        for i in itertools.count() if calls is None else range(calls):
            try:
                add_task(self.ran.append, (n, i))
            except RuntimeError:
                with self._lock:
                    self.refused += 1
                return
            with self._lock:
                self.added += 1
            self.first_added.set()

    def _monitor(self) -> None:
        while not self._stop.wait(0.0001):
            stats = self.middleware.stats
            try:
                assert_accounted(stats)
            except AssertionError:
                self.bad_snapshots.append(stats)


def racing_app(
    status: int, calls: int | None = None
) -> tuple[BackgroundTasksMiddleware, Adders]:
    """An app whose request starts adders, then answers ``status``."""
    ran: list[object] = []

    async def app(scope: object, receive: object, send: Any) -> None:
        adders.start(calls=calls)
        await asyncio.to_thread(adders.first_added.wait)
        await send({**START_200, "status": status})
        await send(BODY)

    middleware = BackgroundTasksMiddleware(app, mode="inline")
    adders = Adders(middleware, ran)
    return middleware, adders


async def test_add_task_racing_the_end_of_the_chain_runs_each_task_or_refuses_it() -> (
    None
):
    middleware, adders = racing_app(200, calls=500)

    async with asyncio.timeout(HANG):
        await call(middleware, [])
        await adders.stop()
        await middleware.join()

    stats = middleware.stats
    assert adders.added == 4 * 500 or adders.refused  # an adder stops when refused
    assert adders.added == stats.scheduled == stats.succeeded == len(adders.ran)
    assert adders.bad_snapshots == []


async def test_add_task_racing_a_5xx_drop_drops_each_task_or_refuses_it() -> None:
    middleware, adders = racing_app(500)

    async with asyncio.timeout(HANG):  # the defect this guards against hangs
        await call(middleware, [])
        await adders.stop()
        await middleware.join()

    stats = middleware.stats
    assert adders.added == stats.scheduled == stats.dropped
    assert adders.ran == []
    assert adders.refused == 4
    assert (stats.pending, stats.running) == (0, 0)
    assert adders.bad_snapshots == []


async def test_stats_read_in_another_thread_while_the_loop_counts_add_up() -> None:
    """The loop counts its own tasks without a lock; snapshots taken in
    another thread meanwhile, as fast as it can, with thread switches as
    frequent as the interpreter allows, still add up, with no negative
    figure."""

    async def ends_at_once() -> None:
        pass

    async def suspends() -> None:
        await asyncio.sleep(0)

    async def fails() -> None:
        raise ValueError("its own failure")

    async def app(scope: object, receive: object, send: Any) -> None:
        for task in (ends_at_once, suspends, fails, suspends):
            add_task(task)
        await send(START_200)
        await send(BODY)

    middleware = BackgroundTasksMiddleware(app, mode="inline")
    stop = threading.Event()
    snapshots: list[Any] = []
    bad: list[Any] = []

    def monitor() -> None:
        while not stop.is_set():
            stats = middleware.stats
            snapshots.append(stats)
            try:
                assert_accounted(stats)
            except AssertionError:
                bad.append(stats)

    reader = threading.Thread(target=monitor)
    interval = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)
    reader.start()
    try:
        async with asyncio.timeout(HANG):
            for _ in range(2_000):
                await call(middleware, [])
    finally:
        stop.set()
        reader.join()
        sys.setswitchinterval(interval)

    stats = middleware.stats
    assert (stats.scheduled, stats.succeeded, stats.failed) == (8_000, 6_000, 2_000)
    assert len({stats.scheduled for stats in snapshots}) > 100  # read as it ran
    assert bad == []


async def test_tasks_added_from_a_thread_and_the_loop_run_in_the_order_added(
    events: list[object],
) -> None:
    async def app(scope: object, receive: object, send: Any) -> None:
        add_task(events.append, "loop 1")
        await asyncio.to_thread(add_task, events.append, "thread 1")
        await asyncio.to_thread(add_task, events.append, "thread 2")
        add_task(events.append, "loop 2")
        await asyncio.to_thread(add_task, events.append, "thread 3")
        await send(START_200)
        await send(BODY)

    middleware = BackgroundTasksMiddleware(app, mode="inline")
    await call(middleware, [])

    assert events == ["loop 1", "thread 1", "thread 2", "loop 2", "thread 3"]
    assert middleware.stats.succeeded == middleware.stats.scheduled == 5


async def test_a_task_added_from_a_thread_while_the_chain_runs_runs_next(
    events: list[object],
) -> None:
    """A plain def task adds the next from its worker thread: the chain,
    about to end, finds it."""

    def first() -> None:
        events.append("first")
        add_task(events.append, "added by the first, in its thread")

    async def app(scope: object, receive: object, send: Any) -> None:
        add_task(first)
        await send(START_200)
        await send(BODY)

    for mode in ("inline", "detached"):
        events.clear()
        middleware = BackgroundTasksMiddleware(app, mode=mode)  # type: ignore[arg-type]
        await call(middleware, [])
        await middleware.join()

        assert events == ["first", "added by the first, in its thread"]
        stats = middleware.stats
        assert (stats.scheduled, stats.succeeded, stats.pending) == (2, 2, 0)


async def test_a_thread_adding_as_the_chain_runs_is_refused_only_once_none_waits() -> (
    None
):
    """A thread adds tasks as fast as it can while the request's chain runs
    them; when it is refused at last, every task it added before has
    started: the list never looks closed while tasks a thread added wait."""

    async def one_request() -> bool:
        order = itertools.count()
        started: dict[int, int] = {}
        refused_at: list[int] = []
        accepted: list[int] = []

        async def job(i: int) -> None:
            started[i] = next(order)

        def adder(tasks: Any) -> None:
            for i in range(5_000):
                try:
                    tasks.add_task(job, i)
                except RuntimeError:
                    refused_at.append(next(order))
                    return
                accepted.append(i)

        threads: list[threading.Thread] = []

        async def app(scope: dict[str, Any], receive: object, send: Any) -> None:
            tasks = scope["background_tasks"]
            tasks.add_task(job, -1)
            await send(START_200)
            threads.append(threading.Thread(target=adder, args=(tasks,)))
            threads[0].start()
            await send(BODY)

        await call(BackgroundTasksMiddleware(app, mode="inline"), [])
        await asyncio.to_thread(threads[0].join)

        assert sorted(started) == [-1, *accepted]  # none lost, none twice
        if not refused_at:  # the thread was done before the chain
            return False
        assert [i for i in accepted if started[i] > refused_at[0]] == []
        return True

    interval = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)
    try:
        async with asyncio.timeout(HANG):
            refusals = [await one_request() for _ in range(40)]
    finally:
        sys.setswitchinterval(interval)
    assert any(refusals)  # the race was run, not only the easy case


async def test_after_a_5xx_a_task_added_later_is_refused_though_some_run_on_error(
    events: list[object],
) -> None:
    """The tasks that run after a 5xx (run_on_error) do not reopen the
    list: neither they nor a thread still working for the request can add
    one that would run."""
    thread_may_add = threading.Event()
    outcomes: list[str] = []

    async def normal() -> None:
        events.append("normal")

    @task_options(run_on_error=True)
    async def audit() -> None:
        thread_may_add.set()
        try:
            add_task(normal)
        except RuntimeError:
            outcomes.append("the audit task was refused")
        await asyncio.to_thread(worker_done.wait, HANG)
        events.append("audit")

    def worker(tasks: Any) -> None:
        thread_may_add.wait(HANG)
        try:
            tasks.add_task(normal)
        except RuntimeError:
            outcomes.append("the thread was refused")

    worker_done = threading.Event()

    async def app(scope: dict[str, Any], receive: object, send: Any) -> None:
        tasks = scope["background_tasks"]
        thread = threading.Thread(
            target=lambda: (worker(tasks), worker_done.set())  # type: ignore[func-returns-value]
        )
        thread.start()
        add_task(audit)
        await send({**START_200, "status": 500})
        await send(BODY)

    middleware = BackgroundTasksMiddleware(app, mode="inline")
    async with asyncio.timeout(HANG):
        await call(middleware, [])

    assert events == ["audit"]
    assert sorted(outcomes) == ["the audit task was refused", "the thread was refused"]


@pytest.mark.parametrize("where", ["loop", "thread"])
async def test_a_request_is_not_held_for_its_own_tasks_added_from_a_thread(
    events: list[object], where: str
) -> None:
    """Detached, max_pending=1: a sync view's task (added in a worker
    thread) does not count against its own request before it is handed
    over, so the request is not held for it."""

    async def job() -> None:
        events.append("ran")

    async def app(scope: object, receive: object, send: Any) -> None:
        if where == "thread":
            await asyncio.to_thread(add_task, job)
        else:
            add_task(job)
        await send(START_200)
        await send(BODY)

    await one_request_detached(
        BackgroundTasksMiddleware(
            with_lifespan(app, []), mode="detached", max_pending=1
        )
    )

    assert events == ["ran"]


async def test_a_task_added_from_a_thread_is_dropped_with_its_5xx(
    events: list[object],
) -> None:
    async def app(scope: object, receive: object, send: Any) -> None:
        add_task(events.append, "from the loop")
        await asyncio.to_thread(add_task, events.append, "from a thread")
        await send({**START_200, "status": 500})
        await send(BODY)

    middleware = BackgroundTasksMiddleware(app, mode="inline")
    await call(middleware, [])

    assert events == []
    stats = middleware.stats
    assert (stats.scheduled, stats.dropped, stats.pending) == (2, 2, 0)


@pytest.mark.parametrize("status", [200, 500])
async def test_detached_tasks_added_by_the_loop_then_a_thread_run_in_order(
    events: list[object], status: int
) -> None:
    """Handed over detached with a task a thread added last (counted toward
    max_pending as it is handed over); a 5xx whose thread-added task runs
    on error is held and run alike."""

    @task_options(run_on_error=True)
    def audit(label: str) -> None:
        events.append(label)

    async def app(scope: object, receive: object, send: Any) -> None:
        add_task(audit, "from the loop")
        await asyncio.to_thread(add_task, audit, "from a thread")
        await send({**START_200, "status": status})
        await send(BODY)

    middleware = BackgroundTasksMiddleware(with_lifespan(app, []), max_pending=1)
    await one_request_detached(middleware)

    assert events == ["from the loop", "from a thread"]
    assert middleware.stats.succeeded == 2


async def one_request_detached(middleware: BackgroundTasksMiddleware) -> None:
    """One request through ``middleware`` inside a lifespan (detached), its
    tasks waited for, then the shutdown."""
    lifespan = Lifespan(middleware)
    await lifespan.startup()
    async with asyncio.timeout(HANG):
        await call(middleware, [])
        await middleware.join()
    await lifespan.shutdown()
