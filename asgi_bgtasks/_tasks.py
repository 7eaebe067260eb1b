"""The per-request task list and the two ways to reach it: scope and ContextVar."""

import contextvars
import functools
import inspect
import sys
from collections import deque
from collections.abc import Callable, Sequence
from contextvars import ContextVar, copy_context
from dataclasses import dataclass
from inspect import CO_ASYNC_GENERATOR, CO_COROUTINE, CO_GENERATOR
from threading import get_ident
from types import FrameType, FunctionType, MethodType
from typing import TYPE_CHECKING, Any, Literal, ParamSpec

from asgiref.sync import iscoroutinefunction

from ._options import DEFAULTS, options_of
from ._stats import Ledger
from ._types import Scope

if TYPE_CHECKING:
    from ._observe import Observer

P = ParamSpec("P")

SCOPE_KEY = "background_tasks"

_NO_REQUEST = (
    "add_task() was called outside a request handled by "
    "BackgroundTasksMiddleware: wrap the ASGI app with "
    "BackgroundTasksMiddleware(app) and call add_task() while a request is "
    "being handled. If you did, check that the server serves the wrapped "
    "object, not the inner app (`fastapi run main.py` serves the FastAPI "
    "app it finds: install the middleware with "
    "app.add_middleware(BackgroundTasksMiddleware) instead)"
)
_WSGI = (
    "add_task() was called while serving a WSGI request (Django's runserver "
    "and the WSGI test client are WSGI): only requests that reach "
    "BackgroundTasksMiddleware through ASGI can schedule background tasks. "
    "Serve the ASGI app instead, e.g. `hypercorn myproject.asgi:application`, "
    "and in tests use asgi_bgtasks.testing.run_tasks_on_exit()"
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
_GENERATOR = (
    "add_task() got {name}, a{kind} generator function: calling it would run "
    "none of its body (is there a stray `yield` in it?). Remove the yield, "
    "or schedule a function that consumes the generator"
)
_CELERY = (
    "add_task() got the Celery task {name}: calling it would run the job "
    "here, in the web process. Write add_task({short}.delay, ...) to enqueue "
    "it to Celery after the response, or add_task({short}.run, ...) to run it "
    "in this process on purpose"
)
_NEEDS_ASYNCIO = (
    "asgi-bgtasks needs an asyncio event loop, and the server runs another "
    "(trio?): background tasks could never run. Serve the app on asyncio or "
    "uvloop (hypercorn: -k asyncio or -k uvloop)"
)

_current: ContextVar["BackgroundTasks | None"] = ContextVar(
    "asgi_bgtasks.current", default=None
)


@dataclass(frozen=True, slots=True)
class TaskInfo:
    """What `on_error` learns about a task: never its arguments.

    Attributes:
        func: The function given to ``add_task`` (a partial stays a partial).
        name: ``module.qualname`` of the function, partials unwrapped: the
            name in logs, spans and metrics.
    """

    func: Callable[..., Any]
    name: str


DropReason = Literal[
    "error_response", "app_failed", "shutdown", "cancelled", "not_started"
]


@dataclass(frozen=True, slots=True)
class DroppedTask:
    """A task that will not complete, handed to `on_drop` to persist or
    re-enqueue: the only place its arguments are given out.

    Attributes:
        func: The function given to ``add_task``.
        args: Its positional arguments, as given.
        kwargs: Its keyword arguments, as given.
        name: ``module.qualname`` of the function, partials unwrapped.
        reason: ``"error_response"`` (status >= 500), ``"app_failed"`` (the
            app raised, or sent no or no complete response), ``"shutdown"``
            (not finished by the drain deadline), ``"cancelled"`` (its
            chain was cancelled from outside while it ran or waited) or
            ``"not_started"`` (the event loop could not start it: its task
            factory raised).
    """

    func: Callable[..., Any]
    args: tuple[Any, ...]
    kwargs: dict[str, Any]
    name: str
    reason: DropReason


class _Task:
    """One scheduled call, with the context it was scheduled in.

    ``epoch`` is the `Ledger` epoch it was scheduled in (see `Ledger.join`);
    ``in_thread`` says it is plain ``def``, run in a worker thread;
    ``options`` are its `task_options`; ``attempt`` counts its runs from 1.
    """

    __slots__ = (
        "args",
        "attempt",
        "context",
        "epoch",
        "func",
        "in_thread",
        "kwargs",
        "options",
    )

    epoch: int  # set as it is appended to its request's list

    def __init__(
        self, func: Callable[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any]
    ) -> None:
        if type(func) is FunctionType and not func.__dict__:  # fast, common case
            flags = func.__code__.co_flags
            if flags & _GENERATOR_FLAGS:
                raise TypeError(_generator(func, flags))
            self.in_thread = not flags & CO_COROUTINE
            self.options = DEFAULTS
        else:
            _check_callable(func)
            self.in_thread = not _is_async_callable(func)
            self.options = options_of(func)
        self.func = func
        self.args = args
        # Most calls pass no keyword: keep none (64 bytes per pending task).
        self.kwargs = kwargs or _NO_KWARGS
        self.context = copy_context()
        self.attempt = 1

    @property
    def name(self) -> str:
        return task_name(self.func)

    @property
    def info(self) -> TaskInfo:
        return TaskInfo(func=self.func, name=self.name)

    def dropped(self, reason: DropReason) -> DroppedTask:
        return DroppedTask(self.func, self.args, dict(self.kwargs), self.name, reason)

    def release(self) -> None:
        """It has ended: let go of what it calls, with, and in. Frames of the
        chain that ran it may outlive it for a moment (an exception thrown
        into its request's Task holds them until that Task's step ends)."""
        self.func = _ended
        self.args = ()
        self.kwargs = _NO_KWARGS
        self.context = _ENDED_CONTEXT


_NO_KWARGS: dict[str, Any] = {}  # shared: only ever unpacked, never changed


def _ended() -> None:
    """What a released task record calls: nothing."""


_ENDED_CONTEXT = contextvars.Context()


_GENERATOR_FLAGS = CO_GENERATOR | CO_ASYNC_GENERATOR


def _generator(func: Any, flags: int) -> str:
    kind = "n async" if flags & CO_ASYNC_GENERATOR else ""
    return _GENERATOR.format(name=task_name(func), kind=kind)


def _check_callable(func: Any) -> None:
    """Raise `TypeError` for what ``add_task`` cannot run as a task: a
    coroutine object, a non-callable, a generator function (however
    wrapped), a Celery task."""
    if inspect.iscoroutine(func):
        func.close()  # we raise instead: spare the "never awaited" warning
        raise TypeError(_COROUTINE)
    if not callable(func):
        raise TypeError(f"add_task() needs a callable, got {type(func).__name__}")
    inner = func
    while isinstance(inner, functools.partial):
        inner = inner.func
    if callable(getattr(inner, "delay", None)) and callable(
        getattr(inner, "apply_async", None)
    ):
        name = str(getattr(inner, "name", None) or task_name(inner))
        raise TypeError(_CELERY.format(name=name, short=name.rpartition(".")[2]))
    if not isinstance(inner, FunctionType | MethodType):
        inner = getattr(type(inner), "__call__", inner)  # noqa: B004
    code = getattr(inner, "__code__", None)
    if code is not None and code.co_flags & _GENERATOR_FLAGS:
        raise TypeError(_generator(func, code.co_flags))


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
    request. Thread-safe: sync views may add tasks from a worker thread. The
    list is open until its last task has been taken to run, its request
    failed, or what is left of it was dropped; `add_task` raises from then on.

    Who touches what: the list proper (`_first`, `_more`) belongs to the
    thread that made it, the event loop's, which adds, takes and closes
    without a lock. Another thread's ``add_task`` puts its task in `_inbox`
    under the ledger's lock, announced in `Ledger.adding`; the loop moves it
    into the list under that lock (`_gather`) whenever it must see it: as it
    adds a task of its own (order), and as it closes the list (`_close_to_threads`).
    """

    __slots__ = (
        "_chained",
        "_closed",
        "_counted",
        "_first",
        "_inbox",
        "_ledger",
        "_more",
        "_owner",
        "_watched",
    )

    def __init__(self, ledger: Ledger, closed: str | None = None) -> None:
        self._ledger = ledger
        self._owner = get_ident()  # the event loop's thread
        # The tasks not yet taken, in order: `_first`, then `_more`. Most
        # requests add one task, and keep no deque for it (measured: 88
        # bytes less per pending task).
        self._first: _Task | None = None
        self._more: deque[_Task] | None = None
        # Added from other threads, not in the list yet (the ledger's lock),
        # each with whether it counts in `Ledger.queued_by_threads` already.
        self._inbox: list[tuple[_Task, bool]] | None = None
        self._closed = closed  # why `add_task` raises, once it does
        # Whether its tasks not yet taken count in `Ledger.queued` (detached).
        self._counted = False
        self._chained = False  # a chain runs its tasks (they run in its context)
        # When its request's response ended, and the observers that watch
        # its tasks; None if none does (`TaskRunner._watch`).
        self._watched: tuple[float, Sequence[Observer]] | None = None

    def add_task(
        self, func: Callable[P, Any], /, *args: P.args, **kwargs: P.kwargs
    ) -> None:
        """Schedule ``func(*args, **kwargs)`` to run after the response is sent.

        ``func`` may be ``async def`` or plain ``def`` (run in a worker
        thread). Raises `TypeError` for what cannot be run as a task (a
        non-callable, a coroutine object, a generator function) and
        `RuntimeError` once this request's tasks have finished.
        """
        self._append(_Task(func, args, kwargs))

    def _append(self, task: _Task) -> None:
        if get_ident() != self._owner:
            self._append_from_thread(task)
            return
        # The loop's own thread: no lock (measured, callgrind, 3.13: this
        # check costs 440 instructions, a lock's acquire and release 950).
        if self._closed is not None:
            raise RuntimeError(self._closed)
        # Added from threads before: first (checked here too, so that the
        # common case makes no call).
        if self._inbox is not None:
            self._gather_threads()
        ledger = self._ledger
        task.epoch = ledger.epoch
        ledger.scheduled += 1
        # `_push`, inline: a call less a task (measured, callgrind, 3.13,
        # ten tasks: 390 instructions a task, about 70 ns).
        if self._more is not None:
            self._more.append(task)
        elif self._first is None:  # none waits: it is next
            self._first = task
        else:
            self._more = deque((task,))
        if self._counted:  # handed over detached: it waits to start
            ledger.queued += 1

    def _append_from_thread(self, task: _Task) -> None:
        """Another thread's ``add_task``: into the inbox, counted in
        `Ledger.scheduled_by_threads` (and in `Ledger.queued_by_threads` if
        the list was handed over detached); refused once the list is
        closed."""
        ledger = self._ledger
        with ledger.lock:
            # Announced before it reads `_closed`: see `_close_to_threads`.
            ledger.adding += 1
            try:
                # Closed, unless what threads added before waits in the
                # inbox: then the loop is closing it for a moment only, and
                # will gather that (and this) and reopen it.
                if self._closed is not None and not self._inbox:
                    raise RuntimeError(self._closed)
                task.epoch = ledger.epoch
                ledger.scheduled_by_threads += 1
                counted = self._counted  # handed over detached: it waits to start
                if counted:
                    ledger.queued_by_threads += 1
                if self._inbox is None:
                    self._inbox = [(task, counted)]
                else:
                    self._inbox.append((task, counted))
            finally:
                ledger.adding -= 1

    def _push(self, task: _Task) -> None:
        """Put ``task`` last in the list (the loop's thread)."""
        if self._more is not None:
            self._more.append(task)
        elif self._first is None:  # none waits: it is next
            self._first = task
        else:
            self._more = deque((task,))

    def _gather_threads(self) -> None:
        """Move in what other threads added, if anything (the loop's
        thread)."""
        if self._inbox is not None:
            with self._ledger.lock:
                self._gather()

    def _gather(self) -> None:
        """Move the tasks added from other threads into the list (the
        loop's thread, the ledger's lock held); from then on they count
        in the loop's own `Ledger.queued` if the list's tasks do."""
        inbox, self._inbox = self._inbox or [], None
        ledger = self._ledger
        for task, counted in inbox:
            self._push(task)
            if counted:
                ledger.queued_by_threads -= 1
        if self._counted:
            ledger.queued += len(inbox)

    def _close_to_threads(self, unless_gathered: str | None = _CLOSED) -> bool:
        """Close the list (the loop's thread); what other threads added
        before joins it, and if that is all that waits (the list proper
        was empty), the list is set back to ``unless_gathered`` under the
        lock, so that a thread never finds it closed while tasks it added
        wait. True if it stays closed.

        No lock unless another thread adds or has added: the loop writes
        `_closed` before it reads `Ledger.adding`, a thread announces itself
        there before it reads `_closed`; so either the loop sees it and
        waits for it under the lock, or it sees the list closed and is
        refused."""
        self._closed = _CLOSED
        ledger = self._ledger
        if ledger.adding or self._inbox is not None:
            with ledger.lock:
                self._gather()
                gathered = self._first is not None
                self._closed = unless_gathered if gathered else _CLOSED
            return not gathered
        return True

    def _take(self) -> _Task | None:
        """The next task, now counted running; None closes the list."""
        task = self._first
        if task is not None:
            self._first = None
        elif self._more:
            task = self._more.popleft()
        else:  # none is left: close the list, unless other threads added
            self._more = None  # tasks meanwhile (then the first is next)
            if self._close_to_threads(unless_gathered=self._closed):
                return None
            task = self._first
            self._first = None
        ledger = self._ledger
        ledger.running += 1
        if self._counted:
            ledger.queued -= 1
        if ledger.holds:
            ledger.make_room()
        return task

    def _waiting(self) -> list[_Task]:
        """The tasks not yet taken, in order, but those still in the inbox
        (the loop's thread)."""
        waiting = [] if self._first is None else [self._first]
        if self._more:
            waiting += self._more
        return waiting

    def _has_tasks(self) -> bool:
        """Whether any task waits to be taken."""
        return self._first is not None or bool(self._more) or self._inbox is not None

    def _put_back(self, task: _Task) -> None:
        """``task``, just taken, waits to be retried: it is next again, and
        counted pending."""
        if self._first is not None:  # added meanwhile, first: after it
            if self._more is None:
                self._more = deque((self._first,))
            else:  # added after that one, when `_more` was None
                self._more.appendleft(self._first)
        self._first = task
        task.attempt += 1
        ledger = self._ledger
        ledger.running -= 1
        ledger.retried += 1
        if self._counted:
            ledger.queued += 1

    def _close_unless(self, keep: Callable[[_Task], bool]) -> list[_Task]:
        """Close the list; remove (and return) the waiting tasks ``keep``
        rejects. The others stay, to run."""
        self._close_to_threads()
        kept: list[_Task] = []
        removed: list[_Task] = []
        for task in self._waiting():
            (kept if keep(task) else removed).append(task)
        self._first, self._more = None, deque(kept) if kept else None
        return removed

    def _close(self) -> list[_Task]:
        """Close the list; return (and let go of) the tasks never started."""
        self._close_to_threads()
        rest = self._waiting()
        self._first, self._more = None, None
        ledger = self._ledger
        if self._counted:
            ledger.queued -= len(rest)
        if rest and ledger.holds:  # a chain that cannot start, say
            ledger.make_room()
        return rest

    def _count_pending(self) -> None:
        """Handed over detached: its tasks not yet taken count in
        `Ledger.queued` until they are (`_append` and `_gather` count those
        added later)."""
        self._gather_threads()  # added from threads during the request
        self._counted = True
        more = self._more
        self._ledger.queued += (self._first is not None) + (len(more) if more else 0)

    def _close_if_empty(self) -> bool:
        """Close the list if nothing was scheduled; True if it was empty."""
        if self._first is not None:
            return False
        if self._more:  # (a 5xx's tasks that run on error)
            return False
        return self._close_to_threads(unless_gathered=self._closed)


def add_task(func: Callable[P, Any], /, *args: P.args, **kwargs: P.kwargs) -> None:
    """Schedule ``func(*args, **kwargs)`` to run after the current response.

    Works at any depth of the call stack of a request handled by
    `BackgroundTasksMiddleware`, sync views included; raises `RuntimeError`
    outside one.
    """
    tasks = _current.get()
    if tasks is None:
        raise RuntimeError(_WSGI if _serving_wsgi() else _NO_REQUEST)
    tasks._append(_Task(func, args, kwargs))


def _serving_wsgi() -> bool:
    """Whether a caller up the stack holds a WSGI environ, or this process
    is Django's runserver (only asked on the way to an error)."""
    frame: FrameType | None = sys._getframe(2)
    while frame is not None:
        if any(
            isinstance(value, dict) and "wsgi.version" in value
            for value in frame.f_locals.values()
        ):
            return True
        frame = frame.f_back
    return sys.argv[1:2] == ["runserver"]


def background_tasks(scope: Scope) -> BackgroundTasks:
    """The request's `BackgroundTasks`, from its ASGI scope."""
    try:
        return scope[SCOPE_KEY]  # type: ignore[no-any-return]
    except KeyError:
        raise RuntimeError(_NO_MIDDLEWARE) from None
