"""add_task from many threads: every task counted and run, none lost."""

import contextvars
import threading
from typing import Any

from asgiref.sync import sync_to_async
from helpers import BODY, START_200, call

from asgi_bgtasks import BackgroundTasksMiddleware, add_task
from asgi_bgtasks._stats import Ledger
from asgi_bgtasks._tasks import BackgroundTasks


async def test_tasks_added_from_many_threads_at_once_all_run(
    events: list[object],
) -> None:
    def sync_view() -> None:  # its threads run in copies of its context

        start = threading.Barrier(8)

        def adder(n: int) -> None:
            start.wait()
            for i in range(200):
                add_task(events.append, (n, i))

        threads = [
            threading.Thread(target=contextvars.copy_context().run, args=(adder, n))
            for n in range(8)
        ]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()

    async def app(scope: object, receive: object, send: Any) -> None:
        await sync_to_async(sync_view)()
        await send(START_200)
        await send(BODY)

    middleware = BackgroundTasksMiddleware(app)
    await call(middleware, events)

    ran = [event for event in events if isinstance(event, tuple)]
    assert sorted(ran) == [(n, i) for n in range(8) for i in range(200)]
    assert middleware.stats.scheduled == middleware.stats.succeeded == 1600


class _LockHeldByAnAdder:
    """The ledger lock while ``add_task`` in another thread is mid-append.

    Waiting for it lets that add_task finish: its task lands in the list.
    """

    def __init__(self, tasks: BackgroundTasks) -> None:
        self.tasks = tasks

    def locked(self) -> bool:
        return True

    def __enter__(self) -> None:
        self.tasks._items = [None]  # type: ignore[list-item]

    def __exit__(self, *exc_info: object) -> None:
        pass


def test_a_task_added_while_its_request_ends_keeps_the_list_open() -> None:
    ledger = Ledger()
    tasks = BackgroundTasks(ledger)
    ledger.lock = _LockHeldByAnAdder(tasks)  # type: ignore[assignment]

    assert tasks._close_if_empty() is False  # not closed: the new task will run
    assert tasks._closed is False
