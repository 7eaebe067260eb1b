"""An example served by a real server on 127.0.0.1, and its activity log.

Every example writes its tasks' activity to a JSON-lines file and sends its
mail to one shared SMTP sink; tests tell their own events apart by unique
e-mail addresses and by reading only what was written after they began.
"""

import contextlib
import json
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import httpx

from examples.serve import Server, run_hypercorn

Event = dict[str, Any]
T = TypeVar("T")


def until(probe: Callable[[], T], done: Callable[[T], bool], timeout: float = 30) -> T:
    """``probe()``'s value once ``done`` holds for it; polls every 20 ms.

    After ``timeout`` seconds, TimeoutError with the last value seen.
    """
    deadline = time.monotonic() + timeout
    while not done(value := probe()):
        if time.monotonic() > deadline:
            raise TimeoutError(f"not there within {timeout} s; last seen:\n{value}")
        time.sleep(0.02)
    return value


class Example:
    """One example app served by a real server, with its activity log."""

    def __init__(self, server: Server, activity: Path) -> None:
        self.server = server
        self.url = server.url
        self.activity = activity
        self.activity.touch()

    def mark(self) -> int:
        """A position in the activity log; see :meth:`events_since`."""
        return self.activity.stat().st_size

    def events_since(self, mark: int) -> list[Event]:
        with self.activity.open("rb") as log:
            log.seek(mark)
            return [json.loads(line) for line in log.read().splitlines()]

    def wait_for(self, event: str, since: int, count: int = 1) -> list[Event]:
        """Events since ``since`` once ``count`` of them are ``event`` (30 s cap)."""
        return until(
            lambda: self.events_since(since),
            lambda events: sum(e["event"] == event for e in events) >= count,
        )

    def wait_for_output(self, text: str) -> str:
        """The server's output once it contains ``text`` (30 s cap)."""
        return until(self.server.output, lambda output: text in output)

    def stats(self) -> dict[str, int]:
        """The middleware's counters, from the reliability app's ``/stats``."""
        counters: dict[str, int] = httpx.get(f"{self.url}/stats").json()
        return counters

    def settled_stats(self, scheduled: int, timeout: float = 30) -> dict[str, int]:
        """The counters once ``scheduled`` tasks exist and none runs or waits."""
        return until(
            self.stats,
            lambda now: (
                now["scheduled"] >= scheduled and now["running"] + now["pending"] == 0
            ),
            timeout,
        )


@contextlib.contextmanager
def reliability_app(
    folder: Path, gate_port: int = 0, **options: object
) -> Iterator[Example]:
    """``tests/apps/reliability.py`` under hypercorn, with middleware options."""
    activity = folder / "activity.jsonl"
    env = {
        "GATE_PORT": str(gate_port),
        "EXAMPLES_ACTIVITY": str(activity),
        **{f"BGT_{name.upper()}": str(value) for name, value in options.items()},
    }
    with run_hypercorn("tests.apps.reliability:served", env=env) as server:
        yield Example(server, activity)
