"""Running chains: slots, the queue, shutdown, and what each outcome logs."""

import asyncio
import logging
import traceback
from collections import Counter, deque
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

from ._chain import _CALLBACKS, QUEUED, UNWIND_GRACE, Chain, Reason, Run, now
from ._observe import Observer, end, observers_found
from ._stats import Ledger, Outcome
from ._tasks import BackgroundTasks, DroppedTask, DropReason, TaskInfo, _Task

logger = logging.getLogger("asgi_bgtasks")

TASK_FAILED = "background task %s failed"
TASK_FAILED_ATTEMPTS = "background task %s failed after %d attempts"
TASK_RETRYING = "background task %s attempt %d failed (%s); retrying in %g s"
TASK_TIMED_OUT = "background task %s timed out after %s s and was cancelled"
TASK_TIMED_OUT_GOES_ON = (
    "background task %s timed out after %s s and had not ended %s s later: "
    "it goes on on its own, and its request's next task starts"
)
TASK_TIMED_OUT_IN_THREAD = (
    "background task %s timed out after %s s; it runs in a worker thread, "
    "which cannot be stopped: its request's next task waits %s s more for it"
)
TASK_TIMED_OUT_THREAD_RETURNED = (
    "background task %s timed out after %s s; its worker thread has returned"
)
TASK_UNFINISHED = "background task %s did not finish: cancelled while %s"
TASK_HANDED_OVER = (
    "background task %s did not finish: cancelled while %s; handed over to on_drop"
)
TASKS_UNSTARTED = (
    "shutdown: %d background task(s) %s did not start: dropped while pending"
)
TASKS_UNSTARTED_HANDED_OVER = (
    "shutdown: %d background task(s) %s did not start: dropped while pending; "
    "handed over to on_drop"
)
TASK_IN_THREAD = (
    "background task %s did not finish: running in a worker thread, which "
    "cannot be stopped; it is counted when its thread returns"
)
TASKS_NOT_STARTED = (
    "%d background task(s) %s could not start: the event loop's task factory "
    "raised; fix the factory (asyncio calls it as factory(loop, coro, "
    "context=context))"
)
TASKS_DROPPED = "dropped %d background task(s) because %s: %s"
DRAINING = "shutdown: waiting up to %s s for %d unfinished background task(s)"
ON_ERROR_FAILED = "on_error raised while handling background task %s"
ON_DROP_FAILED = "on_drop raised while handing over background task %s"
ON_DROP_FAILED_MORE = (
    "shutdown: on_drop raised for %d more background task(s) %s (the first "
    "one's traceback is logged above)"
)
ON_SETTLE_FAILED = "the settle hook of background task %s raised"

# A task callable's method called, like ``on_drop``, with its `DroppedTask`:
# how an integration (Django's result store) learns that its task was dropped.
DROP_HOOK = "_asgi_bgtasks_dropped"
# A task callable's method called as each attempt is settled, with its outcome
# and whether it will be retried: how an integration tells a failure that
# ends the task from one that is followed by another attempt.
SETTLE_HOOK = "_asgi_bgtasks_settled"

ErrorHandler = Callable[[TaskInfo, BaseException], None]
DropHandler = Callable[[DroppedTask], None]


class TaskRunner:
    """Runs chains, at most ``max_concurrency`` at once, in FIFO order.

    Inline and detached chains are the same but for who waits: an inline
    chain's request call awaits it. Every chain that was handed over and is
    not done is known here, so shutdown can end them all.
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
        # During a shutdown: the tasks it dropped before they started, by
        # name and whether on_drop took them, and on_drop's failures past
        # the first, by name; logged once at its end.
        self._unstarted: Counter[tuple[str, bool]] | None = None
        self._hook_failures: Counter[str] = Counter()
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
        """Run ``tasks`` detached: now or when a slot frees up. Their
        unstarted tasks count toward ``max_pending`` until they start."""
        self._watch(tasks)
        tasks._count_pending()
        if self._active < self._limit:
            self._active += 1
            Chain(self, tasks).advance(first_only=True)
        else:
            self._queue.append(tasks)

    def run(self, tasks: BackgroundTasks) -> Chain:
        """Run ``tasks`` inline: now, as far as they go at once, or when a
        slot frees up; the caller awaits the chain unless it is done."""
        self._watch(tasks)
        chain = Chain(self, tasks)
        if self._active < self._limit:
            self._active += 1
            chain.advance()
        else:
            chain.state = QUEUED
            self.register(chain)
            self._queue.append(chain)
        return chain

    async def run_to_end(self, tasks: BackgroundTasks) -> None:
        """Run ``tasks`` inline and wait until they have ended."""
        await self.run(tasks).ended()

    def _watch(self, tasks: BackgroundTasks) -> None:
        """Decide, as its request hands ``tasks`` over, which observers
        watch them (`BackgroundTasks._watched`), once for all its tasks;
        their wait runs from when its response ended (now, if unknown: a
        websocket's)."""
        if not self.observers:
            return
        watching = [observer for observer in self.observers if observer.active()]
        if watching:
            ended = now() if tasks._watched is None else tasks._watched[0]
            tasks._watched = (ended, watching)
        else:
            tasks._watched = None

    def register(self, chain: Chain) -> None:
        """``chain`` may outlast the call that started it: shutdown must
        find it. (Only then: a chain whose tasks end as they start costs no
        registry; measured, callgrind, 3.13: 2,100 instructions, about
        0.1 µs a request.)"""
        self._chains[chain] = None

    def release(self, chain: Chain, held_slot: bool) -> None:
        """``chain`` is done: hand its slot to what waits next in the queue,
        a loop turn later (a long queue of tasks that end at once must not
        nest one chain's start in another's end)."""
        self._chains.pop(chain, None)
        if not held_slot:
            self._queue.remove(chain)
        elif self._queue and not self.expired:
            following = self._queue.popleft()
            if isinstance(following, Chain):
                following.state = "running"
            else:
                following = Chain(self, following)
                self.register(following)  # shutdown must find it before it starts
            asyncio.get_running_loop().call_soon(following.advance, context=_CALLBACKS)
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
        The tasks it dropped before they started are logged at its end, one
        record per function.
        """
        self.accepting = False
        self.ledger.release_holds()
        unfinished = self.ledger.unfinished
        self._unstarted = Counter()
        try:
            if unfinished:  # else nothing to wait for, whatever the timeout
                logger.info(DRAINING, timeout, unfinished)
                await self._drain(timeout)
        finally:
            unstarted, self._unstarted = self._unstarted, None
            self._log_unstarted(unstarted)
            failures, self._hook_failures = self._hook_failures, Counter()
            for name, count in failures.items():
                if count > 1:
                    logger.error(
                        ON_DROP_FAILED_MORE, count - 1, name, extra={"task": name}
                    )
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
        waiting = [w for w in self._queue if not isinstance(w, Chain)]
        if waiting:
            self._queue = deque(w for w in self._queue if isinstance(w, Chain))
            for tasks in waiting:
                self.abandon(tasks._close(), "shutdown")

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
        """Never run ``tasks`` (shutdown, or a cancelled call). During a
        shutdown they are logged once at its end, by function; else one
        record each: ERROR, or WARNING if ``on_drop`` took it."""
        if not tasks:
            return
        self.ledger.drop([task.epoch for task in tasks])
        unstarted = self._unstarted
        for task in tasks:
            taken = self._hand_over(task, reason)
            if unstarted is not None:
                unstarted[task.name, taken] += 1
            elif taken:
                logger.warning(
                    TASK_HANDED_OVER,
                    task.name,
                    "pending",
                    extra=_about(task, "dropped"),
                )
            else:
                logger.error(
                    TASK_UNFINISHED, task.name, "pending", extra=_about(task, "dropped")
                )
            task.release()

    def _log_unstarted(self, unstarted: "Counter[tuple[str, bool]]") -> None:
        for (name, taken), count in unstarted.items():
            fields = {"task": name, "outcome": "dropped", "count": count}
            if taken:
                logger.warning(TASKS_UNSTARTED_HANDED_OVER, count, name, extra=fields)
            else:
                logger.error(TASKS_UNSTARTED, count, name, extra=fields)

    def not_started(
        self, taken: _Task, rest: list[_Task], error: BaseException
    ) -> None:
        """No Task could be made for ``taken`` (counted running) nor, then,
        for ``rest``: drop them all, with ``error`` logged once."""
        tasks = [taken, *rest]
        self.ledger.running -= 1
        self.ledger.drop([task.epoch for task in tasks])
        names = sorted({task.name for task in tasks})
        logger.error(
            TASKS_NOT_STARTED,
            len(tasks),
            ", ".join(names),
            exc_info=error,
            extra={"tasks": names, "outcome": "dropped"},
        )
        for task in tasks:
            self._hand_over(task, "not_started")
            task.release()

    def _hand_over(self, task: _Task, reason: DropReason) -> bool:
        """Give a dropped task to ``on_drop``, to persist or re-enqueue, and
        to its callable's own `DROP_HOOK`, if it has one; True if
        ``on_drop`` took it (returned without raising)."""
        taken = False
        for hook in (self._on_drop, getattr(task.func, DROP_HOOK, None)):
            if hook is not None:
                try:
                    hook(task.dropped(reason))
                except Exception:
                    self._hook_failed(task)
                else:
                    taken = taken or hook is self._on_drop
        return taken

    def _hook_failed(self, task: _Task) -> None:
        """A drop hook raised: logged with its traceback; during a shutdown
        only the first time per function, the rest counted at its end (the
        log stays within the bound whatever the backlog)."""
        if self._unstarted is not None:
            self._hook_failures[task.name] += 1
            if self._hook_failures[task.name] > 1:
                return
        logger.exception(ON_DROP_FAILED, task.name, extra=_about(task))

    def thread_past_timeout(self, run: Run) -> None:
        """``run``'s thread is past its timeout and cannot be stopped."""
        logger.warning(
            TASK_TIMED_OUT_IN_THREAD,
            run.task.name,
            self.timeout_of(run.task),
            UNWIND_GRACE,
            extra=_about(run.task, run=run),
        )

    def thread_returned_late(self, run: Run) -> None:
        """The thread of a task counted timed out has returned at last."""
        logger.warning(
            TASK_TIMED_OUT_THREAD_RETURNED,
            run.task.name,
            self.timeout_of(run.task),
            extra={"task": run.task.name, "outcome": "timed_out"},
        )
        run.task.release()

    def leave_running_in_thread(self, run: Run) -> None:
        """``run`` cannot be cancelled: it counts as running until it returns."""
        logger.error(TASK_IN_THREAD, run.task.name, extra=_about(run.task, run=run))

    def settle(self, run: Run) -> float | None:
        """Count a task that ran in its outcome, and report what went wrong;
        or, if it is to be retried, return the seconds to wait first.

        The one place where a task that started gets its terminal state
        (one that never started is counted `dropped` by `abandon`, `drop`
        or `not_started`).
        """
        if run.timer is not None:
            run.timer.cancel()
        outcome = run.outcome()
        if run.observed:
            self._tell_observers(run, outcome)
        wait = None if outcome != "failed" else self._retry_wait(run)
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
                if not (run.abandoned and run.in_thread):  # else its thread
                    run.task.release()  # has it still: released as it returns
        if run.error is not None:
            _clear_frames(run.error)
            run.error = None
        # No cycle: a thread's job keeps its done callback, which holds the
        # run until it has run.
        run.worker = None
        return wait

    def _tell_observers(self, run: Run, outcome: Outcome) -> None:
        """The observers of ``run`` learn how it ended."""
        error = TimeoutError() if outcome == "timed_out" else run.error
        if outcome == "dropped":
            error = None  # cancelled by us: not the task's failure
        duration = now() - run.started
        ends, run.observed = run.observed, ()
        end(ends, run.task.name, outcome, error, duration)

    def _retry_wait(self, run: Run) -> float | None:
        """A task that failed on its own may be retried, unless it is being
        cancelled or the shutdown deadline has passed."""
        assert run.error is not None
        allowed = run.cancelled_for is None and not self.expired
        return (
            run.task.options.retry_wait(run.task.attempt, run.error)
            if allowed
            else None
        )

    def _report(self, run: Run, outcome: Outcome) -> None:
        task = run.task
        about = _about(task, outcome, run)
        if outcome == "dropped":
            unwinding_error = run.error  # what its clean-up raised, if anything
            if isinstance(unwinding_error, asyncio.CancelledError):
                unwinding_error = None
            assert run.cancelled_for is not None  # only the runner drops
            taken = self._hand_over(task, run.cancelled_for)
            logger.log(
                logging.WARNING if taken else logging.ERROR,
                TASK_HANDED_OVER if taken else TASK_UNFINISHED,
                task.name,
                "running",
                exc_info=unwinding_error,
                extra=about,
            )
            return
        if outcome == "timed_out":
            timeout = self.timeout_of(task)
            if run.abandoned:
                logger.error(
                    TASK_TIMED_OUT_GOES_ON,
                    task.name,
                    timeout,
                    UNWIND_GRACE,
                    extra=about,
                )
            elif run.in_thread:
                logger.error(
                    TASK_TIMED_OUT_THREAD_RETURNED, task.name, timeout, extra=about
                )
            else:
                logger.error(TASK_TIMED_OUT, task.name, timeout, extra=about)
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
        fields["duration"] = now() - run.started
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
