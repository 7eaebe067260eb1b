"""The background work the examples schedule; no framework imported here.

Every task reports what it did through :func:`record`: a log line on the
``examples`` logger and, when ``EXAMPLES_ACTIVITY`` names a file, a JSON line
in it (the end-to-end tests and ``make demo`` read that file). E-mail goes to a
local SMTP sink at ``SMTP_HOST``:``SMTP_PORT`` (default ``127.0.0.1:8025``).
When nothing listens there on this machine, the first e-mail starts one in
the process (aiosmtpd, which logs what it receives) and says so in one line;
without aiosmtpd, one line says how to get one and e-mail is skipped.
"""

import asyncio
import csv
import email
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
_sink_lock = threading.Lock()
_sink: Any = None  # the local SMTP sink this process started, if any
LOOPBACK = ("127.0.0.1", "localhost")
SINK_STARTED = (
    "no SMTP server was listening on %s:%d, so this example started a local "
    "sink there (aiosmtpd); it logs each e-mail it receives"
)
NO_SINK = (
    "no SMTP server is listening on %s:%d and aiosmtpd is not installed: "
    "e-mail is skipped (pip install aiosmtpd, or start a server there)"
)


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
    smtp = _connect(host, port)
    if smtp is None:
        record("e-mail skipped", subject=subject)
        return
    with smtp:
        smtp.send_message(message)
    record("e-mail sent", subject=subject)


def _connect(host: str, port: int) -> smtplib.SMTP | None:
    """A connection to the SMTP server, starting a local sink if none listens.

    None when there is none and none can be started (aiosmtpd missing).
    """
    try:
        return smtplib.SMTP(host, port, timeout=30)
    except ConnectionRefusedError:
        if host not in LOOPBACK:
            raise  # a real server is down: the task fails, as it would
    if not _start_sink(host, port):
        return None
    return smtplib.SMTP(host, port, timeout=30)


class _LoggingSink:
    """An aiosmtpd handler that logs each e-mail instead of delivering it."""

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        mail = email.message_from_bytes(envelope.content)
        recipients = ", ".join(envelope.rcpt_tos)
        logger.info("local SMTP sink: %r for %s", mail["Subject"], recipients)
        return "250 Message accepted for delivery"


def _start_sink(host: str, port: int) -> bool:
    """Start the process's local sink once; False if aiosmtpd is missing."""
    global _sink
    with _sink_lock:
        if _sink is not None:
            return _sink is not False
        try:
            from aiosmtpd.controller import Controller
        except ImportError:
            logger.warning(NO_SINK, host, port)
            _sink = False
            return False
        controller = Controller(_LoggingSink(), hostname=host, port=port)
        try:
            controller.start()
        except Exception:  # another process started one on that port meanwhile
            _sink = True
            return True
        logger.warning(SINK_STARTED, host, port)
        _sink = controller
        return True


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
