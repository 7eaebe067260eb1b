"""The durable hand-off recipe, with Celery in eager mode (jobs run at once)."""

import httpx
import pytest

from asgi_bgtasks.testing import settled
from examples import celery_handoff
from examples.smtp_sink import SmtpSink


async def test_signup_enqueues_the_job_after_the_response_and_it_sends_the_email(
    sink: SmtpSink, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SMTP_PORT", str(sink.port))
    monkeypatch.setitem(celery_handoff.celery.conf, "task_always_eager", True)
    transport = httpx.ASGITransport(app=celery_handoff.app)

    async with (
        settled(celery_handoff.app),
        httpx.AsyncClient(transport=transport, base_url="http://test") as client,
    ):
        response = await client.post("/signup", params={"email": "eve@example.com"})

    assert response.status_code == 201
    [mail] = sink.wait_for_mail("eve@example.com")
    assert mail.subject == "Welcome!"
