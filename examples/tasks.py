"""The background work the examples schedule; no framework imported here.

Every task reports what it did through :func:`record`: a log line on the
``examples`` logger and, when ``EXAMPLES_ACTIVITY`` names a file, a JSON line
in it (the end-to-end tests and ``make demo`` read that file). E-mail goes to a
local SMTP sink at ``SMTP_HOST``:``SMTP_PORT`` (default ``127.0.0.1:8025``);
start one with ``python -m aiosmtpd -n -l 127.0.0.1:8025``.
"""

import asyncio
import csv
import io
import json
import logging
import os
import smtplib
import threading
import time
from collections.abc import AsyncIterator
from email.message import EmailMessage
from typing import Any

from asgi_bgtasks import task_options

logger = logging.getLogger("examples")
_activity_lock = threading.Lock()


def record(event: str, **details: Any) -> None:
    """Log ``event`` and append it, stamped with ``time.monotonic()``."""
    logger.info("%s", event)
    path = os.environ.get("EXAMPLES_ACTIVITY")
    if path:
        line = json.dumps({"event": event, "at": time.monotonic(), **details})
        with _activity_lock, open(path, "a", encoding="utf-8") as log:
            log.write(line + "\n")


def send_email(to: str, subject: str) -> None:
    """Deliver a short e-mail to the local SMTP sink (blocking: runs in a thread)."""
    message = EmailMessage()
    message["From"] = "noreply@example.com"
    message["To"] = to
    message["Subject"] = subject
    message.set_content(f"{subject}\n\n-- the example app")
    host = os.environ.get("SMTP_HOST", "127.0.0.1")
    port = int(os.environ.get("SMTP_PORT", "8025"))
    with smtplib.SMTP(host, port, timeout=30) as smtp:
        smtp.send_message(message)
    record("e-mail sent", subject=subject)


def send_welcome_email(address: str) -> None:
    send_email(address, "Welcome!")


@task_options(retries=3, retry_delay=0.5, retry_on=(ConnectionError, TimeoutError))
def send_receipt(address: str) -> None:
    send_email(address, "Your receipt")


async def write_notification(text: str) -> None:
    """Post a notification line (an async task)."""
    await asyncio.sleep(0)  # stands in for an HTTP call to a chat webhook
    record("notification written", text=text)


def process_csv(name: str, data: bytes) -> None:
    """Parse an uploaded CSV of ``item,amount`` rows and record the totals."""
    rows = list(csv.DictReader(io.StringIO(data.decode("utf-8"))))
    total = sum(float(row["amount"]) for row in rows)
    record("csv processed", name=name, rows=len(rows), total=total)


def log_report_download(kind: str) -> None:
    record("report download logged", kind=kind)


async def report_chunks(rows: int = 5) -> AsyncIterator[bytes]:
    """A CSV report rendered row by row, as a streaming response body."""
    yield b"row,value\n"
    for row in range(1, rows + 1):
        await asyncio.sleep(0.01)  # stands in for a database page
        yield f"{row},{row * row}\n".encode()
    record("report last chunk produced")
