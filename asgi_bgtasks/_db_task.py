"""`db_task`: a task that touches Django's ORM closes stale connections
around it (imports Django; `asgi_bgtasks.django` re-exports it, and the
Django tasks backend uses it, so neither imports the other for it)."""

import functools
import inspect
from collections.abc import Callable
from typing import Any, ParamSpec, TypeVar, cast

from asgiref.sync import sync_to_async
from django.db import close_old_connections

P = ParamSpec("P")
R = TypeVar("R")

# Thread-sensitive, like Django's async ORM: runs in the thread the task's
# own ORM calls use, where that thread's connection lives.
_close_old_connections_async = sync_to_async(close_old_connections)


def db_task(func: Callable[P, R]) -> Callable[P, R]:
    """Close stale database connections before and after ``func`` runs.

    Works on sync and async functions; use it as a decorator on tasks that
    touch the ORM, then schedule them with ``add_task`` as usual.
    """
    if inspect.iscoroutinefunction(func):

        @functools.wraps(func)
        async def run_async(*args: Any, **kwargs: Any) -> Any:
            await _close_old_connections_async()
            try:
                return await func(*args, **kwargs)
            finally:
                await _close_old_connections_async()

        return cast(Callable[P, R], run_async)

    @functools.wraps(func)
    def run(*args: P.args, **kwargs: P.kwargs) -> R:
        close_old_connections()
        try:
            return func(*args, **kwargs)
        finally:
            close_old_connections()

    return run
