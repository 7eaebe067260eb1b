"""Running requests' task chains: inline or detached, bounded, timed, logged."""

import asyncio
import inspect
import logging
from collections import deque
from collections.abc import Awaitable, Callable, Generator
from types import CoroutineType
from typing import Any

from asgiref.sync import sync_to_async

from ._stats import Ledger, Outcome
from ._tasks import BackgroundTasks, TaskInfo, _Task

logger = logging.getLogger("asgi_bgtasks")

TASK_FAILED = "background task %s failed"
TASK_TIMED_OUT = "background task %s timed out after %s s and was cancelled"
TASK_UNFINISHED = "background task %s did not finish: cancelled while %s"
TASKS_DROPPED = "dropped %d background task(s) because %s: %s"
DRAINING = "shutdown: waiting up to %s s for %d unfinished background task(s)"
ON_ERROR_FAILED = "on_error raised while handling background task %s"

ErrorHandler = Callable[[TaskInfo, BaseException], None]


class TaskRunner:
    """Runs task chains, at most ``max_concurrency`` at once, in FIFO order.

    A chain is one request's `BackgroundTasks`, run sequentially. Inline
    chains run in the caller's coroutine; detached ones in worker tasks owned
    here. Both wait in one queue for a free slot.
    """

    def __init__(
        self,
        ledger: Ledger,
        *,
        max_concurrency: int,
        task_timeout: float | None,
        on_error: ErrorHandler | None,
    ) -> None:
        self._ledger = ledger
        self._limit = max_concurrency
        self._timeout = task_timeout
        self._on_error = on_error
        self._active = 0  # chains holding a slot; < limit only if queue is empty
        self._queue: deque[BackgroundTasks | asyncio.Future[None]] = deque()
        self._workers: set[asyncio.Task[None]] = set()
        self.closing = False

    def submit(self, tasks: BackgroundTasks) -> None:
        """Run ``tasks`` detached: return at once, the chain runs in a worker."""
        if self._active < self._limit:
            self._active += 1
            self._spawn(tasks)
        else:
            self._queue.append(tasks)

    def run(self, tasks: BackgroundTasks) -> Awaitable[None]:
        """Run ``tasks`` inline: await the result until the chain has ended."""
        if self._active < self._limit:
            self._active += 1
            return self._run_chain(tasks)
        return self._run_in_turn(tasks)

    async def _run_in_turn(self, tasks: BackgroundTasks) -> None:
        turn = asyncio.get_running_loop().create_future()
        self._queue.append(turn)
        try:
            await turn
        except asyncio.CancelledError:
            if turn.done() and not turn.cancelled():
                self._release()  # the slot was ours already
            self.abandon(tasks)
            raise
        await self._run_chain(tasks)

    def drop(self, tasks: BackgroundTasks, reason: str) -> None:
        """Never run ``tasks``: count them and say why in one WARNING."""
        dropped = tasks._close()
        self._ledger.drop(len(dropped))
        names = ", ".join(task.name for task in dropped)
        logger.warning(TASKS_DROPPED, len(dropped), reason, names)

    def abandon(self, tasks: BackgroundTasks) -> None:
        """Drop the tasks of a cancelled chain, one ERROR each."""
        dropped = tasks._close()
        self._ledger.drop(len(dropped))
        for task in dropped:
            logger.error(TASK_UNFINISHED, task.name, "pending")

    async def shutdown(self, timeout: float) -> None:
        """Stop taking detached work; wait for all tasks, then cancel the rest."""
        self.closing = True
        unfinished = self._ledger.unfinished
        if unfinished:
            logger.info(DRAINING, timeout, unfinished)
        try:
            await asyncio.wait_for(self._ledger.join(), timeout)
        except asyncio.TimeoutError:
            queued = [item for item in self._queue if isinstance(item, BackgroundTasks)]
            for tasks in queued:
                self._queue.remove(tasks)
                self.abandon(tasks)
            workers = list(self._workers)
            for worker in workers:
                worker.cancel()
            await asyncio.gather(*workers, return_exceptions=True)

    def _spawn(self, tasks: BackgroundTasks) -> None:
        worker = asyncio.get_running_loop().create_task(
            self._run_chain(tasks, detached=True)
        )
        self._workers.add(worker)
        worker.add_done_callback(self._workers.discard)

    def _release(self) -> None:
        """Hand our slot to the next chain in the queue, or free it."""
        while self._queue:
            item = self._queue.popleft()
            if isinstance(item, BackgroundTasks):
                self._spawn(item)
                return
            if not item.done():
                item.set_result(None)
                return
        self._active -= 1

    async def _run_chain(self, tasks: BackgroundTasks, detached: bool = False) -> None:
        """Run the chain's tasks one by one, then give up its slot.

        A detached worker first takes on the chains queued behind it, if any:
        cheaper than a new asyncio task for each.
        """
        ledger = self._ledger
        try:
            while True:
                while (task := tasks._take_next()) is not None:
                    ledger.start()
                    try:
                        if self._timeout is None:
                            error = await _drive(task)
                            outcome: Outcome = (
                                "succeeded" if error is None else "failed"
                            )
                        else:
                            outcome, error = await self._within_timeout(task)
                    except asyncio.CancelledError:
                        ledger.finish("dropped")
                        logger.error(TASK_UNFINISHED, task.name, "running")
                        self.abandon(tasks)
                        raise
                    ledger.finish(outcome)
                    if error is not None:
                        self._report(task, outcome, error)
                queue = self._queue
                if not (detached and queue and type(queue[0]) is BackgroundTasks):
                    break
                tasks = queue.popleft()  # type: ignore[assignment]
        finally:
            self._release()

    async def _within_timeout(
        self, task: _Task
    ) -> tuple[Outcome, BaseException | None]:
        """Run ``task`` as an asyncio task of its own, which the chain can leave
        behind: a blocking function's thread cannot be stopped, it ends
        unwatched."""
        call = asyncio.ensure_future(_drive(task))
        try:
            done, _ = await asyncio.wait((call,), timeout=self._timeout)
        except asyncio.CancelledError:
            call.cancel()
            raise
        if not done:
            call.cancel()
            return "timed_out", asyncio.TimeoutError()
        error = asyncio.CancelledError() if call.cancelled() else call.result()
        return ("succeeded", None) if error is None else ("failed", error)

    def _report(self, task: _Task, outcome: Outcome, error: BaseException) -> None:
        if outcome == "timed_out":
            logger.error(TASK_TIMED_OUT, task.name, self._timeout)
        else:
            logger.error(TASK_FAILED, task.name, exc_info=error)
        if self._on_error is not None:
            try:
                self._on_error(task.info, error)
            except Exception:
                logger.exception(ON_ERROR_FAILED, task.name)


class _Pass:
    """Hands what a driven coroutine yields on to the task that drives it."""

    __slots__ = ("value",)

    def __init__(self, value: Any) -> None:
        self.value = value

    def __await__(self) -> Generator[Any, Any, Any]:
        return (yield self.value)


async def _drive(task: _Task) -> BaseException | None:
    """Run ``task`` to its end inside its context, in the current asyncio task.

    Returns what the task raised instead of raising it, so KeyboardInterrupt
    or SystemExit from a task cannot stop the event loop. Cheaper than an
    asyncio task of its own: nothing to schedule, no extra loop turns. A
    CancelledError that comes back out after we passed one in is the current
    task's cancellation and propagates; one the task raised on its own is its
    failure.
    """
    context = task.context
    try:
        if task.is_async_def:
            # Calling an async def runs none of its code: no context needed.
            coro = task.func(*task.args, **task.kwargs)
        elif task.is_async:
            coro = context.run(task.func, *task.args, **task.kwargs)
            if type(coro) is not CoroutineType:
                coro = _await(coro)  # an awaitable other than a coroutine
        else:
            coro = _call_blocking(task)
    except BaseException as error:  # bad arguments, or an async callable failing
        return error
    value: Any = None
    thrown: BaseException | None = None
    passed_cancel = False
    while True:
        try:
            if thrown is None:
                yielded = context.run(coro.send, value)
            else:
                yielded = context.run(coro.throw, thrown)
        except StopIteration:
            return None
        except asyncio.CancelledError as cancel:
            if passed_cancel:
                raise
            return cancel
        except BaseException as error:
            return error
        try:
            value, thrown = await _Pass(yielded), None
        except BaseException as error:  # cancellation, or a bad yield
            value, thrown = None, error
            passed_cancel = passed_cancel or isinstance(error, asyncio.CancelledError)


async def _await(awaitable: Awaitable[Any]) -> None:
    await awaitable


async def _call_blocking(task: _Task) -> None:
    """Call a plain function in a worker thread; await what it may return."""
    blocking = sync_to_async(task.func, thread_sensitive=False)
    result = await blocking(*task.args, **task.kwargs)
    if inspect.isawaitable(result):
        await result  # a plain lambda that returns a coroutine
