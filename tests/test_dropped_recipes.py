"""The on_drop recipes of examples/dropped_tasks.py: a dropped task is kept
in a SQLite table and replayed later, or re-enqueued to Celery (eager mode),
and the e-mail goes out either way."""

from pathlib import Path

import httpx
import pytest

from asgi_bgtasks import BackgroundTasksMiddleware
from examples import celery_handoff, dropped_tasks
from examples.smtp_sink import SmtpSink


async def fail_signup(app: BackgroundTasksMiddleware, address: str) -> None:
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
        response = await client.post("/signup", params={"email": address, "fail": 1})
    assert response.status_code == 503


async def test_a_dropped_task_kept_in_the_table_is_replayed(
    sink: SmtpSink,
    address: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    request: pytest.FixtureRequest,
) -> None:
    monkeypatch.setenv("SMTP_PORT", str(sink.port))
    table = dropped_tasks.DroppedTaskTable(str(tmp_path / "dropped.sqlite3"))
    app = BackgroundTasksMiddleware(dropped_tasks.signup, on_drop=table)
    request.addfinalizer(table.db.close)

    await fail_signup(app, address)

    rows = table.db.execute("SELECT name, reason, args FROM dropped_tasks").fetchall()
    assert rows == [
        ("examples.tasks.send_welcome_email", "error_response", f'["{address}"]')
    ]
    assert sink.mail_to(address) == []
    assert table.replay() == 1
    [mail] = sink.wait_for_mail(address)
    assert mail.subject == "Welcome!"
    assert table.replay() == 0


async def test_a_dropped_task_is_re_enqueued_to_celery(
    sink: SmtpSink, address: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SMTP_PORT", str(sink.port))
    monkeypatch.setitem(celery_handoff.celery.conf, "task_always_eager", True)
    app = BackgroundTasksMiddleware(
        dropped_tasks.signup, on_drop=dropped_tasks.requeue_to_celery
    )

    await fail_signup(app, address)

    [mail] = sink.wait_for_mail(address)
    assert mail.subject == "Welcome!"
