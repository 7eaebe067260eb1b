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

from typing import TYPE_CHECKING, Any

from ._db_task import db_task

if TYPE_CHECKING:
    from .django_tasks import AfterResponseBackend, TaskDropped

__all__ = ["AfterResponseBackend", "TaskDropped", "db_task"]


def __getattr__(name: str) -> Any:
    """``AfterResponseBackend`` and ``TaskDropped``, imported on first use."""
    if name in ("AfterResponseBackend", "TaskDropped"):
        from . import django_tasks

        return getattr(django_tasks, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
