"""Every record about a task carries ``task`` and, where known, ``outcome``,
``attempt`` and ``duration`` as ``extra`` fields; never its arguments
(DESIGN.md, "Integrations" → Structured logs)."""

import asyncio
import json
import logging
from typing import Any

import pytest
from helpers import BODY, START_200, Lifespan, call, scheduling, with_lifespan

from asgi_bgtasks import BackgroundTasksMiddleware, add_task, task_options
from examples.json_logging import JsonFormatter

SECRET = "secret-argument"


async def fails(secret: str) -> None:
    raise ValueError("smtp refused")


@task_options(retries=2, retry_delay=0)
async def flaky(secret: str) -> None:
    raise ConnectionError("smtp down")


@task_options(timeout=0.01)
async def hangs(secret: str) -> None:
    await asyncio.Event().wait()


def fields(record: logging.LogRecord) -> dict[str, Any]:
    return {
        name: getattr(record, name)
        for name in ("task", "tasks", "outcome", "attempt")
        if hasattr(record, name)
    }


def about_tasks(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.levelno >= logging.WARNING]


def assert_no_arguments(caplog: pytest.LogCaptureFixture) -> None:
    for record in caplog.records:
        assert SECRET not in repr(vars(record))


@pytest.mark.parametrize("mode", ["inline", "detached"])
async def test_a_failure_carries_task_outcome_attempt_and_duration(
    mode: str, caplog: pytest.LogCaptureFixture
) -> None:
    app = BackgroundTasksMiddleware(scheduling((fails, SECRET)), mode=mode)

    await call(app, [])
    await app.join()

    [record] = about_tasks(caplog)
    assert fields(record) == {
        "task": "test_structured_logs.fails",
        "outcome": "failed",
        "attempt": 1,
    }
    assert isinstance(record.duration, float)
    assert record.duration >= 0
    assert_no_arguments(caplog)


async def test_retries_carry_their_attempt_and_the_final_failure_its_outcome(
    caplog: pytest.LogCaptureFixture,
) -> None:
    app = BackgroundTasksMiddleware(scheduling((flaky, SECRET)))

    await call(app, [])

    name = "test_structured_logs.flaky"
    assert [fields(r) for r in about_tasks(caplog)] == [
        {"task": name, "attempt": 1},
        {"task": name, "attempt": 2},
        {"task": name, "outcome": "failed", "attempt": 3},
    ]
    assert_no_arguments(caplog)


async def test_a_timeout_carries_its_outcome_attempt_and_duration(
    caplog: pytest.LogCaptureFixture,
) -> None:
    app = BackgroundTasksMiddleware(scheduling((hangs, SECRET)))

    await call(app, [])

    [record] = about_tasks(caplog)
    assert fields(record) == {
        "task": "test_structured_logs.hangs",
        "outcome": "timed_out",
        "attempt": 1,
    }
    # Not compared with the timeout: uvloop's timers may fire up to 1 ms early.
    assert isinstance(record.duration, float)
    assert record.duration > 0


async def test_drops_carry_their_outcome_the_summary_its_task_names(
    events: list[object], caplog: pytest.LogCaptureFixture
) -> None:
    async def fails_and_leaves(scope: Any, receive: Any, send: Any) -> None:
        add_task(fails, SECRET)
        add_task(hangs, SECRET)
        await send({**START_200, "status": 500})
        await send(BODY)

    failed_request = BackgroundTasksMiddleware(fails_and_leaves)
    await call(failed_request, events)

    at_the_deadline = BackgroundTasksMiddleware(
        with_lifespan(scheduling((hangs, "running"), (fails, SECRET)), events),
        shutdown_timeout=0,
    )
    lifespan = Lifespan(at_the_deadline)
    await lifespan.startup()
    await call(at_the_deadline, events)
    await asyncio.sleep(0)  # the first task starts
    await lifespan.shutdown()

    assert [fields(r) for r in about_tasks(caplog)] == [
        {
            "tasks": ["test_structured_logs.fails", "test_structured_logs.hangs"],
            "outcome": "dropped",
        },
        {"task": "test_structured_logs.hangs", "outcome": "dropped", "attempt": 1},
        # Summarised at the end of the shutdown: one record per function.
        {"task": "test_structured_logs.fails", "outcome": "dropped"},
    ]
    assert_no_arguments(caplog)


async def test_the_json_recipe_writes_the_fields(
    caplog: pytest.LogCaptureFixture,
) -> None:
    app = BackgroundTasksMiddleware(scheduling((fails, SECRET)))

    await call(app, [])

    [record] = about_tasks(caplog)
    line = json.loads(JsonFormatter().format(record))
    assert line["message"] == "background task test_structured_logs.fails failed"
    assert (line["task"], line["outcome"], line["attempt"]) == (
        "test_structured_logs.fails",
        "failed",
        1,
    )
    assert "ValueError: smtp refused" in line["exception"]
    assert SECRET not in json.dumps(line)
