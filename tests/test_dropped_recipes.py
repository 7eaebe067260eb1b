"""The on_drop recipes of examples/dropped_tasks.py: a dropped task is kept
in a SQLite table and replayed later, or, if shutdown cut it short,
re-enqueued to Celery (eager mode), and the e-mail goes out either way."""

import asyncio
from pathlib import Path
from typing import Any

import httpx
import pytest
from helpers import Lifespan

from asgi_bgtasks import BackgroundTasksMiddleware, add_task
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


async def test_a_task_cut_short_by_shutdown_is_re_enqueued_to_celery(
    sink: SmtpSink, address: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SMTP_PORT", str(sink.port))
    monkeypatch.setitem(celery_handoff.celery.conf, "task_always_eager", True)
    busy = asyncio.Event()

    async def holds_the_only_slot() -> None:
        busy.set()
        await asyncio.Event().wait()

    async def app(scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "http" and scope["path"] == "/busy":
            add_task(holds_the_only_slot)
            await send({"type": "http.response.start", "status": 200, "headers": []})
            await send({"type": "http.response.body", "body": b""})
        else:
            await dropped_tasks.signup(scope, receive, send)

    middleware = BackgroundTasksMiddleware(
        app,
        mode="detached",
        max_concurrency=1,
        shutdown_timeout=0,
        on_drop=dropped_tasks.requeue_to_celery,
    )
    lifespan = Lifespan(middleware)
    await lifespan.startup()
    transport = httpx.ASGITransport(app=middleware)
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
        assert (await client.post("/busy")).status_code == 200
        await busy.wait()
        response = await client.post("/signup", params={"email": address})
    assert response.status_code == 201
    assert sink.mail_to(address) == []  # waiting for the slot

    await lifespan.shutdown()

    [mail] = sink.wait_for_mail(address)
    assert mail.subject == "Welcome!"


async def test_a_task_of_a_failed_request_is_not_re_enqueued_to_celery(
    sink: SmtpSink,
    address: str,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    monkeypatch.setenv("SMTP_PORT", str(sink.port))
    monkeypatch.setitem(celery_handoff.celery.conf, "task_always_eager", True)
    app = BackgroundTasksMiddleware(
        dropped_tasks.signup, on_drop=dropped_tasks.requeue_to_celery
    )

    await fail_signup(app, address)

    ours = [r.getMessage() for r in caplog.records if r.name == "asgi_bgtasks"]
    assert ours == [  # no "on_drop raised": nothing was tried
        "dropped 1 background task(s) because the response status was 503: "
        "examples.tasks.send_welcome_email"
    ]
    assert sink.mail_to(address) == []  # an eager job would have sent it by now
