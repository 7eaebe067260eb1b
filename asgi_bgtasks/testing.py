"""Test helpers: wait for background tasks, and fail the test on theirs.

A failing background task is logged, never raised: the response was sent
long before. In a test that is how bugs hide. Both helpers raise
`AssertionError` when a task failed, timed out or was dropped, with the
task's own exception as the cause. No test framework is imported; use them
from pytest, unittest or a script alike.
"""

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from contextvars import Token
from types import TracebackType
from typing import Any

from ._find import middleware_in
from ._middleware import BackgroundTasksMiddleware
from ._runner import TaskRunner
from ._stats import Ledger, Stats
from ._tasks import BackgroundTasks, _current

_logger = logging.getLogger("asgi_bgtasks")


class _Collect(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


@contextlib.contextmanager
def _failures_raised(stats: Callable[[], Stats]) -> Iterator[None]:
    """Raise if tasks ended unsuccessfully while the block ran."""
    collect = _Collect()
    _logger.addHandler(collect)
    before = _unsuccessful(stats())
    try:
        yield
    finally:
        _logger.removeHandler(collect)
    unsuccessful = _unsuccessful(stats()) - before
    if unsuccessful:
        messages = [record.getMessage() for record in collect.records]
        causes = [r.exc_info[1] for r in collect.records if r.exc_info]
        raise AssertionError(
            f"{unsuccessful} background task(s) did not succeed: "
            + ("; ".join(messages) or "see the asgi_bgtasks log")
        ) from (causes[0] if causes else None)


def _unsuccessful(stats: Stats) -> int:
    return stats.failed + stats.timed_out + stats.dropped


def settled(app: Any) -> AbstractAsyncContextManager[None]:
    """On leaving the block, wait for all tasks; raise if any did not succeed.

    ``app`` is the `BackgroundTasksMiddleware` instance, or the app that
    installed it: a Starlette / FastAPI app that called
    ``app.add_middleware(BackgroundTasksMiddleware)``, a Quart app whose
    ``asgi_app`` it wraps. Tasks that tasks add are waited for too: the
    block ends once nothing runs or waits.
    """
    return _settled(middleware_in(app, "settled()"))


@asynccontextmanager
async def _settled(middleware: BackgroundTasksMiddleware) -> AsyncIterator[None]:
    with _failures_raised(lambda: middleware.stats):
        yield
        await _idle(middleware)


async def _idle(middleware: BackgroundTasksMiddleware) -> None:
    """Return once no task of ``middleware`` is running or pending."""
    await middleware.join()
    # Tasks added meanwhile (a task's follow-ups) are left: join them too.
    while (stats := middleware.stats).running or stats.pending:
        await middleware.join()


class run_tasks_on_exit:
    """Make `add_task` work without the middleware; run the tasks on exit.

    For code that runs outside the ASGI stack — Django's test client, a view
    called directly: inside the block, `add_task` collects the calls; when
    the block ends without an error, they run in order, and a task that does
    not succeed raises `AssertionError`. Use ``with`` in plain code and
    ``async with`` inside a coroutine.
    """

    def __init__(self) -> None:
        ledger = Ledger(max_pending=1)  # never held: nothing is detached
        self._runner = TaskRunner(
            ledger,
            max_concurrency=1,
            max_threads=1,
            task_timeout=None,
            on_error=None,
            on_drop=None,
        )
        self._tasks = BackgroundTasks(ledger)
        self._token: Token[BackgroundTasks | None] | None = None

    def __enter__(self) -> "run_tasks_on_exit":
        self._token = _current.set(self._tasks)
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        trace: TracebackType | None,
    ) -> None:
        if self._leave(error):
            if _loop_running():
                raise RuntimeError(
                    "run_tasks_on_exit: the block ends inside a coroutine (an "
                    "event loop is running), where its tasks cannot be run from "
                    "a plain `with`: write `async with run_tasks_on_exit():`"
                )
            asyncio.run(self._run())

    async def __aenter__(self) -> "run_tasks_on_exit":
        return self.__enter__()

    async def __aexit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        trace: TracebackType | None,
    ) -> None:
        if self._leave(error):
            await self._run()

    def _leave(self, error: BaseException | None) -> bool:
        """Stop collecting; True if there are tasks to run."""
        assert self._token is not None, "enter the block first"
        _current.reset(self._token)
        return error is None and not self._tasks._close_if_empty()

    async def _run(self) -> None:
        with _failures_raised(self._runner.ledger.snapshot):
            await self._runner.run_to_end(self._tasks)


def _loop_running() -> bool:
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return False
    return True
