"""examples.django_app under a real hypercorn: ORM tasks, async views, errors,
and Django's tasks framework, after the response or in django-tasks-db's
worker process."""

import os
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from served import Example, until

from examples.serve import ROOT, run_hypercorn
from examples.smtp_sink import SmtpSink

WORKER = [sys.executable, "-m", "django", "db_worker", "--batch", "--no-startup-delay"]
WORKER_ID = "example-worker"


@pytest.fixture
def django_app(serve: Callable[[str], Example]) -> Example:
    return serve("examples.django_app:app")


def test_orm_task_marks_the_member_welcomed_only_after_the_email(
    django_app: Example, sink: SmtpSink, address: str
) -> None:
    mark = django_app.mark()
    with sink.hold():
        response = httpx.post(f"{django_app.url}/register", params={"email": address})
        member = f"{django_app.url}/members/{response.json()['member']}"
        sink.wait_until_held()
        # The e-mail task is stuck, so the ORM task queued behind it has not run.
        assert httpx.get(member).json() == {"email": address, "welcomed": False}

    django_app.wait_for("member welcomed", mark)
    assert httpx.get(member).json() == {"email": address, "welcomed": True}
    assert response.status_code == 201


def test_async_view_schedules_an_async_orm_task(django_app: Example) -> None:
    mark = django_app.mark()

    response = httpx.post(f"{django_app.url}/notify", params={"text": "from async"})

    assert response.status_code == 202
    events = django_app.wait_for("members counted", mark)
    assert [e["event"] for e in events] == ["notification written", "members counted"]
    assert events[0]["text"] == "from async"
    assert isinstance(events[1]["count"], int)


def test_view_that_raises_answers_500_and_its_task_is_dropped_and_logged(
    django_app: Example,
) -> None:
    mark = django_app.mark()

    response = httpx.post(f"{django_app.url}/broken")

    assert response.status_code == 500
    output = django_app.wait_for_output("dropped 1 background task(s)")
    assert (
        "dropped 1 background task(s) because the response status was 500: "
        "examples.tasks.write_notification"
    ) in output
    assert django_app.events_since(mark) == []  # decided, so it can never run


def test_a_django_task_sends_its_email_after_the_response_and_succeeds(
    django_app: Example, sink: SmtpSink, address: str
) -> None:
    with sink.hold():
        response = httpx.post(f"{django_app.url}/sign-up", params={"email": address})
        # The response is here while the task's e-mail is stuck in the sink.
        assert response.status_code == 202
        sink.wait_until_held()
        task = f"{django_app.url}/tasks/{response.json()['task']}"
        assert httpx.get(task).json()["status"] == "RUNNING"

    result = until(lambda: httpx.get(task).json(), succeeded)
    assert result["return_value"] == "Welcome!"
    assert result["errors"] == []
    assert [mail.subject for mail in sink.mail_to(address)] == ["Welcome!"]


def succeeded(result: dict[str, Any]) -> bool:
    return result["status"] == "SUCCESSFUL"


@pytest.fixture
def durable(sink: SmtpSink, tmp_path: Path) -> Iterator[tuple[Example, dict[str, str]]]:
    """The example with django-tasks-db's backend (EXAMPLES_DURABLE_TASKS),
    and the environment a worker process needs to share its database."""
    env = {
        "EXAMPLES_DURABLE_TASKS": "1",
        "SMTP_PORT": str(sink.port),
        "EXAMPLES_ACTIVITY": str(tmp_path / "activity.jsonl"),
        "DJANGO_DB_PATH": str(tmp_path / "db.sqlite3"),
    }
    with run_hypercorn("examples.django_app:app", env=env) as server:
        yield Example(server, tmp_path / "activity.jsonl"), env


def run_db_worker(env: dict[str, str]) -> None:
    """django-tasks-db's worker, a process of its own: runs what is queued, exits."""
    worker = subprocess.run(
        [*WORKER, "--worker-id", WORKER_ID],
        cwd=ROOT,
        env={
            **os.environ,
            **env,
            "DJANGO_SETTINGS_MODULE": "examples.django_app.settings",
        },
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert worker.returncode == 0, worker.stdout + worker.stderr


@pytest.mark.parametrize("where", ["after the response", "in the db_worker"])
def test_the_same_view_runs_its_task_after_the_response_or_in_a_worker(
    where: str,
    django_app: Example,
    request: pytest.FixtureRequest,
    sink: SmtpSink,
    address: str,
) -> None:
    if where == "in the db_worker":
        app, env = request.getfixturevalue("durable")
    else:
        app = django_app
    response = httpx.post(f"{app.url}/sign-up", params={"email": address})
    task = f"{app.url}/tasks/{response.json()['task']}"
    if where == "in the db_worker":
        assert httpx.get(task).json()["status"] == "READY"  # no worker yet
        run_db_worker(env)

    result = until(lambda: httpx.get(task).json(), succeeded)
    assert response.status_code == 202
    assert result["return_value"] == "Welcome!"
    assert sink.wait_for_mail(address)[0].subject == "Welcome!"
    worker_ids = result["worker_ids"]
    assert len(worker_ids) == 1
    assert (worker_ids[0] == WORKER_ID) == (where == "in the db_worker")
