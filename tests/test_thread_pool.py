"""Plain ``def`` tasks run in the middleware's own bounded thread pool, never
the event loop's default executor that the app's own sync code uses
(DESIGN.md, "Public API": ``max_threads``)."""

import asyncio
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import pytest
from helpers import Lifespan, call, scheduling, with_lifespan

from asgi_bgtasks import BackgroundTasksMiddleware

HANG = 30  # seconds a blocked thread waits at most, should a test fail


def pool_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name.startswith("asgi_bgtasks")]


@pytest.fixture
def release() -> Iterator[threading.Event]:
    """Set at the end of the test, whatever happened: no thread stays blocked."""
    event = threading.Event()
    yield event
    event.set()


async def test_sync_tasks_run_while_the_apps_default_executor_is_saturated(
    events: list[object], release: threading.Event
) -> None:
    loop = asyncio.get_running_loop()
    default = ThreadPoolExecutor(1)
    loop.set_default_executor(default)
    saturated = loop.run_in_executor(None, release.wait, HANG)

    def send_receipt(label: str) -> None:
        events.append((label, threading.current_thread().name))

    app = BackgroundTasksMiddleware(scheduling((send_receipt, "receipt")))

    await call(app, events)

    assert events[-1][0] == "receipt"  # type: ignore[index]
    assert events[-1][1].startswith("asgi_bgtasks")  # type: ignore[index]
    assert not saturated.done()
    release.set()
    await saturated


async def test_at_most_max_threads_sync_tasks_run_at_once(
    release: threading.Event,
) -> None:
    lock = threading.Lock()
    inside = 0
    most = 0

    def blocks() -> None:
        nonlocal inside, most
        with lock:
            inside += 1
            most = max(most, inside)
        release.wait(timeout=HANG)
        with lock:
            inside -= 1

    app = BackgroundTasksMiddleware(
        scheduling((blocks,)), mode="detached", max_threads=2
    )
    before = set(pool_threads())  # other tests' pools may end meanwhile
    for _ in range(6):
        await call(app, [])
    await asyncio.sleep(0)  # the chains start (deferred under a task factory)
    # All six are submitted to the pool: it created the threads it may.
    assert app.stats.running == 6
    assert len(set(pool_threads()) - before) == 2

    release.set()
    await app.join()

    assert most <= 2
    assert app.stats.succeeded == 6


async def test_the_pool_is_shut_down_after_the_drain_and_made_again_on_startup(
    events: list[object],
) -> None:
    def records_its_thread() -> None:
        events.append(threading.current_thread())

    app = BackgroundTasksMiddleware(
        with_lifespan(scheduling((records_its_thread,)), events)
    )
    for _cycle in range(2):
        lifespan = Lifespan(app)
        await lifespan.startup()
        await call(app, events)
        await lifespan.shutdown()
        assert events[-1] == "app saw shutdown"

    threads = [e for e in events if isinstance(e, threading.Thread)]
    assert len(threads) == 2
    assert threads[0] is not threads[1]  # a new pool for the second cycle
    for thread in threads:
        await asyncio.to_thread(thread.join, HANG)
        assert not thread.is_alive()
    assert app.stats.succeeded == 2
