"""examples.django_app under a real hypercorn: ORM tasks, async views, errors."""

from collections.abc import Callable

import httpx
import pytest
from served import Example

from examples.smtp_sink import SmtpSink


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
