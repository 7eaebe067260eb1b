"""Scheduling: the public calls, where they work, and what they refuse."""

import functools
import threading
import urllib.request
from types import ModuleType
from typing import Any
from wsgiref.simple_server import WSGIRequestHandler, make_server

import pytest
from asgiref.sync import sync_to_async
from django.test import Client
from helpers import BODY, START_200, call, http_scope, recording_task

from asgi_bgtasks import (
    BackgroundTasks,
    BackgroundTasksMiddleware,
    add_task,
    background_tasks,
)


def test_add_task_outside_a_request_raises_naming_the_middleware() -> None:
    async def task() -> None:
        pass

    with pytest.raises(RuntimeError, match="BackgroundTasksMiddleware"):
        add_task(task)


def test_background_tasks_without_the_middleware_raises_naming_it() -> None:
    with pytest.raises(RuntimeError, match="BackgroundTasksMiddleware"):
        background_tasks(http_scope())


async def test_scope_object_and_add_task_share_one_ordered_list(
    events: list[object],
) -> None:
    task = recording_task(events)

    async def inner(scope: dict[str, object], receive: object, send: object) -> None:
        tasks = background_tasks(scope)
        assert isinstance(tasks, BackgroundTasks)
        tasks.add_task(task, "first, from the scope")
        add_task(task, "second, from the context")
        await send(START_200)
        await send(BODY)

    await call(BackgroundTasksMiddleware(inner), events)

    assert events[-2:] == ["first, from the scope", "second, from the context"]


async def test_add_task_works_from_a_sync_view_in_a_worker_thread(
    events: list[object],
) -> None:
    view_threads: list[int] = []

    def sync_view() -> None:
        view_threads.append(threading.get_ident())
        add_task(events.append, "task from sync view")

    async def inner(scope: object, receive: object, send: object) -> None:
        await sync_to_async(sync_view)()
        await send(START_200)
        await send(BODY)

    await call(BackgroundTasksMiddleware(inner), events)

    assert view_threads[0] != threading.get_ident()
    assert events[-1] == "task from sync view"


@pytest.mark.parametrize("not_callable", [None, 42, "bob@example.com"])
async def test_non_callable_raises_type_error_at_the_call(
    not_callable: object,
) -> None:
    errors: list[BaseException] = []

    async def inner(scope: object, receive: object, send: object) -> None:
        try:
            add_task(not_callable)  # type: ignore[arg-type]
        except TypeError as error:
            errors.append(error)
        await send(START_200)
        await send(BODY)

    app = BackgroundTasksMiddleware(inner)
    await call(app, [])

    assert str(errors[0]) == (
        f"add_task() needs a callable, got {type(not_callable).__name__}"
    )
    assert "bob@example.com" not in str(errors[0])
    assert app.stats.scheduled == 0


async def test_coroutine_object_raises_type_error_telling_to_pass_the_function() -> (
    None
):
    errors: list[BaseException] = []

    async def send_email(address: str) -> None:
        pass

    async def inner(scope: object, receive: object, send: object) -> None:
        try:
            add_task(send_email("bob@example.com"))  # type: ignore[arg-type]
        except TypeError as error:
            errors.append(error)
        await send(START_200)
        await send(BODY)

    await call(BackgroundTasksMiddleware(inner), [])

    # The coroutine was closed: no "never awaited" warning (warnings are errors).
    assert "not add_task(send_email(user))" in str(errors[0])


async def test_add_task_after_the_requests_tasks_finished_raises(
    events: list[object],
) -> None:
    kept: list[BackgroundTasks] = []

    async def inner(scope: dict[str, object], receive: object, send: object) -> None:
        kept.append(background_tasks(scope))
        add_task(events.append, "ran")
        await send(START_200)
        await send(BODY)

    await call(BackgroundTasksMiddleware(inner), events)

    with pytest.raises(RuntimeError, match="already run or been dropped"):
        kept[0].add_task(events.append, "too late")
    assert events[-1] == "ran"


async def test_add_task_after_a_request_that_scheduled_nothing_raises() -> None:
    kept: list[BackgroundTasks] = []

    async def inner(scope: dict[str, object], receive: object, send: object) -> None:
        kept.append(background_tasks(scope))
        await send(START_200)
        await send(BODY)

    await call(BackgroundTasksMiddleware(inner), [])

    with pytest.raises(RuntimeError, match="already run or been dropped"):
        kept[0].add_task(print)


async def test_task_added_from_inside_a_task_runs_after_the_chain(
    events: list[object],
) -> None:
    async def parent() -> None:
        events.append("parent")
        add_task(events.append, "child")

    async def inner(scope: object, receive: object, send: object) -> None:
        add_task(parent)
        add_task(events.append, "sibling")
        await send(START_200)
        await send(BODY)

    app = BackgroundTasksMiddleware(inner)
    await call(app, events)

    assert events[-3:] == ["parent", "sibling", "child"]
    assert app.stats.succeeded == 3


async def test_nested_middleware_runs_each_task_once(events: list[object]) -> None:
    task = recording_task(events)

    async def inner(scope: dict[str, object], receive: object, send: object) -> None:
        add_task(task, "once")
        await send(START_200)
        await send(BODY)

    inner_middleware = BackgroundTasksMiddleware(inner)
    outer = BackgroundTasksMiddleware(inner_middleware)

    await call(outer, events)

    assert events.count("once") == 1
    assert outer.stats.succeeded == 1
    assert inner_middleware.stats.scheduled == 0


async def test_partials_callable_objects_and_classes_are_accepted(
    events: list[object],
) -> None:
    class AsyncJob:
        async def __call__(self, label: str) -> None:
            events.append(label)

    class Job:
        def __init__(self, label: str) -> None:
            events.append(label)

    async def labelled(prefix: str, label: str) -> None:
        events.append(f"{prefix} {label}")

    async def inner(scope: object, receive: object, send: object) -> None:
        add_task(functools.partial(labelled, "partial"), "async")
        add_task(functools.partial(events.append), "partial sync")
        add_task(AsyncJob(), "async callable object")
        add_task(Job, "class")
        add_task(lambda: events.append("lambda"))
        await send(START_200)
        await send(BODY)

    app = BackgroundTasksMiddleware(inner)
    await call(app, events)

    assert events[-5:] == [
        "partial async",
        "partial sync",
        "async callable object",
        "class",
        "lambda",
    ]


async def test_asgi2_apps_are_accepted(events: list[object]) -> None:
    class Asgi2App:
        def __init__(self, scope: object) -> None:
            self.scope = scope

        async def __call__(self, receive: object, send: object) -> None:
            add_task(events.append, "task")
            await send(START_200)  # type: ignore[operator]
            await send(BODY)  # type: ignore[operator]

    await call(BackgroundTasksMiddleware(Asgi2App), events)

    assert events == ["http.response.start", "http.response.body", "task"]


def test_add_task_under_a_real_wsgi_server_says_it_is_wsgi_and_what_to_run() -> None:
    def wsgi_view(environ: dict[str, object], start_response: Any) -> list[bytes]:
        try:
            add_task(print, "never")
            body = b"scheduled"
        except RuntimeError as error:
            body = str(error).encode()
        start_response("200 OK", [("Content-Type", "text/plain")])
        return [body]

    with make_server("127.0.0.1", 0, wsgi_view, handler_class=_QuietHandler) as server:
        serving = threading.Thread(target=server.handle_request)
        serving.start()
        port = server.server_address[1]
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/") as response:
            message = response.read().decode()
        serving.join()

    assert message.startswith("add_task() was called while serving a WSGI request")
    assert "hypercorn myproject.asgi:application" in message
    assert "run_tasks_on_exit" in message


def test_add_task_in_a_django_view_under_the_wsgi_test_client_says_so(
    django_project: ModuleType,
) -> None:
    client = Client(HTTP_HOST="localhost")

    with pytest.raises(RuntimeError, match="while serving a WSGI request"):
        client.get("/register", {"email": "wsgi@example.com"})


class _QuietHandler(WSGIRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        pass


def test_add_task_in_djangos_runserver_says_it_is_wsgi(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr("sys.argv", ["manage.py", "runserver"])

    with pytest.raises(RuntimeError, match="Django's runserver"):
        add_task(print, "never")
