"""Django's tasks framework, run after the response: `AfterResponseBackend`.

Import it as ``asgi_bgtasks.django.AfterResponseBackend``. This module imports
Django's tasks framework: ``django.tasks`` on Django 6, the ``django-tasks``
backport (module ``django_tasks``) on Django 5.2.

Each ``enqueue`` during a request handled by `BackgroundTasksMiddleware`
schedules a `_Job` with `add_task`: a partial of the task's function (so logs
name that function and its `task_options` apply) that moves its `TaskResult`
READY → RUNNING → SUCCESSFUL / FAILED (back to READY between the attempts of
a retried task), as the middleware's hooks say each attempt ended: the result
agrees with the middleware's count. Outside such a request the job runs at
once, as with Django's ``ImmediateBackend``; but an async task enqueued by a
sync call on the event loop starts there in a Task of its own.
"""

import asyncio
import contextlib
import copy
import functools
import threading
from collections.abc import Callable, Sequence
from traceback import format_exception
from typing import Any, Self

from asgiref.sync import async_to_sync, iscoroutinefunction, sync_to_async
from django.utils import timezone
from django.utils.crypto import get_random_string

from . import DroppedTask, add_task
from ._db_task import db_task

# Django is untyped here: mypy sees the first branch's names as Any.
try:
    from django.tasks import TaskContext, TaskResult, TaskResultStatus
    from django.tasks.backends.base import BaseTaskBackend
    from django.tasks.base import Task, TaskError
    from django.tasks.exceptions import TaskResultDoesNotExist
    from django.tasks.signals import task_enqueued, task_finished, task_started
    from django.utils.json import normalize_json
except ImportError:  # Django 5.2, with the django-tasks backport
    from django_tasks import TaskContext, TaskResult, TaskResultStatus
    from django_tasks.backends.base import BaseTaskBackend
    from django_tasks.base import Task, TaskError
    from django_tasks.exceptions import TaskResultDoesNotExist
    from django_tasks.signals import task_enqueued, task_finished, task_started
    from django_tasks.utils import normalize_json

MAX_RESULTS = 10_000  # results a backend keeps by default (OPTIONS "max_results")

# Tasks run in this process: one worker id for all of them.
WORKER_ID = get_random_string(32)

DROPPED = "BackgroundTasksMiddleware dropped the task (%s): %s"
DROPPED_BECAUSE = {
    "error_response": "its request's response had a 5xx status",
    "app_failed": "its request failed before its response was delivered",
    "shutdown": "the server shut down before the task could finish",
    "cancelled": "its request's ASGI call was cancelled",
}


# What the result of a task the middleware counted timed out records.
TIMED_OUT = "the task ran past its timeout"


class TaskDropped(Exception):
    """The error a dropped task's result records: the middleware will not run
    it (a 5xx response, a failed request, shutdown); the message says why."""


class _Results:
    """The results of one backend alias in this process, at most ``limit``.

    When a new result would exceed the limit, the result that finished
    longest ago is forgotten, or, if none has finished, the oldest. Results
    change in worker threads and are read in others: every change and every
    copy given out happens under ``lock``.
    """

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.lock = threading.Lock()
        self._results: dict[str, TaskResult] = {}  # in the order enqueued
        self._finished: dict[str, None] = {}  # ids, in the order they finished

    def add(self, result: TaskResult) -> None:
        with self.lock:
            while len(self._results) >= self.limit:
                oldest = next(iter(self._finished or self._results))
                self._finished.pop(oldest, None)
                del self._results[oldest]
            self._results[result.id] = result

    def mark(self, result: TaskResult, *, finished: bool) -> None:
        """``result`` has finished, or runs (again); called under ``lock``."""
        self._finished.pop(result.id, None)
        if finished and result.id in self._results:
            self._finished[result.id] = None

    def get(self, result_id: str) -> TaskResult:
        with self.lock:
            try:
                return _copy(self._results[result_id])
            except KeyError:
                raise TaskResultDoesNotExist(result_id) from None


_stores: dict[str, _Results] = {}
_stores_lock = threading.Lock()


def _results_for(alias: str, limit: int) -> _Results:
    """The store of ``alias``, shared by all its backend instances: Django
    creates one instance per thread or async context, results must outlive
    it."""
    with _stores_lock:
        store = _stores.get(alias)
        if store is None:
            store = _stores[alias] = _Results(limit)
        store.limit = limit
        return store


def _copy(result: TaskResult) -> TaskResult:
    """A snapshot of ``result``, as a durable backend would read it back."""
    snapshot = copy.copy(result)
    object.__setattr__(snapshot, "errors", list(result.errors))
    object.__setattr__(snapshot, "worker_ids", list(result.worker_ids))
    return snapshot


class _Job(functools.partial[Any]):
    """One enqueued task: calling it runs the task's function and records
    the outcome in its result.

    A partial of the task's function, so that the middleware names that
    function in its logs and applies its `task_options`. ``scheduled``: given
    to `add_task`; then how each attempt ended is the middleware's to say:
    its call only keeps what it raised or returned, and the settle hook
    records the outcome the middleware counted (`_asgi_bgtasks_settled`).
    Else it records its end itself, as Django's ``ImmediateBackend`` does.
    ``on_its_own``: it runs after its caller has moved on (scheduled, or in a
    Task of its own on the event loop), with `db_task`'s connection handling.
    """

    result: TaskResult
    results: _Results
    sender: type["AfterResponseBackend"]  # of Django's signals
    scheduled: bool
    on_its_own: bool
    _final: bool  # SUCCESSFUL or FAILED recorded: nothing it does later counts
    _error: BaseException | None  # its attempt's, until the middleware settles it
    _value: Any  # its attempt's return value, likewise

    def __new__(
        cls,
        result: TaskResult,
        results: _Results,
        sender: type["AfterResponseBackend"],
    ) -> Self:
        job = super().__new__(cls, result.task.func)
        job.result = result
        job.results = results
        job.sender = sender
        job.scheduled = job.on_its_own = False
        job._final = False
        job._error = job._value = None
        return job

    def _function(self) -> Callable[..., Any]:
        return db_task(self.func) if self.on_its_own else self.func

    def _arguments(self, args: Sequence[Any]) -> Sequence[Any]:
        if self.result.task.takes_context:
            return (TaskContext(task_result=self.result), *args)
        return args

    def snapshot(self) -> TaskResult:
        with self.results.lock:
            return _copy(self.result)

    def _record(
        self,
        status: TaskResultStatus,
        error: BaseException | None = None,
        *,
        value: Any = None,
    ) -> None:
        """Move the result to ``status`` (recording ``error`` or the return
        ``value``), then send Django's signal: started for RUNNING, finished
        for SUCCESSFUL and FAILED, none for READY (a retry awaits). Once it
        is SUCCESSFUL or FAILED, nothing else is recorded: not what a task
        given up on (dropped, timed out) does later."""
        now = timezone.now()
        result = self.result
        with self.results.lock:
            if self._final:
                return
            running = status == TaskResultStatus.RUNNING
            finished = status in (TaskResultStatus.SUCCESSFUL, TaskResultStatus.FAILED)
            self._final = finished
            if running:
                started = result.started_at or now
                _set(result, started_at=started, last_attempted_at=now)
                result.worker_ids.append(WORKER_ID)
            _set(result, finished_at=now if finished else None, _return_value=value)
            self.results.mark(result, finished=finished)
            if error is not None:
                result.errors.append(_error(error))
            _set(result, status=status)
            snapshot = _copy(result)
        if running:
            task_started.send(self.sender, task_result=snapshot)
        elif finished:
            task_finished.send(self.sender, task_result=snapshot)

    def _ended(self, error: BaseException | None, value: Any = None) -> None:
        """The attempt's call raised ``error``, or returned ``value``: its
        end, or, after the response, what the settle hook will record."""
        if self.scheduled:
            self._error, self._value = error, value
        elif error is not None:
            self._record(TaskResultStatus.FAILED, error)
        else:
            self._record(TaskResultStatus.SUCCESSFUL, value=value)

    def _asgi_bgtasks_settled(self, outcome: str, retrying: bool) -> None:
        """The middleware settled an attempt with ``outcome``: the one place
        where a scheduled task's result gets it, so that the two agree.
        SUCCESSFUL only for ``succeeded``; ``timed_out`` is FAILED with a
        `TimeoutError`, whatever the task did once cancelled; ``failed`` is
        FAILED with what it raised (its own `CancelledError` included), or
        READY if it is retried. A drop is recorded by the drop hook, called
        next, which knows why."""
        error, value = self._error, self._value
        self._error = self._value = None
        if outcome == "succeeded":
            self._record(TaskResultStatus.SUCCESSFUL, value=value)
        elif outcome == "timed_out":
            self._record(TaskResultStatus.FAILED, TimeoutError(TIMED_OUT))
        elif outcome == "failed":
            status = TaskResultStatus.READY if retrying else TaskResultStatus.FAILED
            # Its call returned, yet its Task ended cancelled: by its own
            # request (one from outside would make it timed out or dropped).
            self._record(status, error or asyncio.CancelledError())

    def _asgi_bgtasks_dropped(self, dropped: DroppedTask) -> None:
        """The middleware will not run or finish this task: it failed."""
        why = DROPPED_BECAUSE.get(dropped.reason, dropped.reason)
        self._record(
            TaskResultStatus.FAILED, TaskDropped(DROPPED % (dropped.reason, why))
        )


class _SyncJob(_Job):
    def __call__(self, /, *args: Any, **kwargs: Any) -> None:
        self._record(TaskResultStatus.RUNNING)
        try:
            value = normalize_json(self._function()(*self._arguments(args), **kwargs))
        except BaseException as error:
            self._ended(error)
            raise
        self._ended(None, value)


class _AsyncJob(_Job):
    async def __call__(self, /, *args: Any, **kwargs: Any) -> None:
        self._record(TaskResultStatus.RUNNING)
        try:
            value = normalize_json(
                await self._function()(*self._arguments(args), **kwargs)
            )
        except BaseException as error:
            self._ended(error)
            raise
        self._ended(None, value)

    def start_on(self, loop: asyncio.AbstractEventLoop) -> None:
        """Run in a Task of its own on ``loop``, which runs this thread:
        its end is recorded as ever, and, should the Task never run it (the
        loop cancelled it first, or no Task could be made), why."""
        self.on_its_own = True
        coro = self._caught(*self.result.args, **self.result.kwargs)
        try:
            worker = loop.create_task(coro)
        except Exception as error:  # the app's task factory raised
            coro.close()
            try:
                raise RuntimeError(NOT_STARTED) from error
            except RuntimeError as not_started:
                self._record(TaskResultStatus.FAILED, not_started)
            return
        _on_loop.add(worker)
        worker.add_done_callback(self._ended_on_loop)

    async def _caught(self, /, *args: Any, **kwargs: Any) -> None:
        # What it raises is in its result, as ImmediateBackend has it; and
        # from a Task, KeyboardInterrupt or SystemExit would stop the loop.
        with contextlib.suppress(Exception, KeyboardInterrupt, SystemExit):
            await self(*args, **kwargs)

    def _ended_on_loop(self, worker: "asyncio.Task[None]") -> None:
        _on_loop.discard(worker)
        if worker.cancelled():  # recorded already, unless it never started
            self._record(TaskResultStatus.FAILED, asyncio.CancelledError(CANCELLED))


# The Tasks of async tasks enqueued on the event loop outside a request,
# until they end: the loop keeps only a weak reference.
_on_loop: set["asyncio.Task[None]"] = set()

NOT_STARTED = "AfterResponseBackend could not start the task on the event loop"
CANCELLED = (
    "its event loop cancelled it before it started (the server shut down, "
    "or the loop ended)"
)


def _set(result: TaskResult, **changes: Any) -> None:
    """Change fields of a (frozen) result."""
    for name, value in changes.items():
        object.__setattr__(result, name, value)


def _error(error: BaseException) -> TaskError:
    kind = type(error)
    return TaskError(
        exception_class_path=f"{kind.__module__}.{kind.__qualname__}",
        traceback="".join(format_exception(error)),
    )


class AfterResponseBackend(BaseTaskBackend):  # type: ignore[misc]
    """Run Django tasks after the response, in this process, with no worker.

    ``TASKS = {"default": {"BACKEND":
    "asgi_bgtasks.django.AfterResponseBackend"}}``. During a request handled
    by `BackgroundTasksMiddleware`, ``enqueue`` schedules the task with
    `add_task`: it runs after the response, by every rule of the middleware.
    Anywhere else (a management command, the shell, Django's test client) it
    runs the task at once, as Django's ``ImmediateBackend`` does; an async
    task enqueued by a sync call on the event loop (``on_drop``, a lifespan
    hook) starts on that loop in a Task of its own. Results are
    kept in this process, the last ``OPTIONS["max_results"]`` (10,000).
    """

    supports_defer = False  # a task runs after its response, not at a set time
    supports_async_task = True
    supports_get_result = False  # results live in this process only
    supports_priority = False  # a request's tasks run in the order enqueued

    def __init__(self, alias: str, params: dict[str, Any]) -> None:
        super().__init__(alias, params)
        limit = self.options.get("max_results", MAX_RESULTS)
        if type(limit) is not int or limit < 1:
            raise ValueError(
                f"TASKS[{alias!r}]['OPTIONS']['max_results'] must be an int >= 1, "
                f"got {limit!r}"
            )
        self._results = _results_for(alias, limit)

    def _job(self, task: Task, args: Any, kwargs: Any) -> _Job:
        self.validate_task(task)
        result = TaskResult(  # checks that the arguments are JSON
            task=task,
            id=get_random_string(32),
            status=TaskResultStatus.READY,
            enqueued_at=timezone.now(),
            started_at=None,
            last_attempted_at=None,
            finished_at=None,
            args=args,
            kwargs=kwargs,
            backend=self.alias,
            errors=[],
            worker_ids=[],
        )
        self._results.add(result)
        job_class = _AsyncJob if iscoroutinefunction(task.func) else _SyncJob
        job = job_class(result, self._results, type(self))
        task_enqueued.send(type(self), task_result=job.snapshot())
        return job

    def _schedule(self, job: _Job) -> bool:
        """Schedule ``job`` after the current response; False if there is
        none that the middleware handles."""
        job.scheduled = job.on_its_own = True
        try:
            add_task(job, *job.result.args, **job.result.kwargs)
        except RuntimeError:
            job.scheduled = job.on_its_own = False
            return False
        return True

    def enqueue(self, task: Task, args: Any, kwargs: Any) -> TaskResult:
        job = self._job(task, args, kwargs)
        enqueued = job.snapshot()
        if self._schedule(job):
            return enqueued
        if isinstance(job, _AsyncJob):
            try:
                loop = asyncio.get_running_loop()
            except RuntimeError:  # this thread runs no event loop: here, at once
                run: Callable[..., Any] = async_to_sync(job)
            else:  # a sync call on the loop cannot wait without blocking it
                job.start_on(loop)
                return job.snapshot()
        else:
            run = job
        with contextlib.suppress(Exception):  # in the result, as ImmediateBackend
            run(*job.result.args, **job.result.kwargs)
        return job.snapshot()

    async def aenqueue(self, task: Task, args: Any, kwargs: Any) -> TaskResult:
        job = self._job(task, args, kwargs)
        enqueued = job.snapshot()
        if self._schedule(job):
            return enqueued
        run = job if isinstance(job, _AsyncJob) else sync_to_async(job)
        with contextlib.suppress(Exception):  # in the result, as ImmediateBackend
            await run(*job.result.args, **job.result.kwargs)
        return job.snapshot()

    def get_result(self, result_id: str) -> TaskResult:
        """The result of a task enqueued in this process, as it is now.

        Raises ``TaskResultDoesNotExist`` for an id it does not hold: from
        another process, or forgotten (more than ``max_results`` since).
        """
        return self._results.get(result_id)

    async def aget_result(self, result_id: str) -> TaskResult:
        return self.get_result(result_id)
