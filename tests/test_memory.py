"""Once a task has ended, whatever the outcome, its arguments are freed by
reference counting alone: no cycle through tasks, contexts, exceptions or
the server's objects (DESIGN.md, "Isolation of a task" → Memory).

The cyclic garbage collector is off while each test runs, and each record of
the ``asgi_bgtasks`` log is formatted and then forgotten, as a production
handler does (pytest's own capture would keep the tracebacks, and with them
the arguments).
"""

import asyncio
import contextvars
import gc
import logging
import threading
import weakref
from collections.abc import Iterator
from typing import Any

import pytest
from helpers import BODY, START_200, Lifespan, call, http_scope, with_lifespan

from asgi_bgtasks import BackgroundTasksMiddleware, add_task

request_payload: contextvars.ContextVar[object] = contextvars.ContextVar("payload")


class Payload:
    """An argument whose life the test watches."""


class _FormatAndForget(logging.Filter):
    """Formats each record, as a handler would, then stops it: pytest's
    capture handlers, attached to every logger, would keep it."""

    def __init__(self) -> None:
        super().__init__()
        self.formatter = logging.Formatter()
        self.messages: list[str] = []

    def filter(self, record: logging.LogRecord) -> bool:
        self.messages.append(self.formatter.format(record).splitlines()[0])
        return False


@pytest.fixture
def log() -> Iterator[_FormatAndForget]:
    logger = logging.getLogger("asgi_bgtasks")
    forget = _FormatAndForget()
    logger.addFilter(forget)
    try:
        yield forget
    finally:
        logger.removeFilter(forget)


@pytest.fixture
def no_cyclic_gc() -> Iterator[None]:
    gc.collect()
    gc.disable()
    try:
        yield
    finally:
        gc.enable()


async def succeeds(payload: Payload) -> None:
    await asyncio.sleep(0)


async def fails(payload: Payload) -> None:
    raise ValueError("task bug")


def succeeds_in_thread(payload: Payload) -> None:
    threading.Event().wait(0.01)  # still running as its chain waits for it


def fails_in_thread(payload: Payload) -> None:
    raise ValueError("task bug")


def returns_a_coroutine(payload: Payload) -> Any:
    threading.Event().wait(0.01)  # still running as its chain waits for it
    return succeeds(payload)


async def cancels_itself(payload: Payload) -> None:
    asyncio.current_task().cancel()  # type: ignore[union-attr]
    await asyncio.sleep(0)


async def hangs(payload: Payload) -> None:
    await asyncio.Event().wait()


def blocks_past_its_timeout(payload: Payload) -> None:
    threading.Event().wait(0.2)  # its thread returns after the timeout


def app_scheduling(task: Any, box: list[Payload], status: int = 200) -> Any:
    """An app that schedules ``task`` with the payload it takes from ``box``."""

    async def app(scope: Any, receive: Any, send: Any) -> None:
        add_task(task, box.pop())
        await send({**START_200, "status": status})
        await send(BODY)

    return app


@pytest.mark.usefixtures("no_cyclic_gc")
@pytest.mark.parametrize("mode", ["inline", "detached"])
@pytest.mark.parametrize(
    ("task", "status", "task_timeout", "outcome"),
    [
        (succeeds, 200, None, "succeeded"),
        (fails, 200, None, "failed"),
        (succeeds_in_thread, 200, None, "succeeded"),
        (fails_in_thread, 200, None, "failed"),
        (cancels_itself, 200, None, "failed"),
        (hangs, 200, 0.01, "timed_out"),
        (blocks_past_its_timeout, 200, 0.01, "timed_out"),
        (succeeds, 500, None, "dropped"),
    ],
    ids=[
        "succeeded",
        "failed",
        "succeeded-in-thread",
        "failed-in-thread",
        "own-cancel",
        "timed-out",
        "timed-out-in-thread",
        "5xx",
    ],
)
async def test_arguments_are_freed_by_refcount_once_the_task_ends(
    log: _FormatAndForget,
    mode: str,
    task: Any,
    status: int,
    task_timeout: float | None,
    outcome: str,
) -> None:
    box = [Payload()]
    freed = weakref.ref(box[0])
    app = BackgroundTasksMiddleware(
        app_scheduling(task, box, status), mode=mode, task_timeout=task_timeout
    )

    await call(app, [])
    await app.join()

    assert getattr(app.stats, outcome) == 1
    assert freed() is None


@pytest.mark.usefixtures("no_cyclic_gc")
@pytest.mark.parametrize("mode", ["inline", "detached"])
@pytest.mark.parametrize("state", ["running", "pending"])
async def test_arguments_of_tasks_ended_at_the_shutdown_deadline_are_freed(
    log: _FormatAndForget, mode: str, state: str
) -> None:
    box = [Payload(), Payload()]
    freed = [weakref.ref(payload) for payload in box]

    async def app(scope: Any, receive: Any, send: Any) -> None:
        add_task(hangs, box.pop(0))
        add_task(hangs, box.pop(0))
        await send(START_200)
        await send(BODY)

    middleware = BackgroundTasksMiddleware(
        with_lifespan(app, []), mode=mode, shutdown_timeout=0.01
    )
    lifespan = Lifespan(middleware)
    await lifespan.startup()
    request = asyncio.create_task(call(middleware, []))
    for _ in range(5):  # loop turns: the first task starts
        await asyncio.sleep(0)

    await lifespan.shutdown()
    await request

    assert middleware.stats.dropped == 2
    assert freed[0 if state == "running" else 1]() is None


@pytest.mark.usefixtures("no_cyclic_gc")
async def test_arguments_of_an_inline_chain_the_server_cancelled_are_freed(
    log: _FormatAndForget,
) -> None:
    box = [Payload(), Payload()]
    freed = [weakref.ref(payload) for payload in box]
    started = asyncio.Event()

    async def hangs_once_started(payload: Payload) -> None:
        started.set()
        await asyncio.Event().wait()

    async def app(scope: Any, receive: Any, send: Any) -> None:
        add_task(hangs_once_started, box.pop(0))
        add_task(hangs, box.pop(0))
        await send(START_200)
        await send(BODY)

    middleware = BackgroundTasksMiddleware(app, mode="inline")
    request = asyncio.create_task(call(middleware, []))
    await started.wait()

    request.cancel()
    with pytest.raises(asyncio.CancelledError):
        await request
    del request

    assert middleware.stats.dropped == 2
    assert [ref() for ref in freed] == [None, None]


@pytest.mark.usefixtures("no_cyclic_gc")
@pytest.mark.parametrize("left", ["its context", "its failed task's traceback"])
async def test_a_finished_request_is_not_kept_alive_by_later_requests(
    log: _FormatAndForget, left: str
) -> None:
    box = [Payload()]
    freed = weakref.ref(box[0])
    opened = threading.Event()

    async def app(scope: Any, receive: Any, send: Any) -> None:
        if scope["path"] != "/first":
            add_task(asyncio.to_thread, opened.wait, 30)
        elif left == "its context":
            request_payload.set(box.pop())
            add_task(succeeds, Payload())
        else:
            add_task(fails, box.pop())  # its frame, in the traceback, holds it
        await send(START_200)
        await send(BODY)

    middleware = BackgroundTasksMiddleware(app, mode="detached", max_concurrency=1)
    # Each request in a Task of its own, hence a context of its own, as a
    # server calls them.
    await asyncio.create_task(call(middleware, [], http_scope("/first")))
    await middleware.join()
    await asyncio.create_task(call(middleware, [], http_scope("/second")))

    assert freed() is None
    opened.set()
    await middleware.join()


@pytest.mark.usefixtures("no_cyclic_gc")
@pytest.mark.parametrize("mode", ["inline", "detached"])
async def test_arguments_of_a_request_that_crashed_are_freed(
    log: _FormatAndForget, mode: str
) -> None:
    box = [Payload()]
    freed = weakref.ref(box[0])

    async def app(scope: Any, receive: Any, send: Any) -> None:
        add_task(succeeds, box.pop())
        await send(START_200)
        raise RuntimeError("the app's, before its final message")

    middleware = BackgroundTasksMiddleware(app, mode=mode)

    with pytest.raises(RuntimeError):
        await call(middleware, [])

    assert middleware.stats.dropped == 1
    assert freed() is None


@pytest.mark.usefixtures("no_cyclic_gc")
@pytest.mark.parametrize("mode", ["inline", "detached"])
@pytest.mark.parametrize(
    ("task", "outcome"),
    [
        (succeeds_in_thread, "succeeded"),
        (fails_in_thread, "failed"),
        (returns_a_coroutine, "succeeded"),  # awaited on the loop after
    ],
    ids=["succeeded", "failed", "returns-a-coroutine"],
)
async def test_a_plain_def_tasks_arguments_are_freed_while_its_pool_thread_lingers(
    log: _FormatAndForget,
    monkeypatch: pytest.MonkeyPatch,
    mode: str,
    task: Any,
    outcome: str,
) -> None:
    """A pool thread lets go of its work item (and the job in it) only
    after the job's done callbacks ran, so the loop may settle the task
    first. Here the thread is held right there, as a busy machine may
    deschedule it: the task's arguments must be gone all the same."""
    import concurrent.futures.thread as pool_thread

    lingering = threading.Event()
    go_on = threading.Event()
    run_work_item = pool_thread._WorkItem.run

    def run_then_linger(work_item: Any) -> None:
        run_work_item(work_item)
        lingering.set()
        go_on.wait(HANG)

    monkeypatch.setattr(pool_thread._WorkItem, "run", run_then_linger)
    box = [Payload()]
    freed = weakref.ref(box[0])
    app = BackgroundTasksMiddleware(app_scheduling(task, box), mode=mode)  # type: ignore[arg-type]

    try:
        await call(app, [])
        await app.join()
        await asyncio.to_thread(lingering.wait, HANG)

        assert getattr(app.stats, outcome) == 1
        assert freed() is None
    finally:
        go_on.set()


HANG = 30  # generous: a thread that never lingers fails the wait, not a timer
