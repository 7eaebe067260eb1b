import asyncio
import contextlib
import importlib
import itertools
import logging
import os
from collections.abc import Callable, Iterator, Mapping
from types import ModuleType

import pytest
from served import Example

from examples.serve import run_hypercorn
from examples.smtp_sink import SmtpSink

_addresses = itertools.count(1)

# The event loop every async test runs on: "asyncio" (the default), "uvloop",
# or "eager" (asyncio with asyncio.eager_task_factory, Python 3.12+). `make
# test-all` runs the suite on each; end-to-end servers run uvloop then too.
TEST_LOOP = os.environ.get("ASGI_BGTASKS_TEST_LOOP", "asyncio")


def _eager_loop() -> asyncio.AbstractEventLoop:
    loop = asyncio.new_event_loop()
    loop.set_task_factory(asyncio.eager_task_factory)  # type: ignore[attr-defined]
    return loop


def pytest_asyncio_loop_factories(
    config: pytest.Config, item: pytest.Item
) -> Mapping[str, Callable[[], asyncio.AbstractEventLoop]]:
    if TEST_LOOP == "uvloop":
        import uvloop

        return {"uvloop": uvloop.new_event_loop}
    if TEST_LOOP == "eager":
        return {"eager": _eager_loop}
    assert TEST_LOOP == "asyncio", f"unknown ASGI_BGTASKS_TEST_LOOP {TEST_LOOP!r}"
    return {"asyncio": asyncio.new_event_loop}


def pytest_report_header() -> str:
    return f"event loop: {TEST_LOOP}"


@pytest.fixture
def events() -> list[object]:
    """An ordered log of what happened, shared by app, send and tasks."""
    return []


@pytest.fixture(autouse=True)
def _capture_our_logs(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG, logger="asgi_bgtasks")


@pytest.fixture(scope="session")
def sink() -> Iterator[SmtpSink]:
    with SmtpSink() as running:
        yield running


@pytest.fixture(scope="session")
def serve(
    sink: SmtpSink, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Callable[[str], Example]]:
    """``serve("examples.x:app")``: that example under hypercorn, started once."""
    started: dict[str, Example] = {}
    with contextlib.ExitStack() as stack:

        def example(app: str) -> Example:
            if app not in started:
                folder = tmp_path_factory.mktemp(app.replace(":", "_"))
                env = {
                    "SMTP_PORT": str(sink.port),
                    "EXAMPLES_ACTIVITY": str(folder / "activity.jsonl"),
                    "DJANGO_DB_PATH": str(folder / "db.sqlite3"),
                }
                server = stack.enter_context(run_hypercorn(app, env=env))
                started[app] = Example(server, folder / "activity.jsonl")
            return started[app]

        yield example


@pytest.fixture
def address() -> str:
    """An e-mail address no other test uses."""
    return f"user{next(_addresses)}@example.com"


@pytest.fixture(scope="session")
def django_project(tmp_path_factory: pytest.TempPathFactory) -> ModuleType:
    """``examples.django_app`` imported in this process, on a fresh SQLite file."""
    database = tmp_path_factory.mktemp("django") / "db.sqlite3"
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("DJANGO_DB_PATH", str(database))
        return importlib.import_module("examples.django_app")
