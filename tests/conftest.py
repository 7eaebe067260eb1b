import contextlib
import importlib
import itertools
import logging
from collections.abc import Callable, Iterator
from types import ModuleType

import pytest
from served import Example

from examples.serve import run_hypercorn
from examples.smtp_sink import SmtpSink

_addresses = itertools.count(1)


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
