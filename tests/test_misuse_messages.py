"""Misuse raises at once, with a message that names the fix: what to write
instead, which option to change, or which command to run."""

import asyncio
import importlib
import sys
from typing import Any

import pytest
from fastapi import FastAPI
from prometheus_client import CollectorRegistry

from asgi_bgtasks import (
    BackgroundTasksMiddleware,
    add_task,
    background_tasks,
    prometheus,
    task_options,
)
from asgi_bgtasks.testing import run_tasks_on_exit, settled


async def app(scope: Any, receive: Any, send: Any) -> None:
    """Never called: these tests only build the middleware."""


async def send_email(address: str) -> None:
    await asyncio.sleep(0)


@pytest.fixture
def registry() -> CollectorRegistry:
    return CollectorRegistry()


def test_add_task_outside_a_request_says_to_wrap_the_app() -> None:
    with pytest.raises(RuntimeError) as raised:
        add_task(print, "never")

    assert "wrap the ASGI app with BackgroundTasksMiddleware(app)" in str(raised.value)
    assert "while a request is being handled" in str(raised.value)
    # What to check when it was: the server may serve the inner app.
    assert "check that the server serves the wrapped object" in str(raised.value)
    assert "app.add_middleware(BackgroundTasksMiddleware)" in str(raised.value)


def test_add_task_under_runserver_names_the_asgi_command_to_run(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr("sys.argv", ["manage.py", "runserver"])

    with pytest.raises(RuntimeError) as raised:
        add_task(print, "never")

    assert "Serve the ASGI app instead, e.g. `hypercorn " in str(raised.value)
    assert "run_tasks_on_exit()" in str(raised.value)


def test_background_tasks_without_the_middleware_says_to_wrap_the_app() -> None:
    with pytest.raises(RuntimeError) as raised:
        background_tasks({"type": "http"})

    assert str(raised.value).endswith("BackgroundTasksMiddleware(app), outermost")


async def test_add_task_of_a_coroutine_object_shows_the_call_to_write() -> None:
    scheduled: list[BaseException] = []

    async def view(scope: Any, receive: Any, send: Any) -> None:
        coroutine = send_email("ann@example.com")
        try:
            add_task(coroutine)  # type: ignore[arg-type]
        except TypeError as error:
            scheduled.append(error)
        finally:
            coroutine.close()
        await send({"type": "http.response.start", "status": 204, "headers": []})
        await send({"type": "http.response.body", "body": b""})

    async def receive() -> dict[str, Any]:
        return {"type": "http.disconnect"}

    async def send(message: dict[str, Any]) -> None:
        pass

    await BackgroundTasksMiddleware(view)({"type": "http"}, receive, send)

    [error] = scheduled
    assert "write add_task(send_email, user), not add_task(send_email(user))" in str(
        error
    )


@pytest.mark.parametrize(
    ("option", "value", "says"),
    [
        ("max_concurrency", 2.5, "max_concurrency must be an int, got 2.5"),
        ("task_timeout", "5", "task_timeout must be a number of seconds, got '5'"),
        ("run_on_error", "yes", "run_on_error must be"),
        ("on_error", send_email, "on_error must be a plain (not async) callable"),
    ],
)
def test_a_bad_option_type_names_the_option_and_what_it_takes(
    option: str, value: object, says: str
) -> None:
    with pytest.raises(TypeError) as raised:
        BackgroundTasksMiddleware(app, **{option: value})

    assert str(raised.value).startswith(says)


def test_task_options_on_a_bound_method_says_where_to_decorate() -> None:
    class Mailer:
        def send(self) -> None:
            pass

    with pytest.raises(TypeError) as raised:
        task_options(retries=1)(Mailer().send)

    assert str(raised.value).endswith("decorate the function where it is defined")


def test_task_options_without_parentheses_says_to_add_them() -> None:
    with pytest.raises(TypeError) as raised:
        task_options(send_email)  # type: ignore[arg-type]  # i.e. @task_options

    assert "write @task_options() with parentheses" in str(raised.value)


def test_settled_given_an_app_without_the_middleware_says_what_it_needs() -> None:
    with pytest.raises(TypeError) as raised:
        settled(FastAPI())

    assert str(raised.value).startswith(
        "settled() needs the BackgroundTasksMiddleware instance, or an app that "
        "installed it (app.add_middleware(BackgroundTasksMiddleware)"
    )


def test_prometheus_register_given_an_app_without_the_middleware_says_what_it_needs(
    registry: CollectorRegistry,
) -> None:
    with pytest.raises(TypeError) as raised:
        prometheus.register(FastAPI(), registry)

    assert str(raised.value).startswith(
        "register() needs the BackgroundTasksMiddleware instance, or an app that "
        "installed it"
    )


def test_prometheus_register_with_a_positional_label_says_it_is_keyword_only() -> None:
    with pytest.raises(TypeError) as raised:
        prometheus.register(BackgroundTasksMiddleware(app), "default")  # type: ignore[arg-type]

    assert "the label is keyword-only: register(middleware, label='default')" in str(
        raised.value
    )


def test_prometheus_without_prometheus_client_names_the_extra_to_install(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setitem(sys.modules, "prometheus_client", None)  # not installed
    monkeypatch.delitem(sys.modules, "asgi_bgtasks.prometheus")

    with pytest.raises(ModuleNotFoundError) as raised:
        importlib.import_module("asgi_bgtasks.prometheus")

    assert "pip install 'asgi-bgtasks[prometheus]'" in str(raised.value)
    assert raised.value.name == "prometheus_client"


def test_prometheus_reports_another_missing_module_as_it_is(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setitem(sys.modules, "prometheus_client.core", None)
    monkeypatch.delitem(sys.modules, "asgi_bgtasks.prometheus")

    with pytest.raises(ModuleNotFoundError) as raised:
        importlib.import_module("asgi_bgtasks.prometheus")

    assert raised.value.name == "prometheus_client.core"
    assert "extra" not in str(raised.value)


async def test_run_tasks_on_exit_with_plain_with_in_a_coroutine_says_async_with() -> (
    None
):
    ran: list[str] = []

    with pytest.raises(RuntimeError) as raised, run_tasks_on_exit():
        add_task(ran.append, "never")

    assert str(raised.value).endswith("write `async with run_tasks_on_exit():`")
    assert ran == []


def test_prometheus_register_with_a_label_that_is_not_text_says_so(
    registry: CollectorRegistry,
) -> None:
    with pytest.raises(TypeError) as raised:
        prometheus.register(BackgroundTasksMiddleware(app), registry, label=3)  # type: ignore[arg-type]

    assert str(raised.value) == "register(): label must be a str, got 3"


async def test_settled_finds_the_middleware_of_an_app_that_has_served_already() -> None:
    from fastapi.testclient import TestClient

    api = FastAPI()
    api.add_middleware(BackgroundTasksMiddleware)
    TestClient(api).get("/")  # builds its middleware stack

    async with settled(api):  # finds the one that stack holds
        pass


async def test_settled_finds_the_middleware_a_quart_app_wraps() -> None:
    from quart import Quart

    web = Quart(__name__)
    web.asgi_app = BackgroundTasksMiddleware(web.asgi_app)  # type: ignore[method-assign]

    async with settled(web):
        pass
