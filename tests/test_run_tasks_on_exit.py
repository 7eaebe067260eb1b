"""asgi_bgtasks.testing.run_tasks_on_exit: add_task outside the ASGI stack."""

from types import ModuleType

import pytest
from django.test import Client

from asgi_bgtasks import add_task
from asgi_bgtasks.testing import run_tasks_on_exit


def test_django_test_client_view_schedules_tasks_that_run_on_exit(
    django_project: ModuleType, monkeypatch: pytest.MonkeyPatch
) -> None:
    from examples.django_app import views
    from examples.django_app.members.models import Member

    sent: list[str] = []
    monkeypatch.setattr(views, "send_welcome_email", sent.append)
    client = Client(HTTP_HOST="localhost")

    with run_tasks_on_exit():
        response = client.get("/register", {"email": "ann@example.com"})
        assert sent == []  # scheduled, not run yet

    member = Member.objects.get(pk=response.json()["member"])
    assert response.status_code == 201
    assert sent == ["ann@example.com"]
    assert member.welcomed  # the ORM task ran too


def test_a_failing_task_fails_the_block() -> None:
    def send_receipt() -> None:
        raise ConnectionError("SMTP server down")

    with (
        pytest.raises(AssertionError, match="send_receipt failed") as raised,
        run_tasks_on_exit(),
    ):
        add_task(send_receipt)

    assert isinstance(raised.value.__cause__, ConnectionError)


async def test_async_with_runs_the_tasks_in_the_running_loop() -> None:
    ran: list[str] = []

    async def notify(text: str) -> None:
        ran.append(text)

    async with run_tasks_on_exit():
        add_task(notify, "first")
        add_task(ran.append, "second")

    assert ran == ["first", "second"]


def test_nothing_runs_when_the_block_raises() -> None:
    ran: list[str] = []

    def failing_test() -> None:
        with run_tasks_on_exit():
            add_task(ran.append, "never")
            raise KeyError("the test failed first")

    with pytest.raises(KeyError):
        failing_test()

    assert ran == []


async def test_empty_blocks_run_nothing_and_leave_no_collector_behind() -> None:
    # Inside a running loop: a sync block that tried to run tasks would fail.
    with run_tasks_on_exit():
        pass
    async with run_tasks_on_exit():
        pass

    with pytest.raises(RuntimeError, match="outside a request"):
        add_task(print, "no block, no middleware")


async def test_async_with_runs_tasks_that_end_at_once() -> None:
    ran: list[str] = []

    async def at_once(label: str) -> None:
        ran.append(label)  # ends in its first step: eager on 3.12+

    async with run_tasks_on_exit():
        add_task(at_once, "first")
        add_task(at_once, "second")

    assert ran == ["first", "second"]
