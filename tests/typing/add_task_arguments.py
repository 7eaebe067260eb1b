"""Checked by mypy in test_typing.py: each line marked ``# E`` must fail."""

from asgi_bgtasks import BackgroundTasks, add_task, task_options


async def send_welcome_email(address: str, *, retries: int = 3) -> None: ...


def resize(path: str, width: int) -> None: ...


@task_options(retries=3, timeout=10)
async def notify(user_id: int) -> None: ...


class Mailer:
    @task_options(retries=1)
    def send(self, address: str) -> bool:
        return bool(address)


def schedule(tasks: BackgroundTasks) -> None:
    add_task(send_welcome_email, "bob@example.com")
    add_task(send_welcome_email, "bob@example.com", retries=5)
    tasks.add_task(resize, "/tmp/a.png", 200)
    add_task(send_welcome_email, 42)  # E
    add_task(send_welcome_email, "bob@example.com", tries=5)  # E
    tasks.add_task(resize, "/tmp/a.png")  # E
    add_task(notify, 7)
    add_task(notify, "7")  # E
    add_task(Mailer().send, "bob@example.com")
    add_task(Mailer().send, 1)  # E
    task_options(retries="3")  # E


def still_callable_directly() -> bool:
    return Mailer().send("bob@example.com")


def with_its_own_return_type() -> str:
    return Mailer().send("bob@example.com")  # E
