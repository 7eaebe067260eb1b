"""Faults under a real hypercorn: the server survives and every task is counted.

One server (tests/apps/reliability.py, detached, ``task_timeout=0.5``) takes
every fault in turn; after each, its stats must settle with the identity
intact and exactly the expected outcome counted.
"""

from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from served import Example, reliability_app

OUTCOMES = ("succeeded", "failed", "timed_out", "dropped")

# path, how the client behaves, which counters grow by how much
FAULTS: dict[str, tuple[str, str, dict[str, int]]] = {
    "task raises": ("/task-fault/raises", "reads", {"failed": 1}),
    "task hangs past task_timeout": ("/task-fault/hangs", "reads", {"timed_out": 1}),
    "task adds a task": ("/task-fault/adds-from-a-task", "reads", {"succeeded": 2}),
    "task blocks the loop": ("/task-fault/blocks-the-loop", "reads", {"succeeded": 1}),
    "task raises CancelledError": (
        "/task-fault/raises-cancelled-error",
        "reads",
        {"failed": 1},
    ),
    "task raises KeyboardInterrupt": (
        "/task-fault/raises-keyboard-interrupt",
        "reads",
        {"failed": 1},
    ),
    "app sends nothing": ("/response-fault/sends-nothing", "reads", {"dropped": 1}),
    "app sends a body without a start": (
        "/response-fault/body-without-start",
        "reads",
        {"dropped": 1},
    ),
    "app sends after the final message": (
        "/response-fault/sends-after-final",
        "reads",
        {"succeeded": 1},
    ),
    "client leaves mid-body, app raises": (
        "/response-fault/disconnect-then-raise",
        "leaves",
        {"dropped": 1},
    ),
    "client leaves mid-body, app returns": (
        "/response-fault/disconnect-then-return",
        "leaves",
        {"succeeded": 1},
    ),
    "client leaves after the final body": (
        "/soak?n=1&token=t",
        "reads",
        {"succeeded": 1},
    ),
}


@pytest.fixture(scope="module")
def faulty(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Example]:
    folder = tmp_path_factory.mktemp("faults")
    with reliability_app(folder, task_timeout=0.5) as app:
        yield app
        assert app.stats()["scheduled"] > 0
        app.server.process.terminate()
        assert app.server.process.wait(timeout=60) == 0  # never crashed


def settled(app: Example, scheduled_at_least: int) -> dict[str, int]:
    """Stats once nothing runs or waits (30 s cap); the identity checked."""
    now = app.settled_stats(scheduled_at_least)
    assert now["scheduled"] == sum(now[outcome] for outcome in OUTCOMES)
    return now


def provoke(url: str, client_behaviour: str) -> Any:
    if client_behaviour == "reads":
        return httpx.get(url, timeout=30).status_code
    with httpx.stream("GET", url, timeout=30) as response:
        return next(response.iter_raw())  # the first chunk, then hang up


@pytest.mark.parametrize("fault", FAULTS)
def test_fault_is_survived_and_accounted(faulty: Example, fault: str) -> None:
    path, client_behaviour, grows = FAULTS[fault]
    before = settled(faulty, 0)

    provoke(faulty.url + path, client_behaviour)

    after = settled(faulty, before["scheduled"] + sum(grows.values()))
    growth = {o: after[o] - before[o] for o in OUTCOMES if after[o] != before[o]}
    assert growth == grows
