"""Checked by mypy in test_typing.py: each line marked ``# E`` must fail."""

from asgi_bgtasks import BackgroundTasks, add_task


async def send_welcome_email(address: str, *, retries: int = 3) -> None: ...


def resize(path: str, width: int) -> None: ...


def schedule(tasks: BackgroundTasks) -> None:
    add_task(send_welcome_email, "bob@example.com")
    add_task(send_welcome_email, "bob@example.com", retries=5)
    tasks.add_task(resize, "/tmp/a.png", 200)
    add_task(send_welcome_email, 42)  # E
    add_task(send_welcome_email, "bob@example.com", tries=5)  # E
    tasks.add_task(resize, "/tmp/a.png")  # E
