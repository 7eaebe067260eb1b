"""An example served by a real server on 127.0.0.1, and its activity log.

Every example writes its tasks' activity to a JSON-lines file and sends its
mail to one shared SMTP sink; tests tell their own events apart by unique
e-mail addresses and by reading only what was written after they began.
"""

import contextlib
import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from examples.serve import Server, run_hypercorn

Event = dict[str, Any]


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
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            events = self.events_since(since)
            if sum(e["event"] == event for e in events) >= count:
                return events
            time.sleep(0.02)
        seen = self.events_since(since)
        raise TimeoutError(f"{event!r} x{count} not in the activity log: {seen}")

    def wait_for_output(self, text: str) -> str:
        """The server's output once it contains ``text`` (30 s cap)."""
        deadline = time.monotonic() + 30
        while text not in (output := self.server.output()):
            if time.monotonic() > deadline:
                raise TimeoutError(f"{text!r} not in the server output:\n{output}")
            time.sleep(0.02)
        return output


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
