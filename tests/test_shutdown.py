"""SIGTERM under a real hypercorn: every task finishes or is logged by name.

Tasks wait at a TCP gate the test controls (tests/gate.py), so which tasks
are running, pending or done at each step is decided by events, not sleeps.
"""

import signal
from pathlib import Path
from typing import Any

import httpx
from gate import Gate
from served import Example, reliability_app

from examples.serve import run_hypercorn
from examples.smtp_sink import SmtpSink


def schedule_gated_tasks(app: Example, count: int) -> None:
    for n in range(count):
        assert httpx.post(f"{app.url}/gated", params={"n": n}).status_code == 200


def final_stats(app: Example) -> dict[str, Any]:
    [stats] = [e for e in app.events_since(0) if e["event"] == "final stats"]
    return {k: v for k, v in stats.items() if k not in ("event", "at")}


def exit_code(app: Example) -> int:
    return app.server.process.wait(timeout=60)


def test_detached_drain_finishes_what_it_can_then_cancels_and_logs_the_rest(
    tmp_path: Path,
) -> None:
    with (
        Gate() as gate,
        reliability_app(
            tmp_path, gate.port, max_concurrency=2, shutdown_timeout=2
        ) as app,
    ):
        schedule_gated_tasks(app, 5)
        gate.wait_for(2)  # two running, three pending
        app.server.process.send_signal(signal.SIGTERM)
        app.wait_for_output("shutdown: waiting up to 2.0 s for 5 unfinished")
        gate.let_through(0)  # finishes during the drain...
        gate.wait_for(3)  # ...and its slot starts a pending task
        # The other tasks never get through: shutdown_timeout must end them.
        assert exit_code(app) == 0
        output = app.server.output()

    finished = [e for e in app.events_since(0) if e["event"] == "finished"]
    assert len(finished) == 1
    unfinished = "ERROR:asgi_bgtasks:background task tests.apps.reliability.gated"
    assert output.count(f"{unfinished} did not finish: cancelled while running") == 2
    pending = "ERROR:asgi_bgtasks:shutdown: 2 background task(s) "
    assert output.count(f"{pending}tests.apps.reliability.gated did not start") == 1
    assert final_stats(app) == {
        "scheduled": 5,
        "succeeded": 1,
        "failed": 0,
        "timed_out": 0,
        "dropped": 4,
        "running": 0,
        "pending": 0,
        "retried": 0,
    }


def test_inline_tasks_get_the_servers_grace_period_then_are_logged(
    tmp_path: Path,
) -> None:
    with (
        Gate() as gate,
        reliability_app(tmp_path, gate.port, mode="inline", max_concurrency=2) as app,
    ):
        schedule_gated_tasks(app, 5)  # each response arrives; the calls go on
        gate.wait_for(2)
        app.server.process.send_signal(signal.SIGTERM)
        # hypercorn shows no sign of its graceful shutdown from outside (it
        # even keeps accepting), so this task may finish just before or after.
        gate.let_through(0)
        gate.wait_for(3)  # its slot went to a waiting request's task
        assert exit_code(app) == 0  # after hypercorn's 3 s graceful_timeout
        output = app.server.output()

    finished = [e for e in app.events_since(0) if e["event"] == "finished"]
    assert len(finished) == 1
    assert output.count("did not finish: cancelled while running") == 2
    assert output.count("did not finish: cancelled while pending") == 2
    stats = final_stats(app)
    assert (stats["scheduled"], stats["succeeded"], stats["dropped"]) == (5, 1, 4)
    assert stats["running"] == stats["pending"] == 0


def test_django_without_lifespan_support_still_drains_and_honours_the_timeout(
    sink: SmtpSink, address: str, tmp_path: Path
) -> None:
    env = {"SMTP_PORT": str(sink.port), "DJANGO_DB_PATH": str(tmp_path / "db")}
    with (
        sink.hold(),
        run_hypercorn("tests.apps.django_shutdown:app", env=env) as server,
    ):
        django = Example(server, tmp_path / "activity.jsonl")
        for n in range(2):
            httpx.post(f"{server.url}/register", params={"email": f"{n}{address}"})
        sink.wait_until_held()
        sink.wait_until_held()  # both e-mails are stuck in SMTP
        server.process.send_signal(signal.SIGTERM)
        django.wait_for_output("did not start: dropped while pending")
        sink.release()  # a thread cannot be cancelled: free it so the process exits
        assert exit_code(django) == 0
        output = server.output()

    assert "completes the lifespan protocol itself" in output
    assert "shutdown: waiting up to 1 s for 4 unfinished" in output
    e_mail = (
        "examples.tasks.send_welcome_email did not finish: running in a worker "
        "thread, which cannot be stopped; it is counted when its thread returns"
    )
    assert output.count(e_mail) == 2
    welcomed = "2 background task(s) examples.django_app.views.mark_welcomed"
    assert output.count(f"{welcomed} did not start: dropped while pending") == 1
    assert address not in output
    # A thread cannot be stopped: it sent its mail after shutdown said so.
    assert output.rindex("cannot be stopped") < output.index("e-mail sent")
