"""examples.fastapi_app: a dependency and a handler share one ordered list."""

from collections.abc import Callable

import httpx
import pytest
from served import Example

from examples.smtp_sink import SmtpSink


@pytest.fixture
def fastapi_app(serve: Callable[[str], Example]) -> Example:
    return serve("examples.fastapi_app:app")


def test_dependency_task_runs_first_then_the_handlers_in_order(
    fastapi_app: Example, sink: SmtpSink, address: str
) -> None:
    mark = fastapi_app.mark()

    response = httpx.post(f"{fastapi_app.url}/register", params={"email": address})

    assert response.status_code == 201
    events = fastapi_app.wait_for("notification written", mark)
    assert [e["event"] for e in events] == [
        "access audited",
        "e-mail sent",
        "notification written",
    ]
    assert events[0]["path"] == "/register"
    assert sink.wait_for_mail(address)[0].subject == "Welcome!"


def test_fastapis_own_background_tasks_work_beside_ours(
    fastapi_app: Example, sink: SmtpSink, address: str
) -> None:
    mark = fastapi_app.mark()

    response = httpx.post(
        f"{fastapi_app.url}/register-fastapi-style", params={"email": address}
    )

    assert response.status_code == 201
    assert sink.wait_for_mail(address)[0].subject == "Welcome!"  # FastAPI's task
    events = fastapi_app.wait_for("access audited", mark)  # ours, from the dependency
    assert events[-1]["path"] == "/register-fastapi-style"


def test_uploaded_csv_is_answered_202_and_processed_afterwards(
    fastapi_app: Example,
) -> None:
    mark = fastapi_app.mark()

    response = httpx.post(
        f"{fastapi_app.url}/uploads",
        files={"file": ("sales.csv", b"item,amount\nbook,12.50\npen,1.25\n")},
    )

    assert response.status_code == 202
    assert response.json() == {"status": "processing", "name": "sales.csv"}
    [processed] = fastapi_app.wait_for("csv processed", mark)
    assert (processed["name"], processed["rows"], processed["total"]) == (
        "sales.csv",
        2,
        13.75,
    )
