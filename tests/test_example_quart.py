"""examples.quart_app: our tasks beside Quart's own add_background_task."""

from collections.abc import Callable

import httpx
from served import Example

from examples.smtp_sink import SmtpSink


def test_our_task_and_quarts_background_task_both_run_after_the_response(
    serve: Callable[[str], Example], sink: SmtpSink, address: str
) -> None:
    quart_app = serve("examples.quart_app:app")
    mark = quart_app.mark()
    with sink.hold():
        response = httpx.post(f"{quart_app.url}/register", params={"email": address})
        sink.wait_until_held()  # our task is stuck sending the e-mail...
        # ...and Quart's own task does not wait for it.
        [notified] = quart_app.wait_for("notification written", mark)

    assert response.status_code == 201
    assert notified["text"] == "someone registered"
    assert sink.wait_for_mail(address)[0].subject == "Welcome!"
