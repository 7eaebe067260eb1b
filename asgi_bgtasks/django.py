"""Django support: background tasks that use the ORM.

This module imports Django; the core package does not.

Django closes stale database connections around every request: its
``request_started`` and ``request_finished`` signals call
``close_old_connections()``. A background task runs after
``request_finished``, in a worker thread or in a thread of its own for async
ORM calls, so nothing does that for it: a broken connection would make it
fail, and one it opens would stay open in a thread that never serves a
request. :func:`db_task` gives a task the same treatment as a request.

``AfterResponseBackend``, a backend for Django's tasks framework, is imported
from here too, on first use (from ``asgi_bgtasks.django_tasks``): only it needs
the framework (Django 6, or the ``django-tasks`` backport on Django 5.2).
"""

import functools
import inspect
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, ParamSpec, TypeVar, cast

from asgiref.sync import sync_to_async
from django.db import close_old_connections

if TYPE_CHECKING:
    from .django_tasks import AfterResponseBackend, TaskDropped

__all__ = ["AfterResponseBackend", "TaskDropped", "db_task"]

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


def __getattr__(name: str) -> Any:
    """``AfterResponseBackend`` and ``TaskDropped``, imported on first use."""
    if name in ("AfterResponseBackend", "TaskDropped"):
        from . import django_tasks

        return getattr(django_tasks, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
