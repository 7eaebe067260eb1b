"""What every example must show, each under a real hypercorn on 127.0.0.1."""

import httpx
import pytest
from served import Example

from examples.smtp_sink import SmtpSink

# app, and the request that schedules a welcome e-mail (or a receipt)
EXAMPLES = {
    "bare": ("examples.bare:app", "/signup"),
    "django": ("examples.django_app:app", "/register"),
    "quart": ("examples.quart_app:app", "/register"),
    "starlette": ("examples.starlette_app:app", "/orders"),
    "fastapi": ("examples.fastapi_app:app", "/register"),
    "litestar": ("examples.litestar_app:app", "/register"),
}


@pytest.fixture(params=EXAMPLES.values(), ids=EXAMPLES.keys())
def example(request: pytest.FixtureRequest) -> tuple[Example, str]:
    app, path = request.param
    return request.getfixturevalue("serve")(app), path


def test_response_arrives_while_the_task_is_stuck_in_its_slow_part(
    example: tuple[Example, str], sink: SmtpSink, address: str
) -> None:
    served, path = example
    with sink.hold():  # the e-mail cannot be delivered until this block ends
        response = httpx.post(served.url + path, params={"email": address}, timeout=30)
        sink.wait_until_held()  # and the task is in the SMTP conversation now
        assert response.status_code == 201
        assert sink.mail_to(address) == []

    [mail] = sink.wait_for_mail(address)  # the effect appears afterwards
    assert mail.to == (address,)


def test_streamed_response_runs_its_task_only_after_the_last_chunk(
    example: tuple[Example, str],
) -> None:
    served, _ = example
    mark = served.mark()

    response = httpx.get(served.url + "/report", timeout=30)

    assert response.status_code == 200
    rows = [f"{n},{n * n}" for n in range(1, 6)]
    assert response.text.splitlines() == ["row,value", *rows]
    events = [e["event"] for e in served.wait_for("report download logged", mark)]
    assert events == ["report last chunk produced", "report download logged"]
