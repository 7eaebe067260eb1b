"""One request's tasks as a chain: run one after another, each in its own Task.

Every task runs as an asyncio Task of its own, created in the context copied
at ``add_task``. Only the runner holds that Task besides the task's own code,
so whose cancellation ended a task is a fact the runner records when it
cancels (`Run.cancelled_for`, `Run.timed_out`), never a guess from the
exception. A chain moves through explicit states; each transition is one
method of `Chain`.
"""

import asyncio
import concurrent.futures
import enum
import functools
import inspect
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Literal

from ._stats import Outcome
from ._tasks import BackgroundTasks, _Task

if TYPE_CHECKING:
    from ._runner import TaskRunner

Reason = Literal["shutdown", "cancelled"]  # why the runner cancels a chain


class State(enum.Enum):
    OPEN = "open"  # its request is being handled
    QUEUED = "queued"  # waiting for a free slot (max_concurrency)
    RUNNING = "running"  # runs its tasks one by one
    WAITING = "waiting"  # to retry the task that failed; its slot is kept
    CANCELLING = "cancelling"  # no further task starts; the last one unwinds
    DONE = "done"


class Run:
    """One task running, and what was done to it.

    An ``async`` task runs in an asyncio Task of its own, created in the task's
    context; a plain ``def`` one as a job of the runner's thread pool, which
    can be cancelled only until a thread takes it (``in_thread`` is False
    from then on if it was). Facts: ``timed_out``, its timeout passed;
    ``cancelled_for``, the runner cancelled it (a thread only marked: it
    cannot be stopped); ``abandoned``, the runner stopped waiting for it to
    unwind; ``error``, what it raised. `outcome` decides from these alone.
    """

    __slots__ = (
        "abandoned",
        "cancelled_for",
        "child",
        "context",
        "error",
        "in_thread",
        "job",
        "on_end",
        "started",
        "task",
        "timed_out",
        "timer",
    )

    def __init__(
        self,
        task: _Task,
        on_end: Callable[["Run"], None],
        threads: Callable[[], concurrent.futures.Executor],
    ) -> None:
        """Start ``task``; ``on_end(self)`` is called when it ends. A plain
        ``def`` task goes to the pool ``threads()`` returns."""
        self.task = task
        self.on_end = on_end
        self.timed_out = False
        self.cancelled_for: Reason | None = None
        self.abandoned = False
        self.error: BaseException | None = None
        self.timer: asyncio.TimerHandle | None = None
        self.in_thread = task.in_thread
        # The context copied at add_task; a copy of it for a task that may
        # be retried, so that each attempt starts from it unchanged.
        self.context = task.context.copy() if task.options.retries else task.context
        self.started = asyncio.get_running_loop().time()
        self.child: asyncio.Future[Any]
        if self.in_thread:
            call = functools.partial(
                self.context.run, task.func, *task.args, **task.kwargs
            )
            self.job = threads().submit(call)
            self.child = asyncio.wrap_future(self.job)
            self.child.add_done_callback(self._returned_from_thread)
        else:
            self._start(task.func, task.args, task.kwargs)

    def __repr__(self) -> str:
        return (
            f"<Run {self.task.name} done={self.child.done()} "
            f"timed_out={self.timed_out} cancelled_for={self.cancelled_for} "
            f"abandoned={self.abandoned}>"
        )

    def expire(self) -> bool:
        """Its timeout passed: cancel it; False if it runs in a thread."""
        self.timed_out = True
        return self._stop()

    def cancel(self, reason: Reason) -> bool:
        """Cancel it for ``reason``; False if it runs in a thread (which
        cannot be stopped; a coroutine it returns is then never started)."""
        if self.timer is not None:
            self.timer.cancel()  # the first cause wins: no timeout from now on
        self.cancelled_for = reason
        return self._stop()

    def _stop(self) -> bool:
        if self.in_thread:
            if not self.job.cancel():
                return False  # a thread has it
            self.in_thread = False  # and never will
        self.child.cancel()
        return True

    def outcome(self) -> Outcome:
        """How the task ended."""
        if self.abandoned:
            return "dropped"
        if self.timed_out:
            return "timed_out"
        if self.error is None:
            return "succeeded"
        if self.cancelled_for is not None and (
            not self.in_thread or isinstance(self.error, asyncio.CancelledError)
        ):
            return "dropped"  # cancelled by us: whatever its unwinding raised
        return "failed"  # its own error, its own CancelledError included

    def _start(
        self, func: Callable[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any]
    ) -> None:
        self.child = asyncio.get_running_loop().create_task(
            _call(self, func, args, kwargs), context=self.context
        )
        self.child.add_done_callback(self._ended)

    def _ended(self, child: "asyncio.Future[None]") -> None:
        if child.cancelled():
            self.error = asyncio.CancelledError()
        self.on_end(self)

    def _returned_from_thread(self, future: "asyncio.Future[Any]") -> None:
        if future.cancelled():  # cancelled before a thread took it
            self.error = asyncio.CancelledError()
            self.on_end(self)
            return
        self.error = future.exception()
        if self.error is None and inspect.isawaitable(result := future.result()):
            # A plain lambda that returned a coroutine: await it, unless the
            # runner has given up on this task meanwhile.
            if self.timed_out or self.cancelled_for is not None:
                if inspect.iscoroutine(result):
                    result.close()
                self.error = asyncio.CancelledError()
            else:
                self.in_thread = False
                self._start(_itself, (result,), {})
                return
        self.on_end(self)


class Chain(BackgroundTasks):
    """The tasks of one request, and the lifecycle of running them.

    OPEN → (QUEUED →) RUNNING (⇄ WAITING) → (CANCELLING →) DONE. The next
    task starts only when the previous one's Task has ended, or its last
    retry has; a chain holds one slot of the runner's ``max_concurrency``
    while RUNNING, WAITING or CANCELLING.
    """

    __slots__ = ("_ended", "_retry", "_run", "_runner", "state")

    def __init__(self, runner: "TaskRunner") -> None:
        super().__init__(runner.ledger)
        self._runner = runner
        self.state = State.OPEN
        self._run: Run | None = None
        self._retry: asyncio.TimerHandle | None = None
        self._ended: asyncio.Future[None] | None = None

    def __repr__(self) -> str:
        return f"<Chain {self.state.value} run={self._run!r}>"

    def start(self) -> None:
        """A slot is ours: run the tasks, one after another, unless the chain
        was ended while its start was deferred."""
        if self.state is State.DONE:
            return
        self.state = State.RUNNING
        self._start_next()

    def ended(self) -> "asyncio.Future[None]":
        """A future resolved once the chain is DONE, or once `cancel` has
        left it to a worker thread that cannot be stopped. Ask once, before
        the chain starts."""
        self._ended = asyncio.get_running_loop().create_future()
        return self._ended

    def unwinding(self) -> "asyncio.Future[Any] | None":
        """The Task of its cancelled ``async`` task, while it unwinds."""
        run = self._run
        if self.state is State.CANCELLING and run is not None and not run.in_thread:
            return run.child
        return None

    def cancel(self, reason: Reason) -> None:
        """Start no further task: drop the rest, cancel the running one."""
        if self.state in (State.CANCELLING, State.DONE):
            return
        held_slot = self.state in (State.RUNNING, State.WAITING)
        if self._retry is not None:
            self._retry.cancel()
        self.state = State.CANCELLING
        self._runner.abandon(self._close(), reason)
        run = self._run
        if run is None:
            self._finish(held_slot)
        elif not run.cancel(reason):
            self._runner.leave_running_in_thread(run)
            self._resolve_ended()

    def give_up(self) -> None:
        """Stop waiting for a cancelled ``async`` task that is still unwinding."""
        run = self._run
        if run is not None and self.unwinding() is not None:
            run.abandoned = True
            self._settle(run)

    def _start_next(self) -> None:
        task = self._take()
        if task is None:
            self._finish(held_slot=True)
            return
        run = self._run = Run(task, self._task_ended, self._runner.threads)
        timeout = self._runner.timeout_of(task)
        if timeout is not None:
            run.timer = asyncio.get_running_loop().call_later(
                timeout, self._runner.expire, run
            )

    def _task_ended(self, run: Run) -> None:
        if run is self._run:  # else: given up on before
            self._settle(run)

    def _settle(self, run: Run) -> None:
        """The running task has ended: count it or retry it, then go on."""
        self._run = None
        wait = self._runner.settle(run)
        if self.state is not State.RUNNING:
            self._finish(held_slot=True)
        elif wait is None:
            self._start_next()
        else:
            self._put_back(run.task)
            self.state = State.WAITING
            self._retry = asyncio.get_running_loop().call_later(wait, self._retry_now)

    def _retry_now(self) -> None:
        self._retry = None
        self.state = State.RUNNING
        self._start_next()

    def _finish(self, held_slot: bool) -> None:
        self.state = State.DONE
        self._runner.release(self, held_slot)
        self._resolve_ended()

    def _resolve_ended(self) -> None:
        ended = self._ended
        if ended is not None and not ended.done():
            ended.set_result(None)


async def _call(
    run: Run, func: Callable[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any]
) -> None:
    """The coroutine of an ``async`` task's Task: records what the task raised.

    Recording, not raising, keeps KeyboardInterrupt or SystemExit from a task
    away from the event loop, and the error out of the Task's result: under
    an eager task factory the error's frames lead back to the frame that
    created the Task, which holds that Task.
    """
    try:
        await func(*args, **kwargs)
    except BaseException as error:
        run.error = error


def _itself(awaitable: Any) -> Any:
    return awaitable
