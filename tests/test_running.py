"""How tasks run: order, threads, isolation, timeouts, contextvars."""

import asyncio
import contextvars
import logging
import threading
from typing import Any

import pytest
from asgiref.sync import markcoroutinefunction, sync_to_async
from helpers import (
    BODY,
    START_200,
    assert_accounted,
    call,
    recording_task,
    scheduling,
)

from asgi_bgtasks import BackgroundTasksMiddleware, TaskInfo, add_task

request_id: contextvars.ContextVar[str] = contextvars.ContextVar("request_id")


async def test_tasks_of_one_request_run_sequentially_in_order_added(
    events: list[object],
) -> None:
    async def slow_async(label: str) -> None:
        events.append(f"{label} start")
        await asyncio.sleep(0)
        events.append(f"{label} end")

    def blocking(label: str) -> None:
        events.append(label)

    app = BackgroundTasksMiddleware(
        scheduling((slow_async, "1"), (blocking, "2"), (slow_async, "3"))
    )

    await call(app, events)

    assert events[2:] == ["1 start", "1 end", "2", "3 start", "3 end"]


async def test_sync_tasks_run_in_a_worker_thread_not_thread_sensitive() -> None:
    # Two blocking tasks of two requests meet: each waits for the other, which
    # is only possible if they run on different threads at the same time.
    first_arrived, second_arrived = threading.Event(), threading.Event()
    met: list[bool] = []

    def meet(mine: threading.Event, theirs: threading.Event) -> None:
        mine.set()
        met.append(theirs.wait(timeout=30))

    app = BackgroundTasksMiddleware(
        scheduling((meet, first_arrived, second_arrived)), mode="detached"
    )
    other = BackgroundTasksMiddleware(
        scheduling((meet, second_arrived, first_arrived)), mode="detached"
    )

    await call(app, [])
    await call(other, [])
    await asyncio.gather(app.join(), other.join())

    assert met == [True, True]


async def test_failing_task_is_logged_by_name_without_arguments_and_next_runs(
    events: list[object], caplog: pytest.LogCaptureFixture
) -> None:
    async def send_welcome_email(address: str, token: str) -> None:
        raise ConnectionRefusedError("smtp down")

    app = BackgroundTasksMiddleware(
        scheduling(
            (send_welcome_email, "bob@example.com", "s3cr3t"),
            (events.append, "next task ran"),
        )
    )

    await call(app, events)

    name = (
        "test_running.test_failing_task_is_logged_by_name_without_arguments_and_"
        "next_runs.<locals>.send_welcome_email"
    )
    assert caplog.messages == [f"background task {name} failed"]
    (record,) = caplog.records
    assert record.levelname == "ERROR"
    assert record.exc_info is not None
    assert record.exc_info[0] is ConnectionRefusedError
    assert "bob@example.com" not in caplog.text
    assert "s3cr3t" not in caplog.text
    assert events[-1] == "next task ran"
    assert (app.stats.failed, app.stats.succeeded) == (1, 1)


async def test_on_error_receives_task_info_and_exception() -> None:
    reported: list[tuple[TaskInfo, BaseException]] = []

    async def flaky() -> None:
        raise ValueError("nope")

    app = BackgroundTasksMiddleware(
        scheduling((flaky,)),
        on_error=lambda info, error: reported.append((info, error)),
    )

    await call(app, [])

    ((info, error),) = reported
    assert info.func is flaky
    assert info.name.endswith(".flaky")
    assert isinstance(error, ValueError)


async def test_on_error_that_raises_is_logged_and_does_not_stop_tasks(
    events: list[object], caplog: pytest.LogCaptureFixture
) -> None:
    async def flaky() -> None:
        raise ValueError("nope")

    def broken_handler(info: TaskInfo, error: BaseException) -> None:
        raise RuntimeError("handler bug")

    app = BackgroundTasksMiddleware(
        scheduling((flaky,), (events.append, "after")), on_error=broken_handler
    )

    await call(app, events)

    assert caplog.messages[-1] == (
        f"on_error raised while handling background task {flaky.__module__}."
        f"{flaky.__qualname__}"
    )
    assert events[-1] == "after"


async def test_task_past_timeout_is_cancelled_and_counted_timed_out(
    events: list[object], caplog: pytest.LogCaptureFixture
) -> None:
    reported: list[BaseException] = []

    async def hangs() -> None:
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            events.append("cancelled")
            raise

    app = BackgroundTasksMiddleware(
        # "next" ends in its first step: no timeout can catch it, however
        # slow the machine (a thread for it once took longer than 0.01 s).
        scheduling((hangs,), (recording_task(events), "next")),
        task_timeout=0.01,
        on_error=lambda info, error: reported.append(error),
    )

    await call(app, events)
    await app.join()

    assert events[-2:] == ["cancelled", "next"]
    assert app.stats.timed_out == 1
    assert type(reported[0]) is TimeoutError  # the builtin, on every Python
    assert caplog.messages[0] == (
        f"background task {hangs.__module__}.{hangs.__qualname__} "
        "timed out after 0.01 s and was cancelled"
    )


async def test_blocking_task_past_timeout_is_counted_and_the_chain_moves_on(
    events: list[object],
) -> None:
    release = threading.Event()

    class ReleaseOnceTimedOut(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            if "timed out" in record.getMessage():
                release.set()

    def blocks() -> None:
        release.wait(timeout=30)
        events.append("thread finished")

    reported: list[BaseException] = []
    app = BackgroundTasksMiddleware(
        scheduling((blocks,), (recording_task(events), "next")),
        task_timeout=0.01,
        on_error=lambda info, error: reported.append(error),
    )
    logger = logging.getLogger("asgi_bgtasks")
    handler = ReleaseOnceTimedOut()
    logger.addHandler(handler)
    try:
        await call(app, events)
    finally:
        logger.removeHandler(handler)

    # The thread returned only once the timeout was seen; the next task
    # waited for it.
    assert events[-2:] == ["thread finished", "next"]
    assert app.stats.timed_out == 1
    assert type(reported[0]) is TimeoutError  # the builtin, on every Python


async def test_tasks_see_contextvars_as_they_were_at_add_task(
    events: list[object],
) -> None:
    async def report() -> None:
        events.append(request_id.get())

    async def inner(scope: object, receive: object, send: object) -> None:
        request_id.set("at add_task")
        add_task(report)
        request_id.set("changed later")
        await send(START_200)
        await send(BODY)

    await call(BackgroundTasksMiddleware(inner), events)

    assert events[-1] == "at add_task"


async def test_sync_view_context_changes_reach_its_tasks(events: list[object]) -> None:
    def report() -> None:
        events.append(request_id.get())

    def sync_view() -> None:
        request_id.set("set in the sync view")
        add_task(report)

    async def inner(scope: object, receive: object, send: object) -> None:
        await sync_to_async(sync_view)()
        await send(START_200)
        await send(BODY)

    await call(BackgroundTasksMiddleware(inner), events)

    assert events[-1] == "set in the sync view"


async def test_context_changes_by_a_task_do_not_leak_into_the_next(
    events: list[object],
) -> None:
    async def change() -> None:
        request_id.set("changed by a task")

    async def report() -> None:
        events.append(request_id.get("unset"))

    await call(BackgroundTasksMiddleware(scheduling((change,), (report,))), events)

    assert events[-1] == "unset"


@pytest.mark.parametrize(
    "error", [KeyboardInterrupt(), SystemExit(3), asyncio.CancelledError()]
)
async def test_base_exceptions_from_a_task_count_as_failed_and_stop_nothing(
    events: list[object], error: BaseException
) -> None:
    async def raises() -> None:
        raise error

    app = BackgroundTasksMiddleware(scheduling((raises,), (events.append, "next")))

    await call(app, events)

    assert events[-1] == "next"
    assert (app.stats.failed, app.stats.succeeded) == (1, 1)
    assert_accounted(app.stats)


async def test_sync_callable_returning_a_coroutine_has_it_awaited(
    events: list[object],
) -> None:
    async def send_email(label: str) -> None:
        events.append(label)

    app = BackgroundTasksMiddleware(scheduling((lambda: send_email("awaited"),)))

    await call(app, events)

    assert events[-1] == "awaited"
    assert app.stats.succeeded == 1


async def test_async_task_called_with_wrong_arguments_fails_and_is_logged(
    caplog: pytest.LogCaptureFixture,
) -> None:
    async def send_receipt(order: int) -> None:
        pass

    app = BackgroundTasksMiddleware(scheduling((send_receipt, 1, "one too many")))
    await call(app, [])

    assert app.stats.failed == 1
    [record] = caplog.records
    assert record.getMessage().endswith("send_receipt failed")
    assert isinstance(record.exc_info[1], TypeError)  # type: ignore[index]


async def test_marked_coroutine_function_may_return_any_awaitable(
    events: list[object],
) -> None:
    def returns_a_future() -> "asyncio.Future[None]":
        future = asyncio.get_running_loop().create_future()
        future.set_result(None)
        events.append("called")
        return future

    app = BackgroundTasksMiddleware(
        scheduling((markcoroutinefunction(returns_a_future),))
    )
    await call(app, events)

    assert events[-1] == "called"
    assert app.stats.succeeded == 1


async def test_chains_start_through_the_apps_own_task_factory_in_both_modes(
    events: list[object],
) -> None:
    loop = asyncio.get_running_loop()
    created: list[asyncio.Task[Any]] = []
    original = loop.get_task_factory()

    def recording_factory(
        loop: asyncio.AbstractEventLoop, coro: Any, **options: Any
    ) -> "asyncio.Task[Any]":
        task = asyncio.Task(coro, loop=loop, **options)
        created.append(task)
        return task

    seen: list[object] = []

    async def task() -> None:
        seen.append(asyncio.current_task())

    loop.set_task_factory(recording_factory)
    try:
        for mode in ("inline", "detached"):
            app = BackgroundTasksMiddleware(scheduling((task,)), mode=mode)
            await call(app, events)
            await app.join()
    finally:
        loop.set_task_factory(original)

    # In both modes a task runs in its chain's Task, which the app's
    # factory made.
    assert len(seen) == 2
    assert set(seen) <= set(created)
