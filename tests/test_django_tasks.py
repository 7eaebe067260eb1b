"""``asgi_bgtasks.django.AfterResponseBackend``: Django's tasks framework, run
after the response by the middleware (DESIGN.md, "Integrations → Django
tasks"). Tasks and views: ``tests/apps/django_jobs.py``; end to end, under
hypercorn and with django-tasks-db's worker: ``test_example_django.py``."""

import asyncio
import contextvars
import logging
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from datetime import timedelta
from types import ModuleType
from typing import Any

import httpx
import pytest
from django.core.handlers.asgi import ASGIHandler
from django.db import connection, connections
from django.test import Client, override_settings
from django.utils import timezone
from helpers import BODY, START_200, Lifespan, assert_accounted, call, with_lifespan

import asgi_bgtasks.django
from asgi_bgtasks import BackgroundTasksMiddleware, DroppedTask
from asgi_bgtasks.django import AfterResponseBackend, TaskDropped
from asgi_bgtasks.testing import run_tasks_on_exit

try:
    from django.tasks import TaskResultStatus
    from django.tasks.exceptions import InvalidTask, TaskResultDoesNotExist
    from django.tasks.signals import task_enqueued, task_finished, task_started
except ImportError:  # Django 5.2: the django-tasks backport
    from django_tasks import TaskResultStatus
    from django_tasks.exceptions import InvalidTaskError as InvalidTask
    from django_tasks.exceptions import TaskResultDoesNotExist
    from django_tasks.signals import task_enqueued, task_finished, task_started

HANG = 30  # seconds a test waits for a task to start, should it fail

READY, RUNNING = TaskResultStatus.READY, TaskResultStatus.RUNNING
SUCCESSFUL, FAILED = TaskResultStatus.SUCCESSFUL, TaskResultStatus.FAILED


@pytest.fixture(autouse=True, scope="module")
def _django(django_project: ModuleType) -> None:
    """Django set up by the example project, whose TASKS is our backend."""


@pytest.fixture
def jobs(events: list[Any], monkeypatch: pytest.MonkeyPatch) -> ModuleType:
    """The test tasks, reporting to ``events``."""
    from tests.apps import django_jobs

    monkeypatch.setattr(django_jobs, "ran", events)
    monkeypatch.setattr(django_jobs, "arrived", asyncio.Event())
    monkeypatch.setattr(django_jobs, "gate", asyncio.Event())
    monkeypatch.setattr(django_jobs, "unwound", asyncio.Event())
    monkeypatch.setattr(django_jobs, "released", threading.Event())
    monkeypatch.setattr(django_jobs, "attempts", {})
    return django_jobs


@pytest.fixture
def django_app(jobs: ModuleType) -> Iterator[BackgroundTasksMiddleware]:
    """Django's ASGI handler, serving the test views, in the middleware."""
    with override_settings(ROOT_URLCONF="tests.apps.django_jobs"):
        yield BackgroundTasksMiddleware(ASGIHandler())


@pytest.fixture
def atomic_requests(monkeypatch: pytest.MonkeyPatch) -> None:
    """Each view runs in a transaction, as with ATOMIC_REQUESTS in settings."""
    monkeypatch.setitem(connections.settings["default"], "ATOMIC_REQUESTS", True)


async def get(app: Any, events: list[Any], path: str) -> httpx.Response:
    """GET ``path`` from ``app`` over ASGI, logging each message it sends."""

    async def recording(scope: Any, receive: Any, send: Any) -> None:
        async def send_and_log(message: dict[str, Any]) -> None:
            events.append(message["type"])
            await send(message)

        await app(scope, receive, send_and_log)

    transport = httpx.ASGITransport(app=recording)
    async with httpx.AsyncClient(transport=transport, base_url="http://localhost") as c:
        return await c.get(path)


def enqueuing(
    results: list[Any], *calls: tuple[Any, ...], status: int = 200
) -> Callable[..., Any]:
    """A raw ASGI app that enqueues each ``(task, *args)``, then answers."""

    async def app(scope: Any, receive: Any, send: Any) -> None:
        for task, *args in calls:
            results.append(task.enqueue(*args))
        await send({**START_200, "status": status})
        await send(BODY)

    return app


async def ran_after_a_request(
    events: list[Any], task: Any, *args: Any
) -> tuple[Any, BackgroundTasksMiddleware]:
    """Enqueue ``task(*args)`` in a request; once the request's tasks have run,
    its result as the backend holds it, and the middleware."""
    results: list[Any] = []
    app = BackgroundTasksMiddleware(enqueuing(results, (task, *args)))
    await call(app, events)
    await app.join()
    return now(results[0]), app


def now(result: Any) -> Any:
    """``result``, as the backend holds it now."""
    result.refresh()
    return result


def error_classes(result: Any) -> list[type[BaseException]]:
    return [error.exception_class for error in result.errors]


# During a request: after the response


async def test_a_task_enqueued_in_a_request_runs_after_the_response(
    jobs: ModuleType, events: list[Any]
) -> None:
    results: list[Any] = []
    app = BackgroundTasksMiddleware(enqueuing(results, (jobs.remember, "hello")))

    await call(app, events)
    await app.join()

    assert events == ["http.response.start", "http.response.body", "hello"]
    [result] = results
    assert result.status == READY  # what enqueue returned: a snapshot
    assert now(result).status == SUCCESSFUL
    assert result.return_value == "HELLO"
    assert result.args == ["hello"]
    assert result.attempts == 1
    assert result.enqueued_at <= result.started_at <= result.finished_at
    assert app.stats.succeeded == 1


async def test_the_result_moves_from_ready_to_running_to_successful(
    jobs: ModuleType, events: list[Any]
) -> None:
    results: list[Any] = []
    app = BackgroundTasksMiddleware(enqueuing(results, (jobs.held, "report")))
    backend = jobs.held.get_backend()

    request = asyncio.create_task(call(app, events))
    await asyncio.wait_for(jobs.arrived.wait(), HANG)
    [result] = results
    seen = [result.status, now(result).status]
    jobs.gate.set()
    await request

    assert seen == [READY, RUNNING]
    assert now(result).status == SUCCESSFUL
    assert backend.get_result(result.id).status == SUCCESSFUL
    assert (await backend.aget_result(result.id)).status == SUCCESSFUL
    assert result.return_value is None


async def test_an_async_task_runs_after_the_response(
    jobs: ModuleType, events: list[Any]
) -> None:
    result, _ = await ran_after_a_request(events, jobs.remember_async, "a")

    assert events == ["http.response.start", "http.response.body", "a"]
    assert result.return_value == ["a", "async"]


async def test_sync_view_tasks_run_in_order_with_add_task_after_the_response(
    django_app: BackgroundTasksMiddleware, events: list[Any]
) -> None:
    response = await get(django_app, events, "/order")
    await django_app.join()

    assert response.json()["status"] == READY
    assert events == [
        "http.response.start",
        "http.response.body",
        "first",
        "second",
        "third",
    ]
    result = django_app.stats
    assert (result.scheduled, result.succeeded) == (3, 3)


async def test_aenqueue_in_an_async_view_runs_after_the_response(
    django_app: BackgroundTasksMiddleware, events: list[Any], jobs: ModuleType
) -> None:
    response = await get(django_app, events, "/async")
    await django_app.join()

    assert response.json()["status"] == READY
    assert events[-1] == "from an async view"
    result = jobs.remember_async.get_result(response.json()["task"])
    assert result.status == SUCCESSFUL


@pytest.mark.usefixtures("atomic_requests")
async def test_on_commit_in_an_atomic_request_enqueues_after_the_commit(
    django_app: BackgroundTasksMiddleware, events: list[Any]
) -> None:
    response = await get(django_app, events, "/on-commit")
    await django_app.join()

    assert response.status_code == 201
    assert events == [
        "view returns",
        "http.response.start",
        "http.response.body",
        "committed",
    ]


@pytest.mark.usefixtures("atomic_requests")
async def test_a_rolled_back_atomic_request_enqueues_nothing(
    django_app: BackgroundTasksMiddleware, events: list[Any]
) -> None:
    response = await get(django_app, events, "/roll-back")
    await django_app.join()

    assert response.status_code == 200
    assert events == ["http.response.start", "http.response.body"]
    assert django_app.stats.scheduled == 0


async def test_a_task_enqueued_by_a_running_task_runs_after_it(
    jobs: ModuleType, events: list[Any]
) -> None:
    app = BackgroundTasksMiddleware(enqueuing([], (jobs.enqueues_another, "first")))

    await call(app, events)
    await app.join()

    assert events[2:] == ["first", "first, then"]
    assert app.stats.succeeded == 2


# Failures, timeouts, retries, drops


async def test_a_failing_task_is_failed_logged_by_name_and_the_next_one_runs(
    jobs: ModuleType, events: list[Any], caplog: pytest.LogCaptureFixture
) -> None:
    results: list[Any] = []
    app = BackgroundTasksMiddleware(
        enqueuing(results, (jobs.fails, "one"), (jobs.remember, "two"))
    )

    await call(app, events)

    failed, succeeded = (now(result) for result in results)
    assert failed.status == FAILED
    assert error_classes(failed) == [ValueError]
    assert "ValueError: the task failed" in failed.errors[0].traceback
    assert succeeded.status == SUCCESSFUL
    assert "background task tests.apps.django_jobs.fails failed" in caplog.messages
    assert (app.stats.failed, app.stats.succeeded) == (1, 1)


async def test_a_task_that_cancels_itself_has_failed_with_its_cancellation(
    jobs: ModuleType, events: list[Any]
) -> None:
    result, app = await ran_after_a_request(events, jobs.cancels_itself, "x")

    assert error_classes(result) == [asyncio.CancelledError]
    assert app.stats.failed == 1


async def test_an_async_task_that_cancels_its_own_task_is_failed_not_timed_out(
    jobs: ModuleType, events: list[Any]
) -> None:
    with Signals() as signals:
        result, app = await ran_after_a_request(events, jobs.cancels_its_own_task, "x")

    assert app.stats.failed == 1  # its own cancellation: a failure, no timeout
    assert result.status == FAILED
    assert error_classes(result) == [asyncio.CancelledError]
    assert "TimeoutError" not in result.errors[0].traceback
    assert signals.seen == [("started", RUNNING), ("finished", FAILED)]


async def test_an_async_task_that_cancels_its_own_task_and_returns_is_failed(
    jobs: ModuleType, events: list[Any]
) -> None:
    result, app = await ran_after_a_request(
        events, jobs.cancels_its_own_task_and_returns, "x"
    )

    assert app.stats.failed == 1  # its Task ended cancelled, by its own request
    assert result.status == FAILED  # not SUCCESSFUL: as the middleware counts it
    assert error_classes(result) == [asyncio.CancelledError]
    assert "TimeoutError" not in result.errors[0].traceback


async def test_a_return_value_that_is_not_json_fails_the_task(
    jobs: ModuleType, events: list[Any]
) -> None:
    result, app = await ran_after_a_request(events, jobs.returns_a_set, "x")

    assert events[-1] == "x"  # it ran
    assert error_classes(result) == [TypeError]
    assert app.stats.failed == 1


async def test_task_options_timeout_applies_and_the_result_says_timed_out(
    jobs: ModuleType, events: list[Any], caplog: pytest.LogCaptureFixture
) -> None:
    result, app = await ran_after_a_request(events, jobs.too_slow, "x")

    assert result.status == FAILED
    assert error_classes(result) == [TimeoutError]
    assert "ran past its timeout" in result.errors[0].traceback
    assert app.stats.timed_out == 1
    assert (
        "background task tests.apps.django_jobs.too_slow timed out after 0.01 s "
        "and was cancelled"
    ) in caplog.messages


async def test_a_task_that_returns_after_its_timeout_cancelled_it_has_timed_out(
    jobs: ModuleType, events: list[Any], caplog: pytest.LogCaptureFixture
) -> None:
    with Signals() as signals:
        result, app = await ran_after_a_request(
            events, jobs.cleans_up_after_its_timeout, "x"
        )

    assert events[-1] == "x cleaned up"
    assert app.stats.timed_out == 1
    assert result.status == FAILED  # not SUCCESSFUL, though it returned
    assert error_classes(result) == [TimeoutError]
    assert "ran past its timeout" in result.errors[0].traceback
    with pytest.raises(ValueError, match="Task failed"):
        result.return_value  # noqa: B018
    assert signals.seen == [("started", RUNNING), ("finished", FAILED)]


class Expired(logging.Handler):
    """Sets ``event`` once the middleware logs that a task timed out."""

    def __init__(self) -> None:
        super().__init__()
        self.event = asyncio.Event()

    def emit(self, record: logging.LogRecord) -> None:
        if "timed out" in record.getMessage():
            self.event.set()  # logged on the event loop, by its timer


async def test_a_plain_def_task_past_its_timeout_has_timed_out_though_it_returns(
    jobs: ModuleType, events: list[Any]
) -> None:
    results: list[Any] = []
    app = BackgroundTasksMiddleware(enqueuing(results, (jobs.slow_in_thread, "x")))
    expired = Expired()
    logging.getLogger("asgi_bgtasks").addHandler(expired)
    try:
        request = asyncio.create_task(call(app, events))
        await asyncio.wait_for(expired.event.wait(), HANG)
    finally:
        logging.getLogger("asgi_bgtasks").removeHandler(expired)

    jobs.released.set()  # its thread could not be stopped: it goes on
    await request

    assert app.stats.timed_out == 1
    result = now(results[0])
    assert result.status == FAILED  # as the middleware counts it
    assert error_classes(result) == [TimeoutError]


async def test_task_options_retries_apply_and_each_attempt_is_recorded(
    jobs: ModuleType, events: list[Any]
) -> None:
    result, app = await ran_after_a_request(events, jobs.flaky, "mail")

    assert events[2:] == ["mail attempt 1", "mail attempt 2"]
    assert result.status == SUCCESSFUL
    assert result.attempts == 2
    assert error_classes(result) == [ConnectionError]
    assert (app.stats.retried, app.stats.succeeded) == (1, 1)


class Signals:
    """Records Django's task signals while connected, as (signal, status)."""

    def __init__(self) -> None:
        self.seen: list[tuple[str, str]] = []

    def started(self, sender: Any, task_result: Any, **kwargs: Any) -> None:
        self.seen.append(("started", task_result.status))

    def finished(self, sender: Any, task_result: Any, **kwargs: Any) -> None:
        self.seen.append(("finished", task_result.status))

    def __enter__(self) -> "Signals":
        task_started.connect(self.started)
        task_finished.connect(self.finished)
        return self

    def __exit__(self, *exc_info: object) -> None:
        task_started.disconnect(self.started)
        task_finished.disconnect(self.finished)


async def test_a_retried_task_finishes_once_after_its_last_attempt(
    jobs: ModuleType, events: list[Any]
) -> None:
    with Signals() as signals:
        result, _ = await ran_after_a_request(events, jobs.flaky, "mail")

    assert signals.seen == [
        ("started", RUNNING),
        ("started", RUNNING),  # no FAILED between: the failure was retried
        ("finished", SUCCESSFUL),
    ]
    assert result.status == SUCCESSFUL


async def test_a_task_waiting_for_its_retry_is_ready_and_fails_once_dropped(
    jobs: ModuleType, events: list[Any]
) -> None:
    results: list[Any] = []
    app = BackgroundTasksMiddleware(
        with_lifespan(
            enqueuing(results, (jobs.fails_then_waits_for_its_retry, "x")), events
        ),
        shutdown_timeout=0.01,
    )
    lifespan = Lifespan(app)
    await lifespan.startup()
    with Signals() as signals:
        await call(app, events)
        async with asyncio.timeout(HANG):
            while app.stats.retried == 0:  # noqa: ASYNC110
                await asyncio.sleep(0)

        waiting = now(results[0])
        await lifespan.shutdown()

    assert (waiting.status, waiting.finished_at) == (READY, None)
    assert error_classes(waiting) == [ConnectionError]
    result = now(results[0])
    assert result.status == FAILED
    assert error_classes(result) == [ConnectionError, TaskDropped]
    assert signals.seen == [("started", RUNNING), ("finished", FAILED)]


async def test_a_task_taking_context_sees_its_attempt(
    jobs: ModuleType, events: list[Any]
) -> None:
    result, _ = await ran_after_a_request(events, jobs.knows_its_attempt, "x")

    assert result.return_value == 1


async def test_a_5xx_response_drops_the_task_and_fails_its_result(
    django_app: BackgroundTasksMiddleware, events: list[Any], jobs: ModuleType
) -> None:
    handed: list[DroppedTask] = []
    app = BackgroundTasksMiddleware(ASGIHandler(), on_drop=handed.append)

    response = await get(app, events, "/fail")

    assert response.status_code == 500
    result = jobs.remember.get_result(events[0])  # the view logged its id
    assert result.status == FAILED
    assert error_classes(result) == [TaskDropped]
    assert (
        "TaskDropped: BackgroundTasksMiddleware dropped the task (error_response): "
        "its request's response had a 5xx status"
    ) in result.errors[0].traceback
    assert "never" not in events
    [dropped] = handed  # the user's on_drop still gets it, named and with args
    assert (dropped.name, dropped.args) == (
        "tests.apps.django_jobs.remember",
        ("never",),
    )


async def test_shutdown_drops_running_and_pending_tasks_and_fails_their_results(
    jobs: ModuleType, events: list[Any]
) -> None:
    results: list[Any] = []
    app = BackgroundTasksMiddleware(
        with_lifespan(
            enqueuing(results, (jobs.held, "running"), (jobs.remember, "pending")),
            events,
        ),
        shutdown_timeout=0.01,
    )
    lifespan = Lifespan(app)
    await lifespan.startup()
    await call(app, events)
    await asyncio.wait_for(jobs.arrived.wait(), HANG)

    await lifespan.shutdown()

    running, pending = (now(result) for result in results)
    for result in (running, pending):
        assert result.status == FAILED
        assert error_classes(result) == [TaskDropped]  # not also a timeout
        assert "dropped the task (shutdown)" in result.errors[0].traceback
    assert running.attempts == 1
    assert pending.attempts == 0
    assert app.stats.dropped == 2
    assert_accounted(app.stats)


async def test_what_a_dropped_task_does_while_it_unwinds_changes_nothing(
    jobs: ModuleType, events: list[Any]
) -> None:
    results: list[Any] = []
    app = BackgroundTasksMiddleware(
        with_lifespan(enqueuing(results, (jobs.stubborn, "x")), events),
        shutdown_timeout=0.01,
    )
    lifespan = Lifespan(app)
    await lifespan.startup()
    await call(app, events)
    await asyncio.wait_for(jobs.arrived.wait(), HANG)
    await lifespan.shutdown()  # gives up on it after its grace period
    assert "x cancelled" in events

    jobs.unwound.set()
    await asyncio.wait(asyncio.all_tasks() - {asyncio.current_task()})

    result = now(results[0])
    assert result.status == FAILED  # not SUCCESSFUL, though it returned
    assert error_classes(result) == [TaskDropped]


# Outside a request: at once, as ImmediateBackend


def test_outside_a_request_a_task_runs_at_once(jobs: ModuleType) -> None:
    result = jobs.remember.enqueue("now")

    assert jobs.ran == ["now"]
    assert result.status == SUCCESSFUL
    assert result.return_value == "NOW"


def test_outside_a_request_an_async_task_runs_at_once(jobs: ModuleType) -> None:
    result = jobs.remember_async.enqueue("now")

    assert result.return_value == ["now", "async"]


def test_outside_a_request_a_failing_task_fails_its_result_without_raising(
    jobs: ModuleType,
) -> None:
    result = jobs.fails.enqueue("now")

    assert result.status == FAILED
    assert error_classes(result) == [ValueError]


async def test_outside_a_request_aenqueue_runs_sync_and_async_tasks_at_once(
    jobs: ModuleType,
) -> None:
    sync = await jobs.remember.aenqueue("sync")
    async_ = await jobs.remember_async.aenqueue("async")
    failed = await jobs.fails.aenqueue("fails")
    failed_async = await jobs.fails_async.aenqueue("fails async")

    assert jobs.ran == ["sync", "async", "fails", "fails async"]
    assert (sync.status, async_.status) == (SUCCESSFUL, SUCCESSFUL)
    assert error_classes(failed) == [ValueError]
    assert error_classes(failed_async) == [ValueError]


# On the event loop, outside a request: in a Task of its own


async def finished(result: Any) -> Any:
    """``result`` once its task has finished, as the backend holds it."""
    async with asyncio.timeout(HANG):
        while now(result).status in (READY, RUNNING):  # noqa: ASYNC110
            await asyncio.sleep(0)
    return result


async def test_enqueue_on_the_event_loop_runs_an_async_task_in_a_task_of_its_own(
    jobs: ModuleType,
) -> None:
    result = jobs.remember_async.enqueue("on the loop")  # a sync call, on the loop

    if asyncio.get_running_loop().get_task_factory() is None:
        assert result.status == READY  # it does not block the loop: it runs next
        assert jobs.ran == []
    # (An eager task factory starts it at once, as it does every Task.)
    assert (await finished(result)).status == SUCCESSFUL
    assert result.return_value == ["on the loop", "async"]
    assert jobs.ran == ["on the loop"]


async def test_an_async_task_enqueued_by_on_drop_runs_and_records_its_outcome(
    jobs: ModuleType, events: list[Any]
) -> None:
    again: list[Any] = []

    def re_enqueue(dropped: DroppedTask) -> None:  # the at-least-once recipe
        again.append(jobs.remember_async.enqueue(*dropped.args))

    app = BackgroundTasksMiddleware(
        enqueuing([], (jobs.remember, "dropped, then again"), status=500),
        on_drop=re_enqueue,
    )

    await call(app, events)

    [result] = again
    assert (await finished(result)).status == SUCCESSFUL
    assert events[-1] == "dropped, then again"


async def test_a_failing_async_task_enqueued_in_a_lifespan_hook_has_failed(
    jobs: ModuleType, events: list[Any], caplog: pytest.LogCaptureFixture
) -> None:
    results: list[Any] = []

    async def app(scope: Any, receive: Any, send: Any) -> None:
        message = await receive()
        if message["type"] == "lifespan.startup":
            results.append(jobs.fails_async.enqueue("at startup"))
            await send({"type": "lifespan.startup.complete"})
        await receive()
        await send({"type": "lifespan.shutdown.complete"})

    lifespan = Lifespan(BackgroundTasksMiddleware(app))
    await lifespan.startup()
    [result] = results
    await finished(result)
    await lifespan.shutdown()

    assert result.status == FAILED
    assert error_classes(result) == [ValueError]
    assert jobs.ran == ["at startup"]
    assert not any(  # not the middleware's task: as outside a request
        r.name == "asgi_bgtasks" and r.levelno >= logging.WARNING
        for r in caplog.records
    )


def test_an_async_task_whose_event_loop_ends_first_has_failed(
    jobs: ModuleType,
) -> None:
    async def enqueue_and_return() -> Any:
        return jobs.remember_async.enqueue("cut short")

    result = now(asyncio.run(enqueue_and_return()))  # it cancels what is left

    assert result.status == FAILED  # not READY, nor RUNNING, for ever
    assert error_classes(result) == [asyncio.CancelledError]


async def test_an_async_task_whose_task_is_cancelled_before_it_starts_has_failed(
    jobs: ModuleType,
) -> None:
    if asyncio.get_running_loop().get_task_factory() is not None:
        pytest.skip("an eager task factory starts every Task at once")
    others = asyncio.all_tasks()
    result = jobs.remember_async.enqueue("never")
    [worker] = asyncio.all_tasks() - others
    worker.cancel()  # as a server cancels what is left on its loop as it ends

    assert (await finished(result)).status == FAILED
    assert jobs.ran == []
    assert error_classes(result) == [asyncio.CancelledError]
    assert "its event loop cancelled it before it started" in (
        result.errors[0].traceback
    )


async def test_an_async_task_that_no_task_can_be_made_for_has_failed_saying_why(
    jobs: ModuleType,
) -> None:
    def factory(loop: Any, coro: Any, **kwargs: Any) -> Any:
        raise ValueError("the app's task factory is broken")

    loop = asyncio.get_running_loop()
    loop.set_task_factory(factory)
    try:
        result = jobs.remember_async.enqueue("never")
    finally:
        loop.set_task_factory(None)

    assert jobs.ran == []
    assert result.status == FAILED
    assert error_classes(result) == [RuntimeError]
    traceback = result.errors[0].traceback
    assert "could not start the task on the event loop" in traceback
    assert "ValueError: the app's task factory is broken" in traceback


def test_outside_a_request_the_task_shares_the_callers_connection(
    jobs: ModuleType,
) -> None:
    jobs.uses_the_database.enqueue("x")

    [wrapper] = jobs.ran
    assert wrapper.connection is not None  # left as the caller's code has it
    connection.close()


async def test_in_a_request_a_sync_task_closes_its_database_connection(
    jobs: ModuleType, events: list[Any]
) -> None:
    app = BackgroundTasksMiddleware(enqueuing([], (jobs.uses_the_database, "x")))

    await call(app, events)

    wrapper = events[-1]
    assert wrapper is not connections["default"]  # another thread's
    assert wrapper.connection is None


def test_djangos_test_client_runs_the_task_at_once(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from examples.django_app.members import tasks

    sent: list[str] = []
    monkeypatch.setattr(tasks, "send_welcome_email", sent.append)
    client = Client(HTTP_HOST="localhost")

    response = client.post("/sign-up?email=ann@example.com")

    result = tasks.welcome.get_result(response.json()["task"])
    assert sent == ["ann@example.com"]  # no middleware: it ran during the request
    assert result.status == TaskResultStatus.SUCCESSFUL


def test_run_tasks_on_exit_holds_the_tasks_until_the_block_ends(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from examples.django_app.members import tasks

    sent: list[str] = []
    monkeypatch.setattr(tasks, "send_welcome_email", sent.append)
    client = Client(HTTP_HOST="localhost")

    with run_tasks_on_exit():
        response = client.post("/sign-up?email=ann@example.com")
        assert sent == []  # enqueued, not run yet

    result = tasks.welcome.get_result(response.json()["task"])
    assert sent == ["ann@example.com"]
    assert result.status == TaskResultStatus.SUCCESSFUL


def test_on_commit_outside_a_request_runs_the_task_when_the_view_commits(
    jobs: ModuleType,
) -> None:
    with override_settings(ROOT_URLCONF="tests.apps.django_jobs"):
        response = Client(HTTP_HOST="localhost").get("/on-commit")

    assert response.status_code == 201
    assert jobs.ran == ["committed", "view returns"]


def test_signals_are_sent_as_by_djangos_own_backends(jobs: ModuleType) -> None:
    with Signals() as signals:
        jobs.remember.enqueue("x")

    assert signals.seen == [("started", RUNNING), ("finished", SUCCESSFUL)]


class SubBackend(AfterResponseBackend):
    """A project's own backend, built on ours."""


async def test_signals_name_the_backends_own_class_as_sender(
    jobs: ModuleType, events: list[Any]
) -> None:
    backend = SubBackend("default", {})
    seen: list[tuple[str, str]] = []

    def receiver(name: str) -> Callable[..., None]:
        def receive(sender: Any, task_result: Any, **kwargs: Any) -> None:
            seen.append((name, task_result.args[0]))

        return receive

    receivers = {
        signal: receiver(name)
        for signal, name in (
            (task_enqueued, "enqueued"),
            (task_started, "started"),
            (task_finished, "finished"),
        )
    }

    async def app(scope: Any, receive: Any, send: Any) -> None:
        backend.enqueue(jobs.remember, ["after the response"], {})
        await send(START_200)
        await send(BODY)

    for signal, receive in receivers.items():
        signal.connect(receive, sender=SubBackend)
    try:
        await call(BackgroundTasksMiddleware(app), events)
        backend.enqueue(jobs.remember, ["at once"], {})  # outside a request
    finally:
        for signal, receive in receivers.items():
            signal.disconnect(receive, sender=SubBackend)

    assert seen == [
        ("enqueued", "after the response"),
        ("started", "after the response"),
        ("finished", "after the response"),
        ("enqueued", "at once"),
        ("started", "at once"),
        ("finished", "at once"),
    ]


async def test_a_signal_receiver_that_raises_on_a_failure_is_logged(
    jobs: ModuleType, events: list[Any], caplog: pytest.LogCaptureFixture
) -> None:
    def raises(sender: Any, task_result: Any, **kwargs: Any) -> None:
        raise RuntimeError("a receiver's bug")

    task_finished.connect(raises)
    try:
        result, app = await ran_after_a_request(events, jobs.fails, "x")
    finally:
        task_finished.disconnect(raises)

    assert result.status == FAILED
    assert app.stats.failed == 1
    assert (
        "the settle hook of background task tests.apps.django_jobs.fails raised"
        in caplog.messages
    )


# Arguments, flags, the result store


def test_arguments_must_survive_json(jobs: ModuleType) -> None:
    with pytest.raises(TypeError, match="Unsupported type"):
        jobs.remember.enqueue(object())

    assert jobs.ran == []


def test_the_backend_declares_what_it_cannot_do(jobs: ModuleType) -> None:
    assert AfterResponseBackend.supports_async_task
    assert not AfterResponseBackend.supports_defer
    assert not AfterResponseBackend.supports_get_result
    assert not AfterResponseBackend.supports_priority
    with pytest.raises(InvalidTask, match="run_after"):
        jobs.remember.using(run_after=timezone.now() + timedelta(minutes=1))
    with pytest.raises(InvalidTask, match="priority"):
        jobs.remember.using(priority=10)


def test_every_backend_instance_of_an_alias_sees_the_same_results(
    jobs: ModuleType,
) -> None:
    result = jobs.remember.enqueue("x")

    # Django makes one backend instance per thread and async context.
    assert AfterResponseBackend("default", {}).get_result(result.id).id == result.id


def test_an_unknown_result_id_does_not_exist(jobs: ModuleType) -> None:
    with pytest.raises(TaskResultDoesNotExist):
        jobs.remember.get_result("no-such-id")


def test_the_store_forgets_the_oldest_finished_result_first(jobs: ModuleType) -> None:
    backend = AfterResponseBackend("bounded", {"OPTIONS": {"max_results": 2}})

    def at_once(text: str) -> Any:  # no request in an empty context
        return contextvars.Context().run(backend.enqueue, jobs.remember, [text], {})

    with run_tasks_on_exit():
        waiting = backend.enqueue(jobs.remember, ["waiting"], {})
        finished = at_once("finished")
        newest = backend.enqueue(jobs.remember, ["newest"], {})
        held = [waiting.id, newest.id]
        assert [backend.get_result(i).id for i in held] == held
        with pytest.raises(TaskResultDoesNotExist):
            backend.get_result(finished.id)

        # None has finished: the oldest goes.
        backend.enqueue(jobs.remember, ["last"], {})
        with pytest.raises(TaskResultDoesNotExist):
            backend.get_result(waiting.id)

    assert jobs.ran == ["finished", "waiting", "newest", "last"]


def test_max_results_must_be_a_positive_int() -> None:
    with pytest.raises(ValueError, match=r"\['max_results'\] must be an int >= 1"):
        AfterResponseBackend("bad", {"OPTIONS": {"max_results": 0}})


def test_the_default_store_keeps_ten_thousand_results() -> None:
    backend = AfterResponseBackend("default", {})

    assert backend._results.limit == 10_000


def test_db_task_does_not_need_djangos_tasks_framework() -> None:
    blocked = """
import sys

class Blocked:
    def find_spec(self, name, path=None, target=None):
        if name in ("django.tasks", "django_tasks"):
            raise ImportError(f"{name} is blocked by the test")

sys.meta_path.insert(0, Blocked())
import asgi_bgtasks.django
print(asgi_bgtasks.django.db_task.__name__)
asgi_bgtasks.django.AfterResponseBackend
"""
    result = subprocess.run(
        [sys.executable, "-c", blocked], capture_output=True, text=True, timeout=60
    )

    assert result.stdout == "db_task\n"
    assert "ImportError: django_tasks is blocked by the test" in result.stderr


def test_the_django_module_has_no_other_lazy_names() -> None:
    with pytest.raises(AttributeError, match="no attribute 'Backend'"):
        asgi_bgtasks.django.Backend  # noqa: B018


def test_a_failed_task_outside_a_request_is_not_logged_as_a_background_task(
    jobs: ModuleType, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.ERROR)

    jobs.fails.enqueue("now")

    assert not any(r.name == "asgi_bgtasks" for r in caplog.records)
