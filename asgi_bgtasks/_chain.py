"""One request's tasks, run one after another, each in an asyncio Task of its own.

Each attempt of an ``async`` task runs in a Task of its own, made in the
context copied at ``add_task`` and started eagerly where the Python has it
(3.12+), so a task that ends in its first step costs no loop turn. Whose
cancellation ended it is therefore asyncio's own fact: the chain records why
it cancels a Task (`Run.timed_out`, `Run.cancelled_for`) before it does, and
any other cancellation is the task's own; a cancel request a task leaves
behind reaches only its own, finished, Task. A plain ``def`` task runs in the
runner's thread pool. Nothing waits in a coroutine: the end of each attempt
(a done callback) starts the next task.
"""

import asyncio
import contextlib
import contextvars
import functools
import inspect
import sys
import time
from collections.abc import Coroutine, Sequence
from concurrent.futures import Future
from typing import Any, Literal, Protocol

from ._observe import Observer, start
from ._stats import Outcome
from ._tasks import BackgroundTasks, _Task
from ._types import Ended

Reason = Literal["shutdown", "cancelled"]  # why a chain is cancelled

# How long a cancelled task may take to unwind before it is given up on.
UNWIND_GRACE = 0.5

# A chain's states; plain strings, compared by identity (an Enum member
# costs ~45 ns per access on 3.11).
State = Literal["queued", "running", "waiting", "cancelling", "done"]
QUEUED: State = "queued"  # waiting for a free slot (max_concurrency)
RUNNING: State = "running"  # runs its tasks one by one
WAITING: State = "waiting"  # to retry the task that failed; its slot is kept
CANCELLING: State = "cancelling"  # no further task starts; the last one unwinds
DONE: State = "done"

# What our own callbacks run in: they set no context variable, and each
# Task they start has the context of its task.
_CALLBACKS = contextvars.Context()


class Runner(Protocol):
    """What a chain needs of the runner that owns it (`TaskRunner`)."""

    accepting: bool

    @property
    def expired(self) -> bool: ...

    def register(self, chain: "Chain") -> None: ...

    def timeout_of(self, task: _Task) -> float | None: ...

    def threads(self) -> Any: ...

    def settle(self, run: "Run") -> float | None: ...

    def abandon(self, tasks: list[_Task], reason: Any) -> None: ...

    def not_started(
        self, taken: _Task, rest: list[_Task], error: BaseException
    ) -> None: ...

    def thread_past_timeout(self, run: "Run") -> None: ...

    def thread_returned_late(self, run: "Run") -> None: ...

    def leave_running_in_thread(self, run: "Run") -> None: ...

    def release(self, chain: "Chain", held_slot: bool) -> None: ...


class Run:
    """One attempt of a task, and what was done to it.

    Facts: ``timed_out``, its timeout passed; ``cancelled_for``, its chain
    was cancelled while it ran; ``abandoned``, the chain stopped waiting for
    it; ``error``, what it raised. `outcome` decides from these alone.
    ``worker`` runs it: its asyncio Task, or, for a plain ``def`` task, its
    job in the pool, which can be cancelled only until a thread takes it
    (``in_thread`` is False from then on if it was).

    Its facts' defaults are class attributes, and an attempt sets only what
    happens to it (measured, callgrind, 3.13: 1,700 instructions against
    3,000 for a slotted class setting all twelve; about 60 ns a task).
    """

    timed_out = False
    abandoned = False
    settled = False
    cancelled_for: Reason | None = None
    error: BaseException | None = None
    # Its timeout's timer; once that fired, its grace's.
    timer: asyncio.TimerHandle | None = None
    worker: "asyncio.Task[Any] | Future[Any] | None" = None
    observed: Sequence[Ended] = ()  # what observers want told at its end

    def __init__(self, task: _Task, started: float) -> None:
        self.task = task
        self.started = started
        self.in_thread = task.in_thread
        # The context copied at add_task; a copy of it for a task that may
        # be retried, so that each attempt starts from it unchanged.
        self.context = task.context.copy() if task.options.retries else task.context

    def __repr__(self) -> str:
        return (
            f"<Run {self.task.name} error={type(self.error).__name__} "
            f"timed_out={self.timed_out} cancelled_for={self.cancelled_for} "
            f"abandoned={self.abandoned}>"
        )

    def outcome(self) -> Outcome:
        """How the attempt ended: the first cause the chain recorded wins."""
        if self.timed_out:
            return "timed_out"
        if self.abandoned:
            return "dropped"
        if self.error is None:
            return "succeeded"
        if self.cancelled_for is not None and (
            not self.in_thread or isinstance(self.error, asyncio.CancelledError)
        ):
            return "dropped"  # cancelled by us: whatever its unwinding raised
        return "failed"  # its own error, its own CancelledError included


class Chain:
    """One request's tasks, run in the order added.

    (QUEUED →) RUNNING (⇄ WAITING) → (CANCELLING →) DONE. The next task
    starts only when the previous one has ended (or its last retry has, or
    its grace ran out); a chain holds one slot of the runner's
    ``max_concurrency`` from RUNNING to DONE.
    """

    __slots__ = ("_ended", "_retry", "_run", "_runner", "_watching", "state", "tasks")

    def __init__(self, runner: Runner, tasks: BackgroundTasks) -> None:
        self._runner = runner
        self.tasks = tasks
        self.state: State = RUNNING
        self._run: Run | None = None  # the attempt running now
        self._retry: asyncio.TimerHandle | None = None
        self._ended: list[asyncio.Future[None]] | None = None  # one per waiter
        tasks._chained = True
        watched = tasks._watched
        self._watching: Sequence[Observer] = () if watched is None else watched[1]

    def __repr__(self) -> str:
        return f"<Chain {self.state} run={self._run!r}>"

    def advance(self, first_only: bool = False) -> None:
        """Start the tasks in order, until one does not end at once, a retry
        waits, or none is left (then the chain is done). ``first_only``: a
        detached request's call starts its first task, and leaves the rest to
        a later loop turn."""
        runner = self._runner
        tasks = self.tasks
        loop = asyncio.get_running_loop()
        # Asked once for the tasks this call starts, not once a task
        # (measured, callgrind, 3.13, ten tasks: 450 instructions a task,
        # about 80 ns).
        eager = _starts_eagerly(loop)
        while self.state is RUNNING:
            if not runner.accepting and runner.expired:  # no task starts
                self.cancel("shutdown")
                return
            task = tasks._take()
            if task is None:
                self._finish()
                return
            run = self._run = Run(task, now())
            if self._watching:
                self._observe(run)
            if run.in_thread:
                self._submit(run, loop)
                return
            coro = _guarded(run, task.func, task.args, task.kwargs)
            del task  # not kept while the next runs: its arguments go as it ends
            if not self._start_task(run, coro, loop, eager):
                return
            if first_only and tasks._has_tasks():
                self._runner.register(self)
                loop.call_soon(self.advance, context=_CALLBACKS)
                return

    def _submit(self, run: Run, loop: asyncio.AbstractEventLoop) -> None:
        """Run a plain ``def`` attempt in the runner's thread pool."""
        task = run.task
        job = self._runner.threads().submit(
            _call, [run.context, task.func, task.args, task.kwargs]
        )
        run.worker = job
        self._runner.register(self)  # it outlasts this call: shutdown ends it
        self._time(run, loop)
        job.add_done_callback(functools.partial(_returned_soon, loop, [self, run]))

    def _start_task(
        self,
        run: Run,
        coro: Coroutine[Any, Any, None],
        loop: asyncio.AbstractEventLoop,
        eager: bool,
    ) -> bool:
        """Run ``coro`` in a Task of its own for ``run`` (made by the app's
        task factory if the loop has one; else eagerly, where the Python can:
        a task that ends in its first step costs no loop turn); True if it
        ended at once (settled then)."""
        try:
            if eager:
                worker = asyncio.Task(  # type: ignore[call-arg,unused-ignore]
                    coro, loop=loop, context=run.context, eager_start=True
                )
            else:
                worker = loop.create_task(coro, context=run.context)
        except Exception as error:  # the app's task factory: nothing can start
            coro.close()
            self._cannot_start(run, error)
            return False
        run.worker = worker
        if worker.done():
            self._settle(run, worker)
            return True
        self._runner.register(self)  # it may outlast this call: shutdown ends it
        self._time(run, loop)
        worker.add_done_callback(self._task_ended, context=_CALLBACKS)
        return False

    def _time(self, run: Run, loop: asyncio.AbstractEventLoop) -> None:
        """Start ``run``'s timeout, if it has one, as it goes on after its
        start (one that ended in its first step needs none)."""
        timeout = self._runner.timeout_of(run.task)
        if timeout is not None:
            run.timer = loop.call_later(timeout, self._expire, run, context=_CALLBACKS)

    def _cannot_start(self, run: Run, error: Exception) -> None:
        """No Task can be made (a task factory raised): drop this task and
        the rest, and end the chain."""
        self._run = None
        self.state = CANCELLING
        self._runner.not_started(run.task, self.tasks._close(), error)
        self._finish()

    def _task_ended(self, worker: "asyncio.Task[Any]") -> None:
        """The Task of an attempt has ended."""
        run = self._run
        if run is None or run.worker is not worker:
            # Given up on earlier: it ended on its own. What it raised is
            # not reported again.
            if not worker.cancelled():
                worker.exception()
            return
        self._settle(run, worker)
        self._go_on()

    def _returned(self, run: Run, job: "Future[Any]") -> None:
        """A plain ``def`` attempt's job ended (on the loop now), or was
        cancelled before a thread took it."""
        result = None
        if job.cancelled():
            run.error = asyncio.CancelledError()
        elif (error := job.exception()) is not None:
            run.error = error
        else:
            result = job.result()
        if run.settled:  # given up on at its timeout's grace
            self._runner.thread_returned_late(run)
            _never_awaited(result)
            return
        if run is not self._run:  # left to its thread at shutdown
            if inspect.isawaitable(result):  # its chain has ended: never awaited
                _never_awaited(result)
                run.error = asyncio.CancelledError()
            self._settle(run)
            return
        if inspect.isawaitable(result):  # a plain def returned an awaitable
            if run.timed_out or run.cancelled_for is not None:
                _never_awaited(result)  # its time is up, or its chain ended
                run.error = asyncio.CancelledError()
            else:
                run.in_thread = False
                coro = _guarded(run, _itself, (result,), {})
                loop = asyncio.get_running_loop()
                if not self._start_task(run, coro, loop, _starts_eagerly(loop)):
                    return
                self._go_on()
                return
        self._settle(run)
        self._go_on()

    def _go_on(self) -> None:
        """After an attempt settled from a callback: the next task, or the end."""
        if self.state is RUNNING:
            self.advance()
        elif self.state is CANCELLING:
            self._finish()

    def _observe(self, run: Run) -> None:
        """Tell the observers that ``run`` starts."""
        task = run.task
        watched = self.tasks._watched
        assert watched is not None  # it is: `_watching` came from there
        waited = run.started - watched[0] if task.attempt == 1 else None
        run.observed = start(
            self._watching, task.name, task.attempt, run.context, waited
        )

    def _expire(self, run: Run) -> None:
        """``run`` is past its timeout: cancel it (unless a thread has it),
        and give it `UNWIND_GRACE` seconds to end. One that has ended (its
        end not settled yet: its callback runs next) is not timed out."""
        run.timer = None
        worker = run.worker
        assert worker is not None
        if worker.done():
            return
        run.timed_out = True
        if not run.in_thread:
            worker.cancel()
        elif worker.cancel():  # no thread had taken it: it never will
            run.in_thread = False
            return
        else:
            self._runner.thread_past_timeout(run)
        run.timer = asyncio.get_running_loop().call_later(
            UNWIND_GRACE, self._grace_over, run, context=_CALLBACKS
        )

    def _grace_over(self, run: Run) -> None:
        """A timed-out attempt did not end within its grace: it goes on on
        its own, counted timed out; the chain moves on."""
        run.timer = None
        # Still its chain's: had it ended, or been given up on, its timer
        # would have been cancelled.
        assert run is self._run
        run.abandoned = True
        self._settle(run)
        self._go_on()

    def _settle(self, run: Run, ended: "asyncio.Task[Any] | None" = None) -> None:
        """Count the attempt (`TaskRunner.settle`) or schedule its retry.
        ``ended``: its Task, which has ended: what ended it is recorded
        first (what it raised, or the CancelledError it ended with, whose
        context is what was raised in it)."""
        if ended is not None:
            if ended.cancelled():
                try:
                    ended.result()
                except asyncio.CancelledError as cancelled:
                    run.error = cancelled
            elif (error := ended.exception()) is not None:
                run.error = error
        run.settled = True
        if run is self._run:
            self._run = None
        wait = self._runner.settle(run)
        if wait is not None and self.state is RUNNING:
            self.tasks._put_back(run.task)
            self.state = WAITING
            self._runner.register(self)  # it outlasts this call: shutdown ends it
            self._retry = asyncio.get_running_loop().call_later(
                wait, self._retry_now, context=_CALLBACKS
            )

    def _retry_now(self) -> None:
        self._retry = None
        self.state = RUNNING
        self.advance()

    def ended(self) -> "asyncio.Future[None]":
        """A future of the caller's own, resolved once the chain is DONE.
        Each waiter has its own: cancelling one's wait (the server cancelling
        the request's call) does not end another's (shutdown's grace)."""
        future = asyncio.get_running_loop().create_future()
        if self.state is DONE:
            future.set_result(None)
        elif self._ended is None:
            self._ended = [future]
        else:
            self._ended.append(future)
        return future

    def unwinding(self) -> bool:
        """Whether it is cancelled and its last attempt has not ended yet."""
        return self.state is CANCELLING and self._run is not None

    def cancel(self, reason: Reason) -> None:
        """Start no further task: drop the rest, cancel the running one."""
        was = self.state
        if was is CANCELLING or was is DONE:
            return
        self.state = CANCELLING
        if self._retry is not None:
            self._retry.cancel()
            self._retry = None
        self._runner.abandon(self.tasks._close(), reason)
        run = self._run
        if was is QUEUED:
            self._finish(held_slot=False)
        elif run is None:  # waiting to retry
            self._finish()
        elif run.timed_out:
            pass  # cancelled already, by its timeout: its grace is running
        else:
            run.cancelled_for = reason
            if run.timer is not None:
                run.timer.cancel()  # the first cause wins: no timeout from now on
                run.timer = None
            worker = run.worker
            assert worker is not None
            if not run.in_thread:
                worker.cancel()
            elif worker.cancel():  # no thread had taken it: it never will
                run.in_thread = False
            else:  # a thread has it: it cannot be stopped
                self._run = None
                self._runner.leave_running_in_thread(run)
                self._finish()

    def give_up(self) -> None:
        """Stop waiting for a cancelled task that is still unwinding: count
        it (dropped, or timed out if its timeout came first); its Task goes
        on on its own."""
        run = self._run
        if run is not None and self.state is CANCELLING:
            run.abandoned = True
            self._settle(run)
            self._finish()

    def _finish(self, held_slot: bool = True) -> None:
        self.state = DONE
        self._runner.release(self, held_slot)
        for ended in self._ended or ():
            if not ended.done():
                ended.set_result(None)


# Python 3.12 and later start a Task eagerly if asked; 3.11 cannot: its
# Tasks start a loop turn later.
_EAGER = sys.version_info >= (3, 12)


def _starts_eagerly(loop: asyncio.AbstractEventLoop) -> bool:
    """Whether a task's Task is ours to start eagerly: the Python can, and
    the app set no task factory (which then makes it)."""
    return _EAGER and loop.get_task_factory() is None


async def _guarded(
    run: Run, func: Any, args: tuple[Any, ...], kwargs: dict[str, Any]
) -> None:
    """An ``async`` task's call, in its Task. A Task lets ``KeyboardInterrupt``
    and ``SystemExit`` stop the event loop: from a task they are its failure
    (recorded on its run), and one task cannot stop the next."""
    try:
        await func(*args, **kwargs)
    except (KeyboardInterrupt, SystemExit) as error:
        run.error = error


def _itself(value: Any) -> Any:
    return value


# Our one clock for wait times and durations: the monotonic clock asyncio's
# loop.time() reads, without that Python method in between.
now = time.monotonic


def _call(call: list[Any]) -> Any:
    """A plain ``def`` task, in a worker thread, in its context. What it
    calls, with and in comes in a list emptied here: the pool's work item
    outlives the job's end (the loop may settle the task before the worker
    thread lets go of the work item), and must not keep the arguments."""
    context, func, args, kwargs = call
    call.clear()
    return context.run(func, *args, **kwargs)


def _returned_soon(
    loop: asyncio.AbstractEventLoop, link: list[Any], job: "Future[Any]"
) -> None:
    """In the thread that ended ``job``: have the loop settle its run. The
    job keeps this callback, and its pool keeps the job a moment after it
    ended: the chain and the run come in a list emptied here, so that
    neither the job nor its pool keeps the task's arguments."""
    chain, run = link
    link.clear()
    # The loop may be closed: then nobody is left to count it.
    with contextlib.suppress(RuntimeError):
        loop.call_soon_threadsafe(chain._returned, run, job, context=_CALLBACKS)


def _never_awaited(awaitable: Any) -> None:
    """Close a coroutine that will not be awaited (no "never awaited" warning)."""
    if inspect.iscoroutine(awaitable):
        awaitable.close()
