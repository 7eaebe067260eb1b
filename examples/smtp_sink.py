"""A local SMTP sink (aiosmtpd on 127.0.0.1) that keeps what it receives.

``make demo`` and the tests point the examples' ``SMTP_PORT`` at it. While
:meth:`SmtpSink.hold` is in effect, each delivery stalls inside the SMTP
conversation until the hold ends: the sending task is stuck in its slow part
until the caller lets it go.
"""

import asyncio
import contextlib
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from aiosmtpd.controller import Controller

from examples.serve import free_port


@dataclass(frozen=True)
class Mail:
    to: tuple[str, ...]
    subject: str
    at: float  # time.monotonic() when the sink accepted it


class SmtpSink:
    """Collects mail; ``delay`` seconds per delivery imitate a slow server."""

    def __init__(self, delay: float = 0.0) -> None:
        self.port = free_port()
        self.delay = delay
        self.mail: list[Mail] = []
        self._released = threading.Event()
        self._released.set()
        self._held = threading.Semaphore(0)
        self._arrived = threading.Condition(threading.RLock())
        self._controller = Controller(self, hostname="127.0.0.1", port=self.port)

    def __enter__(self) -> "SmtpSink":
        self._controller.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()
        self._controller.stop()

    @contextlib.contextmanager
    def hold(self) -> Iterator[None]:
        """Stall deliveries inside the SMTP conversation until the block ends."""
        self._released.clear()
        try:
            yield
        finally:
            self.release()

    def release(self) -> None:
        """End a :meth:`hold` early: stalled deliveries go on."""
        self._released.set()

    def wait_until_held(self, timeout: float = 30) -> None:
        """Block until a delivery is stalled by :meth:`hold`."""
        if not self._held.acquire(timeout=timeout):
            raise TimeoutError(f"no delivery reached the sink within {timeout} s")

    def mail_to(self, address: str) -> list[Mail]:
        """The messages received so far for ``address``."""
        with self._arrived:
            return [mail for mail in self.mail if address in mail.to]

    def wait_for_mail(self, to: str, count: int = 1, timeout: float = 30) -> list[Mail]:
        """Block until ``count`` messages for ``to`` have arrived; return them."""
        with self._arrived:
            if not self._arrived.wait_for(
                lambda: len(self.mail_to(to)) >= count, timeout
            ):
                raise TimeoutError(f"no {count} mails to {to} within {timeout} s")
            return self.mail_to(to)

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        if not self._released.is_set():
            self._held.release()
            await asyncio.to_thread(self._released.wait, 60)
        await asyncio.sleep(self.delay)
        subject = next(
            line.split(":", 1)[1].strip()
            for line in envelope.content.decode().splitlines()
            if line.startswith("Subject:")
        )
        with self._arrived:
            self.mail.append(Mail(tuple(envelope.rcpt_tos), subject, time.monotonic()))
            self._arrived.notify_all()
        return "250 Message accepted for delivery"
