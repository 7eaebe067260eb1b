"""Task accounting: every scheduled task ends in exactly one terminal counter."""

import asyncio
import threading
from dataclasses import dataclass
from typing import Literal

Outcome = Literal["succeeded", "failed", "timed_out", "dropped"]


@dataclass(frozen=True, slots=True)
class Stats:
    """An immutable snapshot of the middleware's task counters.

    ``scheduled == succeeded + failed + timed_out + dropped + running + pending``
    holds for every snapshot. ``pending`` counts tasks that have not started
    yet, including those whose response is still being sent.
    """

    scheduled: int
    succeeded: int
    failed: int
    timed_out: int
    dropped: int
    running: int
    pending: int


class Ledger:
    """The live counters behind `Stats`, and waiting until they settle.

    ``scheduled`` may grow from any thread (``add_task`` in a sync view) and is
    changed under ``lock``; everything else changes on the event loop only.
    """

    __slots__ = ("_idle_waiters", "_settled", "lock", "running", "scheduled")

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.scheduled = 0
        self.running = 0
        self._settled: dict[Outcome, int] = dict.fromkeys(
            ("succeeded", "failed", "timed_out", "dropped"), 0
        )
        self._idle_waiters: list[asyncio.Future[None]] = []

    @property
    def unfinished(self) -> int:
        """Tasks scheduled that have not ended yet: running or pending."""
        return self.scheduled - sum(self._settled.values())

    @property
    def pending(self) -> int:
        """Tasks scheduled that have neither started nor been dropped."""
        return self.unfinished - self.running

    def snapshot(self) -> Stats:
        """Read every counter at once."""
        scheduled, running, settled = self.scheduled, self.running, self._settled
        pending = scheduled - running - sum(settled.values())
        return Stats(
            scheduled=scheduled,
            succeeded=settled["succeeded"],
            failed=settled["failed"],
            timed_out=settled["timed_out"],
            dropped=settled["dropped"],
            running=running,
            pending=pending,
        )

    def start(self) -> None:
        """One pending task starts running."""
        self.running += 1

    def finish(self, outcome: Outcome) -> None:
        """One running task ends with ``outcome``."""
        self.running -= 1
        self._settled[outcome] += 1
        self._wake_if_idle()

    def drop(self, count: int) -> None:
        """``count`` pending tasks will never run."""
        self._settled["dropped"] += count
        self._wake_if_idle()

    async def join(self) -> None:
        """Wait until every task scheduled so far has ended."""
        while self.unfinished:
            waiter = asyncio.get_running_loop().create_future()
            self._idle_waiters.append(waiter)
            await waiter

    def _wake_if_idle(self) -> None:
        if self._idle_waiters and not self.unfinished:
            waiters, self._idle_waiters = self._idle_waiters, []
            for waiter in waiters:
                if not waiter.done():
                    waiter.set_result(None)
