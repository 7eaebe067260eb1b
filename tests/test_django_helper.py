"""``asgi_bgtasks.django.db_task``: connections handled as around a request."""

import time
from types import ModuleType
from typing import Any

import pytest
from asgiref.sync import sync_to_async
from django.db import connection, connections
from helpers import call, scheduling

from asgi_bgtasks import BackgroundTasksMiddleware
from asgi_bgtasks.django import db_task


@pytest.fixture(autouse=True, scope="module")
def _django(django_project: ModuleType) -> None:
    """Django set up by the example project, on a SQLite file."""


def query_and_keep_wrapper(seen: list[Any]) -> None:
    """Use this thread's connection; keep its wrapper to inspect it later."""
    with connection.cursor() as cursor:
        cursor.execute("SELECT 1")
    seen.append(connections["default"])  # this thread's wrapper, not the proxy


def test_sync_task_starts_with_stale_connection_closed_and_leaves_none_open() -> None:
    connection.ensure_connection()
    connection.close_at = time.monotonic() - 1  # past CONN_MAX_AGE: stale
    seen_at_start: list[object] = []

    @db_task
    def task(seen: list[Any]) -> str:
        seen_at_start.append(connection.connection)
        query_and_keep_wrapper(seen)
        return "done"

    seen: list[Any] = []
    assert task(seen) == "done"

    assert seen_at_start == [None]
    assert seen[0].connection is None


def test_without_the_helper_the_connection_stays_open() -> None:
    seen: list[Any] = []
    query_and_keep_wrapper(seen)

    assert seen[0].connection is not None
    connection.close()


@pytest.mark.parametrize("mode", ["inline", "detached"])
async def test_sync_and_async_orm_tasks_close_their_connections(
    events: list[Any], mode: str
) -> None:
    seen: list[Any] = []

    @db_task
    async def async_orm_task(seen: list[Any]) -> None:
        await sync_to_async(query_and_keep_wrapper)(seen)  # the async ORM's thread

    app = BackgroundTasksMiddleware(
        scheduling((db_task(query_and_keep_wrapper), seen), (async_orm_task, seen)),
        mode=mode,
    )
    await call(app, events)
    await app.join()

    assert len(seen) == 2
    assert [wrapper.connection for wrapper in seen] == [None, None]
    assert app.stats.succeeded == 2


def test_wrapped_task_keeps_its_name_for_the_logs() -> None:
    async def send_receipt() -> None:
        pass

    assert db_task(send_receipt).__qualname__ == send_receipt.__qualname__
    assert db_task(query_and_keep_wrapper).__name__ == "query_and_keep_wrapper"
