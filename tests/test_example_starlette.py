"""examples.starlette_app: ordered tasks, a CSV upload, and the same under uvicorn."""

from collections.abc import Callable

import httpx
import pytest
from served import Example

from examples.serve import run_uvicorn
from examples.smtp_sink import SmtpSink

CSV = b"item,amount\nbook,12.50\npen,1.25\n"


@pytest.fixture
def starlette_app(serve: Callable[[str], Example]) -> Example:
    return serve("examples.starlette_app:app")


def test_one_responses_tasks_run_in_the_order_added(
    starlette_app: Example, sink: SmtpSink, address: str
) -> None:
    mark = starlette_app.mark()

    response = httpx.post(f"{starlette_app.url}/orders", params={"email": address})

    order = response.json()["order"]
    events = starlette_app.wait_for("notification written", mark)
    assert [e["event"] for e in events] == [
        "stock reserved",
        "e-mail sent",
        "notification written",
    ]
    assert events[0]["order"] == order
    assert events[2]["text"] == f"order {order} ready to ship"
    assert sink.wait_for_mail(address)[0].subject == f"Receipt #{order}"


def test_csv_upload_is_answered_202_and_processed_afterwards(
    starlette_app: Example,
) -> None:
    mark = starlette_app.mark()

    response = httpx.post(
        f"{starlette_app.url}/uploads", params={"name": "sales.csv"}, content=CSV
    )

    assert response.status_code == 202
    assert response.json() == {"status": "processing", "name": "sales.csv"}
    [processed] = starlette_app.wait_for("csv processed", mark)
    assert processed | {"at": 0} == {
        "event": "csv processed",
        "name": "sales.csv",
        "rows": 2,
        "total": 13.75,
        "at": 0,
    }


def test_same_example_under_uvicorn(sink: SmtpSink, address: str) -> None:
    env = {"SMTP_PORT": str(sink.port)}
    with run_uvicorn("examples.starlette_app:app", env=env) as server:
        with sink.hold():
            response = httpx.post(f"{server.url}/orders", params={"email": address})
            sink.wait_until_held()  # the response came while the receipt was stuck
            assert response.status_code == 201
            assert sink.mail_to(address) == []

        [mail] = sink.wait_for_mail(address)
        output = server.output()

    assert mail.subject == f"Receipt #{response.json()['order']}"
    assert "Uvicorn running" in output
    assert "lifespan startup seen: background tasks run detached" in output
