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

    Every change happens under ``lock``: ``add_task`` may count a task from
    any thread, and a snapshot taken in any thread is consistent. Each task
    records the ``epoch`` it was scheduled in; every `join` that waits
    begins a new one, so it can wait for exactly the tasks scheduled before
    it. (Tasks of an epoch share one int object: no int of its own per task,
    32 bytes less per pending task.)
    """

    __slots__ = (
        "dropped",
        "epoch",
        "failed",
        "holds",
        "joins",
        "lock",
        "max_pending",
        "queued",
        "retried",
        "running",
        "scheduled",
        "succeeded",
        "timed_out",
    )

    def __init__(self, max_pending: int) -> None:
        self.max_pending = max_pending  # the bound of `room`
        self.queued = 0  # tasks of chains waiting for a free slot
        self.lock = threading.Lock()
        self.scheduled = 0
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

    @property
    def unfinished(self) -> int:
        """Tasks scheduled that have not ended yet: running or pending."""
        with self.lock:
            return self.scheduled - self._settled()

    def snapshot(self) -> Stats:
        """Read every counter at once."""
        with self.lock:
            return Stats(
                scheduled=self.scheduled,
                succeeded=self.succeeded,
                failed=self.failed,
                timed_out=self.timed_out,
                dropped=self.dropped,
                running=self.running,
                pending=self.scheduled - self.running - self._settled(),
                retried=self.retried,
            )

    def finish(self, epoch: int, outcome: Outcome) -> None:
        """A running task of ``epoch`` ended with ``outcome``."""
        # acquire/release, not `with`: 0.1 µs less per call (3.13); nothing
        # in between can raise.
        lock = self.lock
        lock.acquire()
        self.running -= 1
        if outcome == "succeeded":
            self.succeeded += 1
        elif outcome == "failed":
            self.failed += 1
        elif outcome == "timed_out":
            self.timed_out += 1
        else:
            self.dropped += 1
        lock.release()
        if self.joins:
            self.ended(epoch)

    def drop(self, epochs: list[int]) -> None:
        """Pending tasks of ``epochs`` (one each) will never run."""
        with self.lock:
            self.dropped += len(epochs)
        if self.joins:
            for epoch in epochs:
                self.ended(epoch)

    def crowded(self) -> bool:
        """Whether a request that added tasks must wait for room (`room`)."""
        return bool(self.holds) or self.queued >= self.max_pending

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
        if self.queued < self.max_pending:
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
            unfinished = self.scheduled - self._settled()
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
