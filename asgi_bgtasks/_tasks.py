"""The per-request task list and the two ways to reach it: scope and ContextVar."""

import contextvars
import functools
import inspect
from collections.abc import Callable
from contextvars import ContextVar
from dataclasses import dataclass
from inspect import CO_COROUTINE
from types import FunctionType
from typing import Any, ParamSpec

from asgiref.sync import iscoroutinefunction

from ._stats import Ledger
from ._types import Scope

P = ParamSpec("P")

SCOPE_KEY = "background_tasks"

_NO_REQUEST = (
    "add_task() was called outside a request handled by "
    "BackgroundTasksMiddleware: wrap the ASGI app with "
    "BackgroundTasksMiddleware(app) and call add_task() while a request is "
    "being handled"
)
_NO_MIDDLEWARE = (
    "scope has no 'background_tasks': wrap the ASGI app with "
    "BackgroundTasksMiddleware(app), outermost"
)
_CLOSED = (
    "this request's background tasks have already run or been dropped; "
    "add_task() must be called before they finish"
)
_COROUTINE = (
    "add_task() takes the function, not a coroutine object: write "
    "add_task(send_email, user), not add_task(send_email(user))"
)

_current: ContextVar["BackgroundTasks | None"] = ContextVar(
    "asgi_bgtasks.current", default=None
)


@dataclass(frozen=True, slots=True)
class TaskInfo:
    """What `on_error` learns about a task: never its arguments."""

    func: Callable[..., Any]
    name: str


class _Task:
    """One scheduled call, with the context it was scheduled in."""

    __slots__ = ("args", "context", "func", "is_async", "is_async_def", "kwargs")

    def __init__(
        self, func: Callable[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any]
    ) -> None:
        if type(func) is FunctionType and not func.__dict__:  # fast, common case
            self.is_async = self.is_async_def = bool(
                func.__code__.co_flags & CO_COROUTINE
            )
        else:
            self.is_async_def = False
            if inspect.iscoroutine(func):
                func.close()  # we raise instead: spare the "never awaited" warning
                raise TypeError(_COROUTINE)
            if not callable(func):
                raise TypeError(
                    f"add_task() needs a callable, got {type(func).__name__}"
                )
            self.is_async = _is_async_callable(func)
        self.func = func
        self.args = args
        self.kwargs = kwargs
        self.context = contextvars.copy_context()

    @property
    def name(self) -> str:
        return task_name(self.func)

    @property
    def info(self) -> TaskInfo:
        return TaskInfo(func=self.func, name=self.name)


def _is_async_callable(func: Any) -> bool:
    while isinstance(func, functools.partial):
        func = func.func
    if inspect.isclass(func):
        return False  # calling a class builds an instance, synchronously
    return iscoroutinefunction(func) or iscoroutinefunction(func.__call__)


def task_name(func: Any) -> str:
    """``module.qualname`` of the function a task calls (partials unwrapped)."""
    while isinstance(func, functools.partial):
        func = func.func
    if not hasattr(func, "__qualname__"):
        func = type(func)  # a callable instance: name its class
    module = getattr(func, "__module__", None)  # None for e.g. list.append
    return func.__qualname__ if module is None else f"{module}.{func.__qualname__}"


class BackgroundTasks:
    """The tasks of one request, run in the order added after its response.

    Get it with `background_tasks(scope)`; the middleware creates one per
    request. Thread-safe: sync views may add tasks from a worker thread.
    """

    __slots__ = ("_closed", "_items", "_ledger", "_next")

    def __init__(self, ledger: Ledger) -> None:
        self._ledger = ledger
        self._items: list[_Task | None] | None = None
        self._next = 0
        self._closed = False

    def add_task(
        self, func: Callable[P, Any], /, *args: P.args, **kwargs: P.kwargs
    ) -> None:
        """Schedule ``func(*args, **kwargs)`` to run after the response is sent.

        ``func`` may be ``async def`` or plain ``def`` (run in a worker
        thread). Raises `TypeError` for a non-callable or a coroutine object and
        `RuntimeError` once this request's tasks have finished.
        """
        task = _Task(func, args, kwargs)
        with self._ledger.lock:
            if self._closed:
                raise RuntimeError(_CLOSED)
            if self._items is None:
                self._items = [task]
            else:
                self._items.append(task)
            self._ledger.scheduled += 1

    def _take_next(self) -> _Task | None:
        """The next task of a started chain, or None once it is done."""
        items = self._items or []
        if self._next == len(items) and self._sealed():
            return None
        task = items[self._next]
        items[self._next] = None  # let its arguments go once it has run
        self._next += 1
        return task

    def _close_if_empty(self) -> bool:
        """Close the list if nothing was scheduled; True if it was empty."""
        return self._items is None and self._sealed()

    def _close(self) -> list[_Task]:
        """Close the list and return the tasks that never started."""
        self._sealed()
        return [task for task in (self._items or [])[self._next :] if task]

    def _sealed(self) -> bool:
        """Close to new tasks, unless one arrived meanwhile; True if closed.

        Runs on the event loop. The lock is only waited for when an
        ``add_task`` in another thread holds it: then it may be mid-append.
        """
        self._closed = True
        lock = self._ledger.lock
        if lock.locked():
            with lock:
                pass
        if self._next < len(self._items or ()):
            self._closed = False
            return False
        return True


def add_task(func: Callable[P, Any], /, *args: P.args, **kwargs: P.kwargs) -> None:
    """Schedule ``func(*args, **kwargs)`` to run after the current response.

    Works at any depth of the call stack of a request handled by
    `BackgroundTasksMiddleware`, sync views included; raises `RuntimeError`
    outside one.
    """
    tasks = _current.get()
    if tasks is None:
        raise RuntimeError(_NO_REQUEST)
    tasks.add_task(func, *args, **kwargs)


def background_tasks(scope: Scope) -> BackgroundTasks:
    """The request's `BackgroundTasks`, from its ASGI scope."""
    try:
        return scope[SCOPE_KEY]  # type: ignore[no-any-return]
    except KeyError:
        raise RuntimeError(_NO_MIDDLEWARE) from None
