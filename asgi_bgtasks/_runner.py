"""Running chains: slots, the queue, shutdown, and what each outcome logs."""

import asyncio
import logging
import traceback
from collections import deque
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

from ._chain import QUEUED, Chain, Reason, Run
from ._observe import Observer, end, observers_found
from ._stats import Ledger, Outcome
from ._tasks import BackgroundTasks, DroppedTask, DropReason, TaskInfo, _Task

logger = logging.getLogger("asgi_bgtasks")

TASK_FAILED = "background task %s failed"
TASK_FAILED_ATTEMPTS = "background task %s failed after %d attempts"
TASK_RETRYING = "background task %s attempt %d failed (%s); retrying in %g s"
TASK_TIMED_OUT = "background task %s timed out after %s s and was cancelled"
TASK_TIMED_OUT_IN_THREAD = (
    "background task %s timed out after %s s; it runs in a worker thread, "
    "which cannot be stopped: its request's next task waits for it"
)
TASK_TIMED_OUT_THREAD_RETURNED = (
    "background task %s timed out after %s s; its worker thread has returned"
)
TASK_UNFINISHED = "background task %s did not finish: cancelled while %s"
TASK_IN_THREAD = (
    "background task %s did not finish: running in a worker thread, which "
    "cannot be stopped; it is counted when its thread returns"
)
TASKS_DROPPED = "dropped %d background task(s) because %s: %s"
DRAINING = "shutdown: waiting up to %s s for %d unfinished background task(s)"
ON_ERROR_FAILED = "on_error raised while handling background task %s"
ON_DROP_FAILED = "on_drop raised while handing over background task %s"
ON_SETTLE_FAILED = "the settle hook of background task %s raised"

# A task callable's method called, like ``on_drop``, with its `DroppedTask`:
# how an integration (Django's result store) learns that its task was dropped.
DROP_HOOK = "_asgi_bgtasks_dropped"
# A task callable's method called as each attempt is settled, with its outcome
# and whether it will be retried: how an integration tells a failure that
# ends the task from one that is followed by another attempt.
SETTLE_HOOK = "_asgi_bgtasks_settled"

# How long a cancelled task may take to unwind before it is given up on.
UNWIND_GRACE = 0.5

ErrorHandler = Callable[[TaskInfo, BaseException], None]
DropHandler = Callable[[DroppedTask], None]


class TaskRunner:
    """Runs chains, at most ``max_concurrency`` at once, in FIFO order.

    Inline and detached chains are the same, each run in a Task of its own,
    but for who waits: an inline chain's request call awaits it. Every chain
    that was handed over and is not done is known here, so shutdown can end
    them all.
    """

    def __init__(
        self,
        ledger: Ledger,
        *,
        max_concurrency: int,
        max_threads: int,
        task_timeout: float | None,
        on_error: ErrorHandler | None,
        on_drop: DropHandler | None,
    ) -> None:
        self.ledger = ledger
        self.timeout = task_timeout
        self._limit = max_concurrency
        self._max_threads = max_threads
        self._pool: ThreadPoolExecutor | None = None
        self._on_error = on_error
        self._on_drop = on_drop
        self._active = 0  # chains holding a slot; < limit only if queue is empty
        # Waiting for a slot, in order: an inline chain (its request's call
        # awaits it), or a detached request's tasks, whose chain is made when
        # it gets its slot (136 bytes less per pending task).
        self._queue: deque[Chain | BackgroundTasks] = deque()
        self._chains: dict[Chain, None] = {}  # made, not done; in order
        self.accepting = True  # False from shutdown on: no detached work
        self._deadline: float | None = None  # the drain's, until it is done
        self._timed_out = False  # the drain ran out of time
        self.observers: list[Observer] = observers_found()

    def threads(self) -> ThreadPoolExecutor:
        """The pool for plain ``def`` tasks, created on first use."""
        if self._pool is None:
            self._pool = ThreadPoolExecutor(
                self._max_threads, thread_name_prefix="asgi_bgtasks"
            )
        return self._pool

    def timeout_of(self, task: _Task) -> float | None:
        """``task``'s own timeout, else the middleware's ``task_timeout``."""
        own = task.options.timeout
        return self.timeout if own is None else own

    @property
    def expired(self) -> bool:
        """Past the shutdown deadline: nothing starts. Once the drain ran
        out of time, and by the clock before it wakes up to it (a task that
        blocked the event loop past the deadline must not be followed by
        another; the clock alone would not do either: uvloop's timers can
        fire a millisecond before ``loop.time()`` reads the deadline)."""
        if self._timed_out:
            return True
        deadline = self._deadline
        return deadline is not None and asyncio.get_running_loop().time() >= deadline

    def reopen(self) -> None:
        """A new lifespan startup: take detached work again."""
        self.accepting = True
        self._deadline = None
        self._timed_out = False

    def submit(self, tasks: BackgroundTasks) -> None:
        """Run ``tasks`` detached: now or when a slot frees up."""
        self._watch(tasks)
        if self._active < self._limit:
            self._active += 1
            self._chain(tasks, inline=False).start_detached()
        else:
            tasks._join_queue()
            self._queue.append(tasks)

    def run(self, tasks: BackgroundTasks) -> Chain:
        """Run ``tasks`` inline: the caller starts the chain it returns
        (`Chain.start_inline`) and awaits it."""
        self._watch(tasks)
        chain = self._chain(tasks, inline=True)
        if self._active < self._limit:
            self._active += 1
        else:
            chain.state = QUEUED
            tasks._join_queue()
            self._queue.append(chain)
        return chain

    def _watch(self, tasks: BackgroundTasks) -> None:
        """Decide, as its request hands ``tasks`` over, which observers
        watch them (`BackgroundTasks._watched`), once for all its tasks."""
        if self.observers:
            watching = [observer for observer in self.observers if observer.active()]
            if watching:
                tasks._watched = (asyncio.get_running_loop().time(), watching)

    def _chain(self, tasks: BackgroundTasks, inline: bool) -> Chain:
        chain = Chain(self, tasks, inline)
        self._chains[chain] = None
        return chain

    def release(self, chain: Chain, held_slot: bool) -> None:
        """``chain`` is done: hand its slot to what waits next in the queue."""
        del self._chains[chain]
        if not held_slot:
            self._queue.remove(chain)
            chain.tasks._leave_queue()
        elif self._queue and not self.expired:
            following = self._queue.popleft()
            if isinstance(following, Chain):
                following.tasks._leave_queue()
                following.start()
            else:
                following._leave_queue()
                self._chain(following, inline=False).start_detached()
        else:
            self._active -= 1

    async def cancel_chains(self, chains: list[Chain], reason: Reason) -> None:
        """End ``chains``: drop what has not started, cancel what runs, and
        wait up to `UNWIND_GRACE` seconds for it to unwind."""
        for chain in chains:
            chain.cancel(reason)
        unwinding = [chain.ended() for chain in chains if chain.unwinding()]
        try:
            if unwinding:
                await asyncio.wait(unwinding, timeout=UNWIND_GRACE)
        finally:  # cancelled again meanwhile: give up on them at once
            for chain in chains:
                chain.give_up()

    # The deadline is not a wrapper's: shutdown acts at it (ASYNC109).
    async def shutdown(self, timeout: float) -> None:  # noqa: ASYNC109
        """Stop taking detached work; wait for all tasks, then end the rest.

        Returns at most `UNWIND_GRACE` seconds after ``timeout``, whatever the
        tasks do; from ``timeout`` on, no task starts. Then the thread pool
        is shut down (threads that cannot be stopped finish on their own).
        """
        self.accepting = False
        self.ledger.release_holds()
        unfinished = self.ledger.unfinished
        if unfinished:  # else nothing to wait for, whatever the timeout
            logger.info(DRAINING, timeout, unfinished)
            await self._drain(timeout)
        if self._pool is not None:
            self._pool.shutdown(wait=False)
            self._pool = None

    async def _drain(self, timeout: float) -> None:  # noqa: ASYNC109
        self._deadline = asyncio.get_running_loop().time() + timeout
        try:
            await asyncio.wait_for(self._drained(), timeout)
        except TimeoutError:
            self._timed_out = True
            self._drop_queued()
            await self.cancel_chains(list(self._chains), "shutdown")
        else:  # all done in time: a request ending later runs its tasks
            self._deadline = None

    def _drop_queued(self) -> None:
        """Past the deadline: the queued detached requests' tasks never start."""
        for waiting in [w for w in self._queue if not isinstance(w, Chain)]:
            self._queue.remove(waiting)
            waiting._leave_queue()
            self.abandon(waiting._close(), "shutdown")

    async def _drained(self) -> None:
        while self.ledger.unfinished:
            await self.ledger.join()

    def drop(self, tasks: list[_Task], reason: DropReason, why: str) -> None:
        """Never run ``tasks`` (their request failed): one WARNING for all."""
        self.ledger.drop([task.epoch for task in tasks])
        names = [task.name for task in tasks]
        logger.warning(
            TASKS_DROPPED,
            len(tasks),
            why,
            ", ".join(names),
            extra={"tasks": names, "outcome": "dropped"},
        )
        for task in tasks:
            self._hand_over(task, reason)
            task.release()

    def abandon(self, tasks: list[_Task], reason: Reason) -> None:
        """Never run ``tasks`` (shutdown, or a cancelled call): one ERROR each."""
        self.ledger.drop([task.epoch for task in tasks])
        for task in tasks:
            logger.error(
                TASK_UNFINISHED, task.name, "pending", extra=_about(task, "dropped")
            )
            self._hand_over(task, reason)
            task.release()

    def _hand_over(self, task: _Task, reason: DropReason) -> None:
        """Give a dropped task to ``on_drop``, to persist or re-enqueue, and
        to its callable's own `DROP_HOOK`, if it has one."""
        hooks = [self._on_drop, getattr(task.func, DROP_HOOK, None)]
        for hook in hooks:
            if hook is not None:
                try:
                    hook(task.dropped(reason))
                except Exception:
                    logger.exception(ON_DROP_FAILED, task.name, extra=_about(task))

    def expire(self, chain: Chain, run: Run) -> None:
        """``run``'s task is past its timeout: cancel it, unless a thread
        has it."""
        run.timed_out = True
        if not run.in_thread:
            chain.interrupt(run)
        elif run.job is not None and run.job.cancel():
            run.in_thread = False  # and never will be
        else:
            timeout = self.timeout_of(run.task)
            logger.warning(
                TASK_TIMED_OUT_IN_THREAD,
                run.task.name,
                timeout,
                extra=_about(run.task, run=run),
            )

    def leave_running_in_thread(self, run: Run) -> None:
        """``run`` cannot be cancelled: it counts as running until it returns."""
        logger.error(TASK_IN_THREAD, run.task.name, extra=_about(run.task, run=run))

    def settle(self, run: Run) -> float | None:
        """Count a task that ran in its outcome, and report what went wrong;
        or, if it is to be retried, return the seconds to wait first.

        The one place where a task that started gets its terminal state,
        but for a success on the quick path (`Chain._while_quick`), counted
        with the take of the next task under one lock.
        """
        if run.timer is not None:
            run.timer.cancel()
        outcome = run.outcome()
        if run.observed:
            self._tell_observers(run, outcome)
        wait = self._retry_wait(run, outcome)
        settled = getattr(run.task.func, SETTLE_HOOK, None)
        if settled is not None:
            try:
                settled(outcome, wait is not None)
            except Exception:
                logger.exception(
                    ON_SETTLE_FAILED, run.task.name, extra=_about(run.task)
                )
        if wait is not None:
            task, error = run.task, type(run.error).__name__
            logger.warning(
                TASK_RETRYING,
                task.name,
                task.attempt,
                error,
                wait,
                extra=_about(task, run=run),
            )
        else:
            self.ledger.finish(run.task.epoch, outcome)
            if outcome != "succeeded":
                self._report(run, outcome)
            run.task.release()
        if run.error is not None:
            _clear_frames(run.error)
            run.error = None
        run.job = None
        return wait

    def _tell_observers(self, run: Run, outcome: Outcome) -> None:
        """The observers of ``run`` learn how it ended."""
        error = TimeoutError() if outcome == "timed_out" else run.error
        if outcome == "dropped":
            error = None  # cancelled by us: not the task's failure
        duration = asyncio.get_running_loop().time() - run.started
        ends, run.observed = run.observed, []
        end(ends, run.task.name, outcome, error, duration)

    def _retry_wait(self, run: Run, outcome: Outcome) -> float | None:
        """A task that failed on its own may be retried, unless it is being
        cancelled or the shutdown deadline has passed."""
        if outcome != "failed" or run.cancelled_for is not None or self.expired:
            return None
        assert run.error is not None
        return run.task.options.retry_wait(run.task.attempt, run.error)

    def _report(self, run: Run, outcome: Outcome) -> None:
        task = run.task
        about = _about(task, outcome, run)
        if outcome == "dropped":
            unwinding_error = run.error  # what its clean-up raised, if anything
            if isinstance(unwinding_error, asyncio.CancelledError):
                unwinding_error = None
            logger.error(
                TASK_UNFINISHED,
                task.name,
                "running",
                exc_info=unwinding_error,
                extra=about,
            )
            assert run.cancelled_for is not None  # only the runner drops
            self._hand_over(task, run.cancelled_for)
            return
        if outcome == "timed_out":
            timed_out = (
                TASK_TIMED_OUT_THREAD_RETURNED if run.in_thread else TASK_TIMED_OUT
            )
            logger.error(timed_out, task.name, self.timeout_of(task), extra=about)
            error: BaseException = TimeoutError()
        else:
            assert run.error is not None
            error = run.error
            if task.attempt > 1:
                logger.error(
                    TASK_FAILED_ATTEMPTS,
                    task.name,
                    task.attempt,
                    exc_info=error,
                    extra=about,
                )
            else:
                logger.error(TASK_FAILED, task.name, exc_info=error, extra=about)
        if self._on_error is not None:
            try:
                self._on_error(task.info, error)
            except Exception:
                logger.exception(ON_ERROR_FAILED, task.name, extra=_about(task))


def _about(
    task: _Task, outcome: Outcome | None = None, run: Run | None = None
) -> dict[str, object]:
    """The structured fields of a log record about ``task``: its name and,
    where known, its outcome, its attempt and how long that attempt ran."""
    fields: dict[str, object] = {"task": task.name}
    if outcome is not None:
        fields["outcome"] = outcome
    if run is not None:
        fields["attempt"] = task.attempt
        fields["duration"] = asyncio.get_running_loop().time() - run.started
    elif task.attempt > 1:  # waiting to be retried: its last attempt
        fields["attempt"] = task.attempt - 1
    return fields


def _clear_frames(error: BaseException) -> None:
    """Let go of the locals of a reported task's finished frames.

    A traceback through ``asyncio.timeout``, a ``TaskGroup`` or an anyio scope
    holds a frame whose ``self`` refers back to the task's Task, which holds
    the exception: a cycle that would keep the task's arguments alive until
    the cyclic collector runs.
    """
    seen: set[int] = set()
    pending: list[BaseException | None] = [error]
    while pending:
        current = pending.pop()
        if current is None or id(current) in seen:
            continue
        seen.add(id(current))
        traceback.clear_frames(current.__traceback__)
        pending += [current.__cause__, current.__context__]
        if isinstance(current, BaseExceptionGroup):
            pending += current.exceptions
