"""One request's tasks as a chain, run one after another by one driver.

Every chain is driven in an asyncio Task of its own: inline, its request's
call awaits it (started eagerly, so tasks that end at once
cost no loop turn); detached, nobody waits for it. An ``async`` task's
coroutine is stepped through by hand in the context copied at ``add_task``
(no Task per task: a Task and its loop turns cost more than the whole
request); a plain ``def`` task runs in the runner's thread pool while the
driver waits.

Whose cancellation ended a task is therefore a fact, not a guess: nobody
but the runner and the task's own code holds the chain's Task. The runner
records why it cancels (`Run.timed_out`, `Run.cancelled_for`) before it
does; any other cancellation is the task's own. The server cancelling an
inline request's call reaches the call, which has the runner cancel the
chain for that reason.
"""

import asyncio
import contextlib
import contextvars
import inspect
import sys
import types
from asyncio.tasks import _enter_task, _leave_task
from collections.abc import Coroutine, Generator, Sequence
from concurrent.futures import Future
from typing import TYPE_CHECKING, Any, Literal

from ._observe import Ended, Observer, start
from ._options import DEFAULTS
from ._stats import Outcome
from ._tasks import BackgroundTasks, _Task

if TYPE_CHECKING:
    from ._runner import TaskRunner

Reason = Literal["shutdown", "cancelled"]  # why a chain is cancelled


# A chain's states; plain strings, compared by identity (an Enum member
# costs ~45 ns per access on 3.11, and the driver checks its state often).
State = Literal["queued", "running", "waiting", "cancelling", "done"]
QUEUED: State = "queued"  # waiting for a free slot (max_concurrency)
RUNNING: State = "running"  # runs its tasks one by one
WAITING: State = "waiting"  # to retry the task that failed; its slot is kept
CANCELLING: State = "cancelling"  # no further task starts; the last one unwinds
DONE: State = "done"


class Run:
    """One attempt of a task, and what was done to it.

    Facts: ``timed_out``, its timeout passed; ``cancelled_for``, its chain
    was cancelled while it ran; ``abandoned``, the runner stopped waiting for
    it to unwind; ``error``, what it raised. `outcome` decides from these
    alone. A plain ``def`` task's ``job`` can be cancelled only until a
    thread takes it (``in_thread`` is False from then on if it was).
    """

    __slots__ = (
        "abandoned",
        "cancelled_for",
        "context",
        "error",
        "in_thread",
        "job",
        "observed",
        "result",
        "returned",
        "started",
        "task",
        "timed_out",
        "timer",
    )

    def __init__(self, task: _Task, started: float) -> None:
        self.task = task
        self.started = started
        self.timed_out = False
        self.cancelled_for: Reason | None = None
        self.abandoned = False
        self.error: BaseException | None = None
        self.result: Any = None
        self.returned = False  # its job has ended (a plain def task)
        self.timer: asyncio.TimerHandle | None = None
        self.job: Future[Any] | None = None
        self.observed: list[Ended] = []  # what observers want told at its end
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
        """How the attempt ended."""
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


class Chain:
    """The driver of one request's tasks, and the lifecycle of running them.

    (QUEUED, inline only →) RUNNING (⇄ WAITING) → (CANCELLING →) DONE. The
    next task starts only when the previous one has ended, or its last retry
    has; a chain holds one slot of the runner's ``max_concurrency`` from
    RUNNING to DONE.
    """

    __slots__ = (
        "_base",
        "_ended",
        "_host",
        "_retry",
        "_run",
        "_runner",
        "_waiting_for",
        "_wake",
        "_watching",
        "inline",
        "state",
        "tasks",
    )

    def __init__(self, runner: "TaskRunner", tasks: BackgroundTasks, inline: bool):
        self._runner = runner
        self.tasks = tasks
        self.inline = inline
        self.state: State = RUNNING
        self._host: asyncio.Task[Any] | None = None
        self._base = 0  # the host's cancel requests before the chain began
        self._run: Run | None = None
        self._waiting_for: Run | None = None  # a plain def task, in a thread
        self._wake: asyncio.Future[None] | None = None
        self._retry: asyncio.TimerHandle | None = None
        self._ended: list[asyncio.Future[None]] | None = None  # one per waiter
        watched = tasks._watched
        self._watching: Sequence[Observer] = () if watched is None else watched[1]

    def __repr__(self) -> str:
        return f"<Chain {self.state} run={self._run!r}>"

    def start_inline(self) -> "asyncio.Future[None] | None":
        """Run the chain in a Task of its own, now; return None if it ended
        at once, else a future resolved when it is done (or left to a
        thread), for the request's call to await. Started eagerly
        (`_eager_task`): tasks that end within their first step cost no
        loop turn."""
        loop = asyncio.get_running_loop()
        if loop.get_task_factory() is None:
            _eager_task(self.drive())
        else:  # the chain holds its Task (`_host`) while it runs
            loop.create_task(self.drive(), context=contextvars.Context())  # noqa: RUF006
        return None if self.state is DONE else self.ended()

    def start_detached(self) -> None:
        """Run the chain in a Task of its own, made by the app's task factory
        if it has one, a loop turn later: none of its code runs in the
        caller, even under an eager task factory."""
        loop = asyncio.get_running_loop()
        if loop.get_task_factory() is None:
            asyncio.Task(self.drive(), context=contextvars.Context())
        else:
            loop.call_soon(self._create_task, context=contextvars.Context())

    def _create_task(self) -> None:
        asyncio.get_running_loop().create_task(self.drive())

    def start(self) -> None:
        """A slot was handed to this queued inline chain: its Task waits
        for it. (A detached chain is made only once it has a slot.)"""
        self.state = RUNNING
        self._wake_up()

    async def drive(self) -> None:
        """Run the tasks one after another in the chain's own Task."""
        host = self._host = asyncio.current_task()
        assert host is not None
        self._base = host.cancelling()
        tasks = self.tasks
        runner = self._runner
        quick = runner.timeout is None and not self._watching
        try:
            if self.state is QUEUED:
                await self._sleep()
            while self.state is RUNNING:
                if not runner.accepting and runner.expired:  # no task starts
                    self.cancel("shutdown")
                    break
                task, first = self._while_quick(tasks._take(), quick)
                if task is None:
                    break
                await self._attempt(task, first)
                del task, first  # its arguments go when it has ended
        except asyncio.CancelledError:
            # Not the runner's (it wakes the chain's waits instead): a
            # cancel left behind by a task that has ended. The chain ends.
            self._waiting_for = None
            self.cancel("cancelled")
            raise
        finally:
            if self.state is not DONE and self._run is None:
                self._finish()
            self._host = None  # no reference cycle through the chain's Task

    def _while_quick(
        self, task: _Task | None, quick: bool
    ) -> tuple[_Task | None, "_FirstStep | None"]:
        """Run the tasks that end well within their first step, each counted
        and followed by the next under one lock (measured: 3.4 -> 1.5 µs per
        no-op task); return the first that does not, with that step, or None
        at the end of the list. Quick only with no timeouts and no observers:
        a task with options, or a plain ``def`` one, goes the general way."""
        if not quick:
            return task, None
        host = self._host
        runner = self._runner
        assert host is not None
        while task is not None and task.options is DEFAULTS and not task.in_thread:
            context = task.context
            try:
                steps = _iterator(context.run(task.func, *task.args, **task.kwargs))
                yielded = context.run(steps.send, None)
            except StopIteration:
                # Between tasks the chain's Task has no cancel request left,
                # and past the shutdown deadline no task starts: the general
                # way withdraws requests, and checks the deadline.
                if (
                    host.cancelling() != self._base
                    or _cancel_pending(host)
                    or not runner.accepting
                ):
                    return task, (None, _ENDED, None)
                task = self.tasks._succeeded_and_take(task)
                continue
            except BaseException as error:
                return task, (None, _ENDED, error)
            return task, (steps, yielded, None)
        return task, None

    async def _attempt(self, task: _Task, first: "_FirstStep | None") -> None:
        """Run one attempt of ``task`` to its end, settle it, and wait for
        its retry if it gets one; ``first``, its first step if `drive` took
        it."""
        runner = self._runner
        loop = asyncio.get_running_loop()
        run = self._run = Run(task, loop.time())
        if self._watching:
            self._observe(run)
        timeout = runner.timeout_of(task)
        if timeout is not None:
            run.timer = loop.call_later(timeout, runner.expire, self, run)
        if first is not None:
            steps, yielded, run.error = first
            if yielded is not _ENDED:
                await _step_through(run, steps, yielded)
        elif run.in_thread:
            if not await self._in_thread(run):
                return  # the chain left it to its thread, which settles it
            result, run.result = run.result, None
            if inspect.isawaitable(result) and run.error is None:
                run.in_thread = False
                if run.timed_out or run.cancelled_for is not None:
                    _never_awaited(result)  # its time is up, or its chain ended
                    run.error = asyncio.CancelledError()
                else:  # a plain def that returned a coroutine: await it here
                    await _step_through(run, _iterator(result), _UNSTARTED)
        else:
            try:
                result = run.context.run(task.func, *task.args, **task.kwargs)
                steps = _iterator(result)
            except BaseException as error:
                run.error = error
            else:
                del result
                await _step_through(run, steps, _UNSTARTED)
        if run.error is None and _cancel_pending(self._host):
            # It asked to cancel itself and returned: asyncio would end its
            # Task cancelled.
            run.error = asyncio.CancelledError()
        self._withdraw_requests()
        if not run.abandoned and _cancel_pending(self._host):
            await self._consume_own_request()
        self._settle(run)  # unless it was, when it was given up on
        if self.state is WAITING:
            await self._sleep()

    def _observe(self, run: Run) -> None:
        """Tell the observers that ``run`` starts."""
        task = run.task
        watched = self.tasks._watched
        assert watched is not None  # it is: `_watching` came from there
        waited = run.started - watched[0] if task.attempt == 1 else None
        run.observed = start(
            self._watching, task.name, task.attempt, run.context, waited
        )

    def _withdraw_requests(self) -> None:
        """Withdraw the cancel requests made on the chain's Task while an
        attempt ran: the runner's (it recorded why on the `Run`) and the
        task's own (itself, or a TaskGroup that did not withdraw its own on
        Python < 3.13). Nobody else holds this Task, so there are no others.
        """
        host = self._host
        assert host is not None
        for _ in range(host.cancelling() - self._base):
            host.uncancel()

    async def _consume_own_request(self) -> None:
        """A task asked to cancel itself and ended before it was delivered:
        take the delivery, so that the next task does not get it."""
        with contextlib.suppress(asyncio.CancelledError):
            await asyncio.sleep(0)

    async def _in_thread(self, run: Run) -> bool:
        """Run a plain ``def`` attempt in the pool; False if the chain left
        it to its thread."""
        task = run.task
        job = run.job = self._runner.threads().submit(
            run.context.run, task.func, *task.args, **task.kwargs
        )
        asyncio.wrap_future(job).add_done_callback(
            lambda future: self._returned(run, future)
        )
        self._waiting_for = run
        await self._sleep()
        return run.returned and run is self._run

    def _returned(self, run: Run, future: "asyncio.Future[Any]") -> None:
        """A plain ``def`` attempt's job ended, or was cancelled before a
        thread took it."""
        if future.cancelled():
            run.error = asyncio.CancelledError()
        elif (error := future.exception()) is not None:
            run.error = error
        else:
            run.result = future.result()
        run.returned = True
        if self._waiting_for is run:
            self._waiting_for = None
            self._wake_up()
        else:  # left to its thread (never given up on): settle it here
            result, run.result = run.result, None
            if inspect.isawaitable(result):
                _never_awaited(result)  # the chain has ended
                run.error = asyncio.CancelledError()
            self._settle(run)

    def _settle(self, run: Run) -> None:
        """Count the attempt or schedule its retry; finish the chain if it
        is being cancelled."""
        if run is not self._run:
            return
        self._run = None
        wait = self._runner.settle(run)
        if self.state is not RUNNING:
            self._finish()
        elif wait is not None:
            self.tasks._put_back(run.task)
            self.state = WAITING
            self._retry = asyncio.get_running_loop().call_later(wait, self._retry_now)

    def _retry_now(self) -> None:
        self._retry = None
        self.state = RUNNING
        self._wake_up()

    def ended(self) -> "asyncio.Future[None]":
        """A future of the caller's own, resolved once the chain is DONE, or
        once `cancel` has left it to a worker thread that cannot be stopped.
        Each waiter has its own: cancelling one's wait (the server cancelling
        the request's call) does not end another's (shutdown's grace)."""
        future = asyncio.get_running_loop().create_future()
        if self._ended is None:
            self._ended = [future]
        else:
            self._ended.append(future)
        return future

    def unwinding(self) -> bool:
        """Whether its cancelled ``async`` task is still unwinding."""
        run = self._run
        return self.state is CANCELLING and run is not None and not run.in_thread

    def cancel(self, reason: Reason) -> None:
        """Start no further task: drop the rest, cancel the running one."""
        was = self.state
        if was in (CANCELLING, DONE):
            return
        self.state = CANCELLING
        if self._retry is not None:
            self._retry.cancel()
            self._retry = None
        self._runner.abandon(self.tasks._close(), reason)
        run = self._run
        if run is not None and run.timer is not None:
            run.timer.cancel()  # the first cause wins: no timeout from now on
        if was is QUEUED:
            self._finish(held_slot=False)
        elif run is None:  # waiting to retry, or not begun: the driver ends it
            self._wake_up()
        elif run.in_thread:
            run.cancelled_for = reason
            assert run.job is not None
            if not run.job.cancel():  # a thread has it: it cannot be stopped
                self._runner.leave_running_in_thread(run)
                self._waiting_for = None
                self._wake_up()
                self._resolve_ended()
            else:
                run.in_thread = False  # and never will be
        else:
            run.cancelled_for = reason
            self.interrupt(run)

    def interrupt(self, run: Run) -> None:
        """Cancel the running ``async`` attempt ``run``."""
        assert run is self._run
        assert self._host is not None
        self._host.cancel()

    def give_up(self) -> None:
        """Stop waiting for a cancelled ``async`` task that is still unwinding:
        count it dropped; its coroutine goes on in a Task of its own."""
        run = self._run
        if run is not None and self.unwinding():
            run.abandoned = True
            self.interrupt(run)  # the driver hands the coroutine over
            self._settle(run)

    def _finish(self, held_slot: bool = True) -> None:
        self.state = DONE
        self._runner.release(self, held_slot)
        if self._ended is not None:
            self._resolve_ended()
        if self._wake is not None:
            self._wake_up()

    def _resolve_ended(self) -> None:
        for ended in self._ended or ():
            if not ended.done():
                ended.set_result(None)

    async def _sleep(self) -> None:
        """Wait until `_wake_up`."""
        wake = self._wake = asyncio.get_running_loop().create_future()
        try:
            await wake
        finally:
            self._wake = None

    def _wake_up(self) -> None:
        wake = self._wake
        if wake is not None and not wake.done():
            wake.set_result(None)


# What a task's first step gave `drive`: its steps, what it yielded (or
# _ENDED), and what it raised.
_FirstStep = tuple[Any, Any, BaseException | None]
_ENDED = object()
_UNSTARTED = object()  # no step taken yet whose yield is to be handed up


def _never_awaited(awaitable: Any) -> None:
    """Close a coroutine that will not be awaited (no "never awaited" warning)."""
    if inspect.iscoroutine(awaitable):
        awaitable.close()


def _eager_task(coro: Coroutine[Any, Any, None]) -> None:
    """Start a Task for ``coro`` in an empty context, eagerly: its first
    step runs now, in the caller's step, as the Task's."""
    loop = asyncio.get_running_loop()
    context = contextvars.Context()
    if sys.version_info >= (3, 12):
        asyncio.Task(coro, loop=loop, context=context, eager_start=True)
        return
    # Python 3.11 has no eager start: take the first step here, with the
    # Task made beforehand as the current one, and let the Task go on from
    # it (measured: the request's call no longer waits two loop turns).
    steps = _eagerly(coro)
    task = asyncio.Task(steps, context=context)
    caller = asyncio.current_task(loop)
    assert caller is not None  # the request's call runs in a Task
    _leave_task(loop, caller)
    _enter_task(loop, task)
    try:
        context.run(steps.send, None)  # the first step, to its first yield
    finally:
        _leave_task(loop, task)
        _enter_task(loop, caller)


@types.coroutine
def _eagerly(coro: Coroutine[Any, Any, None]) -> Generator[Any, Any, None]:
    """The coroutine of a Task that `_eager_task` starts (3.11): ``coro``'s
    first step, taken as it starts; then it hands the Task what that step
    yielded, and passes every later step on to ``coro``."""
    try:
        yielded = coro.send(None)
    except StopIteration:
        yielded = _ENDED
    thrown: BaseException | None = None
    try:
        yield  # the Task's first step resumes from here
    except asyncio.CancelledError as error:  # cancelled before its first step
        thrown = error
    if yielded is _ENDED:  # nothing left to run; a late cancel has nothing to end
        return
    value = None
    # As a Task does with a cancel made before it waits: cancel what the
    # first step awaits, with the cancel's message; if that cannot be,
    # throw the cancel in.
    if thrown is not None and yielded is not None and yielded.cancel(*thrown.args):
        thrown = None
    while True:
        if thrown is None:
            try:
                value = yield yielded
            except BaseException as error:
                thrown = error
        try:
            if thrown is None:
                yielded = coro.send(value)
            else:
                passing, thrown = thrown, None
                yielded = coro.throw(passing)
        except StopIteration:
            return


def _cancel_pending(task: "asyncio.Task[Any] | None") -> bool:
    """Whether a cancel request awaits delivery to ``task``: one made by the
    code of its current step (one made while it waits is delivered at once)."""
    return getattr(task, "_must_cancel", False)


def _iterator(awaitable: Any) -> Any:
    """What to step through to await ``awaitable``."""
    if type(awaitable) is types.CoroutineType or type(awaitable) is types.GeneratorType:
        return awaitable
    return awaitable.__await__()


@types.coroutine
def _step_through(run: Run, it: Any, yielded: Any) -> Generator[Any, Any, None]:
    """Drive ``it`` to its end in ``run``'s context, step by step, in the
    chain's Task: what it yields goes to the Task, what the Task sends or
    throws goes to it; ``yielded``, what its first step yielded, if that was
    taken already. Records what it raised."""
    run_in = run.context.run
    value: Any = None
    thrown: BaseException | None = None
    while True:
        if yielded is _UNSTARTED:
            try:
                if thrown is None:
                    yielded = run_in(it.send, value)
                else:
                    yielded = run_in(it.throw, thrown)
                    thrown = None
            except StopIteration:
                break
            except BaseException as error:
                run.error = error
                break
        try:
            value = yield yielded
        except BaseException as error:  # GeneratorExit too: it closes the task
            thrown, value = error, None
        yielded = _UNSTARTED
        if run.abandoned:
            # Counted dropped when it was given up on: let it go on alone.
            asyncio.Task(_go_on(it, value, thrown), context=run.context)
            return
    # No cycle: the error's frames lead back to this one through f_back.
    thrown = value = None


async def _go_on(it: Any, value: Any, thrown: BaseException | None) -> None:
    """The rest of an abandoned task, in a Task of its own; what it raises
    is not reported again."""
    with contextlib.suppress(BaseException):
        await _resume(it, value, thrown)


@types.coroutine
def _resume(
    it: Any, value: Any, thrown: BaseException | None
) -> Generator[Any, Any, None]:
    while True:
        try:
            if thrown is None:
                yielded = it.send(value)
            else:
                yielded, thrown = it.throw(thrown), None
        except StopIteration:
            return
        try:
            value = yield yielded
        except BaseException as error:
            thrown = error
