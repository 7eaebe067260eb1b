"""Isolation of a task: its cancellation, its exceptions and its asyncio Task
are its own (DESIGN.md, "Isolation of a task").

Every test runs inline and detached, with and without ``task_timeout``: a
task's own ``CancelledError`` is its failure, the next task runs, and the
server's ASGI call never sees a cancellation nobody sent it.
"""

import asyncio
import contextlib
import sys
from collections.abc import Awaitable, Callable
from typing import Any

import anyio
import pytest
from helpers import BODY, START_200, call, scheduling, start_request

from asgi_bgtasks import BackgroundTasksMiddleware, add_task

Task = Callable[[], Awaitable[None]]


@pytest.fixture(
    params=[
        ("inline", None),
        ("inline", 60.0),
        ("detached", None),
        ("detached", 60.0),
    ],
    ids=lambda p: f"{p[0]}-timeout={p[1]}",
)
def middleware(request: pytest.FixtureRequest) -> Callable[..., Any]:
    """``middleware(app, **options)``: the app wrapped in each mode, with each
    timeout."""
    mode, task_timeout = request.param

    def wrap(app: Any, **options: Any) -> BackgroundTasksMiddleware:
        return BackgroundTasksMiddleware(
            app, mode=mode, task_timeout=task_timeout, **options
        )

    return wrap


async def cancelled_by_someone_else() -> None:
    future = asyncio.get_running_loop().create_future()
    asyncio.get_running_loop().call_soon(future.cancel)
    await future


async def awaits_a_task_someone_else_cancelled() -> None:
    other = asyncio.create_task(asyncio.Event().wait())
    asyncio.get_running_loop().call_soon(other.cancel)
    await other


async def awaits_a_gather_whose_child_was_cancelled() -> None:
    child = asyncio.create_task(asyncio.Event().wait())
    asyncio.get_running_loop().call_soon(child.cancel)
    await asyncio.gather(child, asyncio.sleep(0))


async def after_its_own_asyncio_timeout() -> None:
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(0.001):
            await asyncio.Event().wait()
    await cancelled_by_someone_else()


async def after_its_own_wait_for() -> None:
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(asyncio.Event().wait(), 0.001)
    await cancelled_by_someone_else()


async def after_its_own_anyio_move_on_after() -> None:
    with anyio.move_on_after(0.001):
        await asyncio.Event().wait()
    await cancelled_by_someone_else()


async def after_its_own_anyio_cancel_scope() -> None:
    with anyio.CancelScope() as scope:
        scope.cancel()
        await anyio.sleep(3600)
    await cancelled_by_someone_else()


async def cancels_itself() -> None:
    asyncio.current_task().cancel()  # type: ignore[union-attr]
    await asyncio.sleep(0)


async def cancels_itself_and_returns_at_once() -> None:
    asyncio.current_task().cancel()  # type: ignore[union-attr]


async def whose_task_group_child_raises() -> None:
    async def child() -> None:
        raise ConnectionError("smtp down")

    async with asyncio.TaskGroup() as group:
        # The child that raises comes last: under an eager task factory it
        # ends the group at once, and 3.12's create_task then refuses.
        group.create_task(asyncio.Event().wait())
        group.create_task(child())


async def whose_anyio_task_group_child_raises() -> None:
    async def child() -> None:
        raise ConnectionError("smtp down")

    async with anyio.create_task_group() as group:
        group.start_soon(child)
        group.start_soon(anyio.sleep, 3600)


async def whose_own_timeout_expires() -> None:
    async with asyncio.timeout(0.001):
        await asyncio.Event().wait()


async def awaits_a_shielded_task_someone_else_cancelled() -> None:
    inner = asyncio.create_task(asyncio.Event().wait())
    asyncio.get_running_loop().call_soon(inner.cancel)
    await asyncio.shield(inner)


OWN_FAILURES = [
    cancelled_by_someone_else,
    awaits_a_task_someone_else_cancelled,
    awaits_a_gather_whose_child_was_cancelled,
    after_its_own_asyncio_timeout,
    after_its_own_wait_for,
    after_its_own_anyio_move_on_after,
    after_its_own_anyio_cancel_scope,
    cancels_itself,
    cancels_itself_and_returns_at_once,
    whose_task_group_child_raises,
    whose_anyio_task_group_child_raises,
    whose_own_timeout_expires,
    awaits_a_shielded_task_someone_else_cancelled,
]


@pytest.mark.parametrize("task", OWN_FAILURES, ids=lambda f: f.__name__)
async def test_a_tasks_own_cancellation_or_error_fails_it_alone_and_the_next_runs(
    middleware: Callable[..., BackgroundTasksMiddleware],
    task: Task,
    events: list[object],
    caplog: pytest.LogCaptureFixture,
) -> None:
    app = middleware(scheduling((task,), (events.append, "next")))

    await call(app, events)  # returns: the server never sees the cancellation
    await app.join()

    assert events[-1] == "next"
    assert (app.stats.failed, app.stats.succeeded) == (1, 1)
    assert caplog.messages[-1] == (
        f"background task {task.__module__}.{task.__qualname__} failed"
    )


async def handles_its_own_timeouts_and_scopes(events: list[object]) -> None:
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(0.001):
            await asyncio.Event().wait()
    with anyio.move_on_after(0.001):
        await asyncio.Event().wait()
    async with asyncio.TaskGroup() as group:
        group.create_task(asyncio.sleep(0))
    await asyncio.shield(asyncio.sleep(0))
    events.append("handled")


async def test_a_task_that_handles_its_own_timeouts_and_scopes_succeeds(
    middleware: Callable[..., BackgroundTasksMiddleware], events: list[object]
) -> None:
    app = middleware(scheduling((handles_its_own_timeouts_and_scopes, events)))

    await call(app, events)
    await app.join()

    assert events[-1] == "handled"
    assert app.stats.succeeded == 1


async def test_a_task_that_cancelled_itself_and_caught_it_leaves_the_next_task_clean(
    middleware: Callable[..., BackgroundTasksMiddleware], events: list[object]
) -> None:
    async def cancels_itself_and_catches_it() -> None:
        asyncio.current_task().cancel()  # type: ignore[union-attr]
        with contextlib.suppress(asyncio.CancelledError):
            await asyncio.sleep(0)

    async def uses_a_timeout() -> None:
        task = asyncio.current_task()
        assert task is not None
        events.append(("cancelling", task.cancelling()))
        async with asyncio.timeout(60):
            await asyncio.sleep(0)
        events.append("timeout unused")

    app = middleware(scheduling((cancels_itself_and_catches_it,), (uses_a_timeout,)))

    await call(app, events)
    await app.join()

    assert events[-2:] == [("cancelling", 0), "timeout unused"]
    assert app.stats.succeeded == 2


async def test_tasks_start_with_a_clean_exc_info_after_the_app_raised(
    middleware: Callable[..., BackgroundTasksMiddleware], events: list[object]
) -> None:
    async def async_task() -> None:
        events.append(("async", sys.exc_info()))
        raise ValueError("the task's own")

    def sync_task() -> None:
        events.append(("sync", sys.exc_info()))
        raise ValueError("the task's own, in its thread")

    async def app(scope: Any, receive: Any, send: Any) -> None:
        add_task(async_task)
        add_task(sync_task)
        await send(START_200)
        await send(BODY)
        raise RuntimeError("the app's, after its response")

    errors: list[BaseException] = []
    wrapped = middleware(app, on_error=lambda info, error: errors.append(error))

    with pytest.raises(RuntimeError, match="the app's"):
        await call(wrapped, events)
    await wrapped.join()

    assert ("async", (None, None, None)) in events
    assert ("sync", (None, None, None)) in events
    assert [type(error) for error in errors] == [ValueError, ValueError]
    assert [error.__context__ for error in errors] == [None, None]


async def test_tasks_of_different_requests_never_share_their_asyncio_task(
    middleware: Callable[..., BackgroundTasksMiddleware],
) -> None:
    seen: list[asyncio.Task[Any] | None] = []
    opened = asyncio.Event()

    async def record_current_task() -> None:
        seen.append(asyncio.current_task())
        await opened.wait()

    # One slot: the second chain waits behind the first.
    app = middleware(scheduling((record_current_task,)), max_concurrency=1)

    requests = [asyncio.create_task(call(app, [])) for _ in range(2)]
    await asyncio.sleep(0)
    opened.set()
    await asyncio.gather(*requests)
    await app.join()

    assert len(seen) == 2
    assert seen[0] is not seen[1]
    assert not set(seen) & set(requests)  # nor the ASGI call's own Task


async def waits_in_its_own_asyncio_timeout() -> None:
    async with asyncio.timeout(60):
        await asyncio.Event().wait()


async def waits_in_its_own_wait_for() -> None:
    await asyncio.wait_for(asyncio.Event().wait(), 60)


async def waits_in_its_own_task_group() -> None:
    async with asyncio.TaskGroup() as group:
        group.create_task(asyncio.Event().wait())


async def waits_in_its_own_anyio_scope() -> None:
    with anyio.move_on_after(60):
        await asyncio.Event().wait()


async def waits_after_a_timeout_it_handled() -> None:
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(0.001):
            await asyncio.Event().wait()
    await asyncio.Event().wait()


# A cancellation from outside still counts as one when it reaches a task
# inside a timeout, task group or cancel scope of its own.
WAITS_IN_OWN_SCOPES = [
    waits_in_its_own_asyncio_timeout,
    waits_in_its_own_wait_for,
    waits_in_its_own_task_group,
    waits_in_its_own_anyio_scope,
    waits_after_a_timeout_it_handled,
]


@pytest.mark.parametrize("mode", ["inline", "detached"])
@pytest.mark.parametrize("task", WAITS_IN_OWN_SCOPES, ids=lambda f: f.__name__)
async def test_its_timeout_inside_a_tasks_own_scope_times_it_out(
    mode: str, task: Task, events: list[object]
) -> None:
    app = BackgroundTasksMiddleware(
        scheduling((task,), (events.append, "next")), mode=mode, task_timeout=0.05
    )

    await call(app, events)
    await app.join()

    assert events[-1] == "next"
    assert (app.stats.timed_out, app.stats.failed) == (1, 0)


@pytest.mark.parametrize("task", WAITS_IN_OWN_SCOPES, ids=lambda f: f.__name__)
async def test_the_server_cancelling_a_task_inside_its_own_scope_drops_it(
    task: Task, events: list[object]
) -> None:
    app = BackgroundTasksMiddleware(
        scheduling((task,), (events.append, "next")), mode="inline"
    )
    request = await start_request(app, events)
    while app.stats.running == 0:  # noqa: ASYNC110
        await asyncio.sleep(0)
    # Lets the one that handles a 1 ms timeout get past it; should it not
    # have, the server's cancel is still a cancel from outside.
    await asyncio.sleep(0.01)

    request.cancel()
    with pytest.raises(asyncio.CancelledError):
        await request

    assert "next" not in events
    assert (app.stats.dropped, app.stats.failed) == (2, 0)


async def test_tasks_run_after_a_crash_before_the_response_see_a_clean_exc_info(
    middleware: Callable[..., BackgroundTasksMiddleware], events: list[object]
) -> None:
    async def async_task() -> None:
        events.append(("async", sys.exc_info()))

    def sync_task() -> None:
        events.append(("sync", sys.exc_info()))

    async def app(scope: Any, receive: Any, send: Any) -> None:
        add_task(async_task)
        add_task(sync_task)
        raise RuntimeError("the app's, before its response")

    wrapped = middleware(app, run_on_error=True)

    with pytest.raises(RuntimeError, match="the app's"):
        await call(wrapped, events)
    await wrapped.join()

    assert events == [("async", (None, None, None)), ("sync", (None, None, None))]
