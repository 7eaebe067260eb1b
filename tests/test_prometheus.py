"""Prometheus: `asgi_bgtasks.prometheus.register` exports a middleware's
counters and gauges, read from its stats at scrape time, and two histograms
(DESIGN.md, "Integrations" → Prometheus). A fresh registry per test."""

import asyncio
import json
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest
from helpers import BODY, START_200, Gate, Lifespan, call, scheduling, with_lifespan
from prometheus_client import CollectorRegistry, generate_latest

from asgi_bgtasks import BackgroundTasksMiddleware, add_task, task_options
from asgi_bgtasks.prometheus import register

SECRET = "secret-argument"


async def sends_receipt(address: str) -> None:
    pass


async def fails(address: str) -> None:
    raise ValueError("smtp refused")


@task_options(timeout=0.01)
async def hangs(address: str) -> None:
    await asyncio.Event().wait()


class Flaky:
    """Fails its first attempt, then succeeds."""

    attempts = 0


@task_options(retries=1, retry_delay=0)
async def flaky(address: str) -> None:
    Flaky.attempts += 1
    if Flaky.attempts < 2:
        raise ConnectionError("smtp down")


def answering(status: int, *tasks: tuple[Any, ...]) -> Any:
    """An app that adds ``tasks`` and answers ``status``."""

    async def app(scope: Any, receive: Any, send: Any) -> None:
        for func, *args in tasks:
            add_task(func, *args)
        await send({**START_200, "status": status})
        await send(BODY)

    return app


def scraped(registry: CollectorRegistry) -> str:
    return generate_latest(registry).decode()


def samples(registry: CollectorRegistry) -> list[str]:
    """The exposition's sample lines, but the histograms' buckets, sums and
    creation times (which depend on timing)."""
    return [
        line
        for line in scraped(registry).splitlines()
        if not line.startswith("#")
        and "_bucket{" not in line
        and "_sum{" not in line
        and "_created{" not in line
    ]


@pytest.fixture
def registry() -> CollectorRegistry:
    return CollectorRegistry()


AFTER_ONE_OF_EACH = """\
asgi_bgtasks_task_duration_seconds_count{middleware="default",task="test_prometheus.sends_receipt"} 1.0
asgi_bgtasks_task_duration_seconds_count{middleware="default",task="test_prometheus.fails"} 1.0
asgi_bgtasks_task_duration_seconds_count{middleware="default",task="test_prometheus.hangs"} 1.0
asgi_bgtasks_task_duration_seconds_count{middleware="default",task="test_prometheus.flaky"} 2.0
asgi_bgtasks_task_wait_seconds_count{middleware="default"} 4.0
asgi_bgtasks_tasks_scheduled_total{middleware="default"} 5.0
asgi_bgtasks_tasks_total{middleware="default",outcome="succeeded"} 2.0
asgi_bgtasks_tasks_total{middleware="default",outcome="failed"} 1.0
asgi_bgtasks_tasks_total{middleware="default",outcome="timed_out"} 1.0
asgi_bgtasks_tasks_total{middleware="default",outcome="dropped"} 1.0
asgi_bgtasks_task_retries_total{middleware="default"} 1.0
asgi_bgtasks_tasks_running{middleware="default"} 0.0
asgi_bgtasks_tasks_pending{middleware="default"} 0.0
"""  # noqa: E501


async def test_metric_lines_after_tasks_that_succeed_fail_time_out_retry_or_drop(
    registry: CollectorRegistry,
) -> None:
    Flaky.attempts = 0
    tasks = [(sends_receipt, SECRET), (fails, SECRET), (hangs, SECRET)]
    ok = answering(200, *tasks, (flaky, SECRET))
    error = answering(500, (sends_receipt, SECRET))

    async def routes(scope: Any, receive: Any, send: Any) -> None:
        await (error if scope["path"] == "/error" else ok)(scope, receive, send)

    app = BackgroundTasksMiddleware(routes)
    register(app, registry)

    await call(app, [])
    await call(app, [], {"type": "http", "path": "/error"})

    assert samples(registry) == AFTER_ONE_OF_EACH.splitlines()
    assert SECRET not in scraped(registry)


async def test_types_and_help_follow_prometheus_conventions(
    registry: CollectorRegistry,
) -> None:
    app = BackgroundTasksMiddleware(scheduling((sends_receipt, SECRET)))
    register(app, registry)

    await call(app, [])

    types = [
        line.removeprefix("# TYPE ")
        for line in scraped(registry).splitlines()
        if line.startswith("# TYPE ")
    ]
    assert types == [
        "asgi_bgtasks_task_duration_seconds histogram",
        "asgi_bgtasks_task_duration_seconds_created gauge",
        "asgi_bgtasks_task_wait_seconds histogram",
        "asgi_bgtasks_task_wait_seconds_created gauge",
        "asgi_bgtasks_tasks_scheduled_total counter",
        "asgi_bgtasks_tasks_total counter",
        "asgi_bgtasks_task_retries_total counter",
        "asgi_bgtasks_tasks_running gauge",
        "asgi_bgtasks_tasks_pending gauge",
    ]


async def test_before_any_task_the_counters_are_zero_and_no_histogram_has_samples(
    registry: CollectorRegistry,
) -> None:
    register(BackgroundTasksMiddleware(scheduling()), registry)

    assert samples(registry) == [
        'asgi_bgtasks_tasks_scheduled_total{middleware="default"} 0.0',
        'asgi_bgtasks_tasks_total{middleware="default",outcome="succeeded"} 0.0',
        'asgi_bgtasks_tasks_total{middleware="default",outcome="failed"} 0.0',
        'asgi_bgtasks_tasks_total{middleware="default",outcome="timed_out"} 0.0',
        'asgi_bgtasks_tasks_total{middleware="default",outcome="dropped"} 0.0',
        'asgi_bgtasks_task_retries_total{middleware="default"} 0.0',
        'asgi_bgtasks_tasks_running{middleware="default"} 0.0',
        'asgi_bgtasks_tasks_pending{middleware="default"} 0.0',
    ]


async def test_running_and_pending_are_read_at_scrape_time(
    registry: CollectorRegistry, events: list[object]
) -> None:
    gate = Gate(events)
    app = BackgroundTasksMiddleware(
        scheduling((gate.task, "first"), (gate.task, "second")), mode="detached"
    )
    register(app, registry)

    labels = {"middleware": "default"}

    def gauges() -> tuple[float | None, float | None]:
        return (
            registry.get_sample_value("asgi_bgtasks_tasks_running", labels),
            registry.get_sample_value("asgi_bgtasks_tasks_pending", labels),
        )

    await call(app, events)
    await gate.arrived["first"].wait()
    during = gauges()
    gate.opened.set()
    await app.join()

    assert during == (1.0, 1.0)
    assert gauges() == (0.0, 0.0)


async def test_durations_are_observed_per_attempt_and_waits_once_per_task(
    registry: CollectorRegistry,
) -> None:
    Flaky.attempts = 0
    app = BackgroundTasksMiddleware(scheduling((flaky, SECRET), (sends_receipt, "x")))
    register(app, registry)

    await call(app, [])

    def count(name: str, **labels: str) -> float | None:
        return registry.get_sample_value(
            f"asgi_bgtasks_task_{name}_seconds_count",
            {"middleware": "default", **labels},
        )

    assert count("duration", task="test_prometheus.flaky") == 2.0
    assert count("duration", task="test_prometheus.sends_receipt") == 1.0
    assert count("wait") == 2.0  # not 3: a retry does not wait for a response
    assert app.stats.retried == 1


async def test_a_task_dropped_before_it_started_is_in_no_histogram(
    registry: CollectorRegistry,
) -> None:
    app = BackgroundTasksMiddleware(answering(500, (sends_receipt, SECRET)))
    register(app, registry)

    await call(app, [])

    assert "asgi_bgtasks_task_wait_seconds_count" not in scraped(registry)
    assert "asgi_bgtasks_task_duration_seconds_count" not in scraped(registry)
    assert (
        registry.get_sample_value(
            "asgi_bgtasks_tasks_total", {"middleware": "default", "outcome": "dropped"}
        )
        == 1.0
    )


async def test_a_task_cancelled_at_shutdown_is_counted_dropped_and_timed(
    registry: CollectorRegistry, events: list[object]
) -> None:
    gate = Gate(events)
    app = BackgroundTasksMiddleware(
        with_lifespan(scheduling((gate.task, "stuck")), events), shutdown_timeout=0.01
    )
    register(app, registry)
    lifespan = Lifespan(app)
    await lifespan.startup()
    await call(app, events)
    await gate.arrived["stuck"].wait()

    await lifespan.shutdown()

    labels = {"middleware": "default", "task": "helpers.Gate.task"}
    assert (
        registry.get_sample_value("asgi_bgtasks_task_duration_seconds_count", labels)
        == 1.0
    )
    assert (
        registry.get_sample_value(
            "asgi_bgtasks_tasks_total", {"middleware": "default", "outcome": "dropped"}
        )
        == 1.0
    )


async def test_two_middlewares_share_a_registry_under_their_own_labels(
    registry: CollectorRegistry,
) -> None:
    public = BackgroundTasksMiddleware(scheduling((sends_receipt, "x")))
    admin = BackgroundTasksMiddleware(scheduling((fails, "y"), (fails, "z")))
    register(public, registry, label="public")
    register(admin, registry, label="admin")

    await call(public, [])
    await call(admin, [])

    lines = samples(registry)
    assert 'asgi_bgtasks_tasks_scheduled_total{middleware="public"} 1.0' in lines
    assert 'asgi_bgtasks_tasks_scheduled_total{middleware="admin"} 2.0' in lines
    assert (
        'asgi_bgtasks_tasks_total{middleware="public",outcome="succeeded"} 1.0' in lines
    )
    assert 'asgi_bgtasks_tasks_total{middleware="admin",outcome="failed"} 2.0' in lines
    assert (
        'asgi_bgtasks_task_duration_seconds_count{middleware="admin",'
        'task="test_prometheus.fails"} 2.0' in lines
    )
    assert 'asgi_bgtasks_task_wait_seconds_count{middleware="public"} 1.0' in lines


def test_the_same_label_twice_in_one_registry_is_a_value_error(
    registry: CollectorRegistry,
) -> None:
    register(BackgroundTasksMiddleware(scheduling()), registry)

    with pytest.raises(ValueError, match="a middleware labelled 'default' is regis"):
        register(BackgroundTasksMiddleware(scheduling()), registry)


def test_the_same_label_in_two_registries_is_fine() -> None:
    app = BackgroundTasksMiddleware(scheduling())
    first, second = CollectorRegistry(), CollectorRegistry()

    register(app, first)
    register(app, second)

    for registry in (first, second):
        assert 'asgi_bgtasks_tasks_scheduled_total{middleware="default"} 0.0' in (
            samples(registry)
        )


# In PROMETHEUS_MULTIPROC_DIR mode, each process writes its histograms to
# files there; a scrape reads the files, not the processes' collectors.
MULTIPROCESS = """
import asyncio, json, sys
sys.path.insert(0, "tests")
from prometheus_client import CollectorRegistry, generate_latest, multiprocess
from helpers import call, scheduling
from asgi_bgtasks import BackgroundTasksMiddleware
from asgi_bgtasks.prometheus import register

async def sends_receipt():
    pass

app = BackgroundTasksMiddleware(scheduling((sends_receipt,)))
register(app, CollectorRegistry())
asyncio.run(call(app, []))
scrape = CollectorRegistry()
multiprocess.MultiProcessCollector(scrape)
print(json.dumps(generate_latest(scrape).decode().splitlines()))
"""


def test_in_multiprocess_mode_only_the_histograms_reach_the_scrape(
    tmp_path: Path,
) -> None:
    root = Path(__file__).parent.parent
    done = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(MULTIPROCESS)],
        cwd=root,
        env={"PROMETHEUS_MULTIPROC_DIR": str(tmp_path), "PYTHONPATH": str(root)},
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    )

    lines = json.loads(done.stdout)
    assert (
        'asgi_bgtasks_task_duration_seconds_count{middleware="default",'
        'task="__main__.sends_receipt"} 1.0' in lines
    )
    assert 'asgi_bgtasks_task_wait_seconds_count{middleware="default"} 1.0' in lines
    assert not [line for line in lines if "asgi_bgtasks_tasks" in line]


def test_the_timing_observer_is_named_by_its_label_in_logs(
    registry: CollectorRegistry,
) -> None:
    app = BackgroundTasksMiddleware(scheduling())

    register(app, registry, label="public")

    assert (
        repr(app._runner.observers[-1]) == "<asgi_bgtasks.prometheus timing 'public'>"
    )
