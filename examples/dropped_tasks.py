"""Dropped tasks handed over with ``on_drop``: kept in a table and replayed,
or re-enqueued to Celery.

Run: ``hypercorn examples.dropped_tasks:app``. ``POST /signup?email=...``
schedules the welcome e-mail; ``&fail=1`` answers 503, so the task is
dropped and lands in the ``dropped_tasks`` table of ``DROPPED_TASKS_DB``
(default ``dropped_tasks.sqlite3``), as does every task still unfinished at
the shutdown deadline. ``python -m examples.dropped_tasks`` replays them.
"""

import json
import os
import sqlite3
from collections.abc import Callable
from typing import Any
from urllib.parse import parse_qs

from asgi_bgtasks import BackgroundTasksMiddleware, DroppedTask, add_task
from examples.celery_handoff import send_welcome_email_job
from examples.tasks import send_welcome_email

# What a stored name may run: never import a name read from a table.
REPLAYABLE: dict[str, Callable[..., Any]] = {
    "examples.tasks.send_welcome_email": send_welcome_email,
}


class DroppedTaskTable:
    """Keeps each dropped task as a row: one quick insert, on the event loop."""

    def __init__(self, path: str) -> None:
        self.db = sqlite3.connect(path)
        self.db.execute(
            "CREATE TABLE IF NOT EXISTS dropped_tasks"
            " (name TEXT, reason TEXT, args TEXT, kwargs TEXT)"
        )

    def __call__(self, dropped: DroppedTask) -> None:
        self.db.execute(
            "INSERT INTO dropped_tasks VALUES (?, ?, ?, ?)",
            (
                dropped.name,
                dropped.reason,
                json.dumps(dropped.args),
                json.dumps(dropped.kwargs),
            ),
        )
        self.db.commit()

    def replay(self) -> int:
        """Run the stored tasks, deleting each row once it ran."""
        rows = self.db.execute(
            "SELECT rowid, name, args, kwargs FROM dropped_tasks"
        ).fetchall()
        for rowid, name, args, kwargs in rows:
            REPLAYABLE[name](*json.loads(args), **json.loads(kwargs))
            self.db.execute("DELETE FROM dropped_tasks WHERE rowid = ?", (rowid,))
            self.db.commit()
        return len(rows)


CELERY_JOBS = {"examples.tasks.send_welcome_email": send_welcome_email_job}


def requeue_to_celery(dropped: DroppedTask) -> None:
    """At-least-once: a Celery worker runs a task that shutdown or a
    cancellation cut short. One whose request failed (a 5xx, a crash) is
    not run anywhere: its response said the work did not happen."""
    job = CELERY_JOBS.get(dropped.name)
    if job is not None and dropped.reason in ("shutdown", "cancelled"):
        job.apply_async(dropped.args, dropped.kwargs)


async def signup(scope: Any, receive: Any, send: Any) -> None:
    if scope["type"] != "http":
        return
    query = parse_qs(scope["query_string"].decode())
    add_task(send_welcome_email, query["email"][0])
    status = 503 if "fail" in query else 201
    await send({"type": "http.response.start", "status": status, "headers": []})
    await send({"type": "http.response.body", "body": b""})


table = DroppedTaskTable(os.environ.get("DROPPED_TASKS_DB", "dropped_tasks.sqlite3"))
app = BackgroundTasksMiddleware(signup, on_drop=table)

if __name__ == "__main__":
    print(f"replayed {table.replay()} dropped task(s)")
