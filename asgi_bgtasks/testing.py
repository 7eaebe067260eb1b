"""Test helpers: wait for an app's background tasks and fail on theirs.

A failing background task is logged, never raised: the response was sent
long before. In a test that is how bugs hide. `settled` waits, when its
block ends, for every task scheduled so far, and raises `AssertionError` if
one failed, timed out or was dropped — with the task's own exception as the
cause. No test framework is imported; use it from pytest, unittest or a
script alike.
"""

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from ._middleware import BackgroundTasksMiddleware
from ._stats import Stats

_logger = logging.getLogger("asgi_bgtasks")


class _Collect(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


@asynccontextmanager
async def settled(middleware: BackgroundTasksMiddleware) -> AsyncIterator[None]:
    """On leaving the block, wait for all tasks; raise if any did not succeed.

    ``middleware`` is the `BackgroundTasksMiddleware` instance (for Quart,
    ``app.asgi_app``).
    """
    collect = _Collect()
    _logger.addHandler(collect)
    before = middleware.stats
    try:
        yield
        await middleware.join()
    finally:
        _logger.removeHandler(collect)
    after = middleware.stats
    unsuccessful = _unsuccessful(after) - _unsuccessful(before)
    if unsuccessful:
        messages = [record.getMessage() for record in collect.records]
        causes = [r.exc_info[1] for r in collect.records if r.exc_info]
        raise AssertionError(
            f"{unsuccessful} background task(s) did not succeed: "
            + ("; ".join(messages) or "see the asgi_bgtasks log")
        ) from (causes[0] if causes else None)


def _unsuccessful(stats: Stats) -> int:
    return stats.failed + stats.timed_out + stats.dropped
