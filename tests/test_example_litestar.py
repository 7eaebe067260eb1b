"""examples.litestar_app: the welcome e-mail, then a notification, in order."""

from collections.abc import Callable

import httpx
from served import Example

from examples.smtp_sink import SmtpSink


def test_registration_sends_the_email_then_writes_the_notification(
    serve: Callable[[str], Example], sink: SmtpSink, address: str
) -> None:
    litestar_app = serve("examples.litestar_app:app")
    mark = litestar_app.mark()

    response = httpx.post(f"{litestar_app.url}/register", params={"email": address})

    assert response.status_code == 201
    assert response.json() == {"status": "welcome"}
    events = litestar_app.wait_for("notification written", mark)
    assert [e["event"] for e in events] == ["e-mail sent", "notification written"]
    assert sink.wait_for_mail(address)[0].subject == "Welcome!"
