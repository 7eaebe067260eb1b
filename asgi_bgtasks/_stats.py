"""Task accounting: every scheduled task ends in exactly one terminal counter."""

import asyncio
import threading
from collections import deque
from dataclasses import dataclass
from typing import Literal

Outcome = Literal["succeeded", "failed", "timed_out", "dropped"]


@dataclass(frozen=True, slots=True)
class Stats:
    """An immutable snapshot of the middleware's task counters.

    ``scheduled == succeeded + failed + timed_out + dropped + running + pending``
    holds for every snapshot. ``pending`` counts tasks that have not started
    yet, including those whose response is still being sent and those
    waiting to be retried. ``retried`` counts retries (attempts), not tasks.

    Attributes:
        scheduled: Tasks added with ``add_task`` since the middleware was made.
        succeeded: Tasks that returned (on their last attempt).
        failed: Tasks that raised on their last attempt.
        timed_out: Tasks cancelled by their timeout.
        dropped: Tasks that never ran to the end: a failed request's, or
            left at the shutdown deadline, or cancelled from outside, or
            that the event loop's task factory could not start.
        running: Tasks running now (a plain ``def`` one waiting for a pool
            thread included).
        pending: Tasks not started yet, or waiting to be retried.
        retried: Retries scheduled, one per failed attempt that is retried.
    """

    scheduled: int
    succeeded: int
    failed: int
    timed_out: int
    dropped: int
    running: int
    pending: int
    retried: int


class _Join:
    """One `join()` call: how many of the tasks it waits for are unfinished."""

    __slots__ = ("done", "epoch", "remaining")

    def __init__(self, epoch: int, remaining: int) -> None:
        self.epoch = epoch  # it waits for the tasks of this epoch and before
        self.remaining = remaining
        self.done = asyncio.get_running_loop().create_future()


class Ledger:
    """The live counters behind `Stats`, and waiting for tasks to end or
    for room in the backlog.

    The event loop's thread writes the counters alone, with no lock; what
    other threads add is counted apart, under ``lock``
    (``scheduled_by_threads``, ``queued_by_threads``, ``adding``). A
    snapshot taken in any thread is consistent without
    stopping the loop: it reads the counters in the order a task moves
    through them (ended, running, scheduled), and the loop moves a task
    out of one before it counts it in the next, so no figure is negative
    and the counts add up. Each task
    records the ``epoch`` it was scheduled in; every `join` that waits
    begins a new one, so it can wait for exactly the tasks scheduled before
    it. (Tasks of an epoch share one int object: no int of its own per task,
    32 bytes less per pending task.)
    """

    __slots__ = (
        "adding",
        "dropped",
        "epoch",
        "failed",
        "holds",
        "joins",
        "lock",
        "max_pending",
        "queued",
        "queued_by_threads",
        "retried",
        "running",
        "scheduled",
        "scheduled_by_threads",
        "succeeded",
        "timed_out",
    )

    def __init__(self, max_pending: int) -> None:
        self.max_pending = max_pending  # the bound of `room`
        # Tasks of chains waiting for a free slot: the sum of the two.
        self.queued = 0
        self.queued_by_threads = 0  # in inboxes (`BackgroundTasks`), under `lock`
        self.adding = 0  # threads adding a task now, under `lock`
        self.lock = threading.Lock()
        self.scheduled = 0  # by the loop's thread
        self.scheduled_by_threads = 0  # by others, under `lock`
        self.epoch = 0
        self.running = 0
        self.retried = 0
        self.succeeded = 0
        self.failed = 0
        self.timed_out = 0
        self.dropped = 0
        self.joins: list[_Join] = []
        self.holds: deque[asyncio.Future[None]] = deque()  # held requests

    def _settled(self) -> int:
        return self.succeeded + self.failed + self.timed_out + self.dropped

    def _scheduled(self) -> int:
        return self.scheduled + self.scheduled_by_threads

    @property
    def unfinished(self) -> int:
        """Tasks scheduled that have not ended yet: running or pending (read
        on the loop's thread)."""
        with self.lock:
            return self._scheduled() - self._settled()

    def snapshot(self) -> Stats:
        """Read every counter, in any thread: ended first, scheduled last
        (see the class docstring)."""
        succeeded, failed = self.succeeded, self.failed
        timed_out, dropped, retried = self.timed_out, self.dropped, self.retried
        running = self.running
        with self.lock:
            scheduled = self._scheduled()
        return Stats(
            scheduled=scheduled,
            succeeded=succeeded,
            failed=failed,
            timed_out=timed_out,
            dropped=dropped,
            running=running,
            pending=scheduled - running - succeeded - failed - timed_out - dropped,
            retried=retried,
        )

    def finish(self, epoch: int, outcome: Outcome) -> None:
        """A running task of ``epoch`` ended with ``outcome``: out of
        ``running`` first, then into its outcome's counter."""
        self.running -= 1
        if outcome == "succeeded":
            self.succeeded += 1
        elif outcome == "failed":
            self.failed += 1
        elif outcome == "timed_out":
            self.timed_out += 1
        else:
            self.dropped += 1
        if self.joins:
            self.ended(epoch)

    def drop(self, epochs: list[int]) -> None:
        """Pending tasks of ``epochs`` (one each) will never run."""
        self.dropped += len(epochs)
        if self.joins:
            for epoch in epochs:
                self.ended(epoch)

    def crowded(self) -> bool:
        """Whether a request that added tasks must wait for room (`room`)."""
        # The sum written out: this runs for every detached request.
        queued = self.queued + self.queued_by_threads
        return bool(self.holds) or queued >= self.max_pending

    async def room(self) -> None:
        """Backpressure: wait, behind requests held already, until fewer
        than ``max_pending`` tasks wait for a free slot."""
        hold = asyncio.get_running_loop().create_future()
        self.holds.append(hold)
        self.make_room()  # the queue may have moved since `crowded`
        try:
            await hold
        finally:
            if hold.cancelled() and hold in self.holds:
                self.holds.remove(hold)

    def make_room(self) -> None:
        """If the queue is below ``max_pending``, let every held request go
        (called when it may have shrunk). Their tasks join the queue as each
        request's call hands them over: at most one request per connection
        past the bound, and none waits on a call that lingers."""
        if self.queued + self.queued_by_threads < self.max_pending:
            self.release_holds()

    def release_holds(self) -> None:
        """Let every held request go."""
        while self.holds:
            hold = self.holds.popleft()
            if not hold.cancelled():  # its request was cancelled while held
                hold.set_result(None)

    async def join(self) -> None:
        """Wait until every task scheduled before this call has ended."""
        with self.lock:
            unfinished = self._scheduled() - self._settled()
            if not unfinished:
                return
            epoch = self.epoch
            self.epoch += 1  # tasks scheduled from now on are not waited for
        join = _Join(epoch, unfinished)
        self.joins.append(join)
        try:
            await join.done
        finally:
            self.joins.remove(join)

    def ended(self, epoch: int) -> None:
        """A task of ``epoch`` has ended; runs on the event loop, as every
        task's end does."""
        for join in self.joins:
            if epoch <= join.epoch:
                join.remaining -= 1
                if not join.remaining and not join.done.done():
                    join.done.set_result(None)
