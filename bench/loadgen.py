"""A small HTTP/1.1 load generator: keep-alive connections on raw asyncio.

httpx spends more CPU per request than the server under test; this client
spends little, so the figures it reports are the server's.
"""

import asyncio
import functools
import json
import time
from collections.abc import Coroutine, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar, cast
from urllib.parse import urlsplit

import uvloop

T = TypeVar("T")


async def post_all(url: str, paths: Iterable[str], connections: int) -> int:
    """POST each path over ``connections`` keep-alive connections; return count.

    Raises if any response is not ``200``.
    """
    return len(await timed_posts(url, paths, connections))


async def timed_posts(url: str, paths: Iterable[str], connections: int) -> list[float]:
    """Like `post_all`; returns each request's latency in seconds."""
    address = urlsplit(url)
    queue = list(paths)
    queue.reverse()

    latencies: list[float] = []

    async def connection() -> None:
        reader, writer = await asyncio.open_connection(address.hostname, address.port)
        try:
            while queue:
                path = queue.pop()
                started = time.perf_counter()
                writer.write(_request(address.netloc, path))
                await _response(reader, path)
                latencies.append(time.perf_counter() - started)
        finally:
            writer.close()

    await asyncio.gather(*(connection() for _ in range(connections)))
    return latencies


@dataclass
class Load:
    """What one server answered during a timed load: each request's latency,
    in seconds, and when it was sent, relative to the start of the load."""

    seconds: float
    sent_at: list[float] = field(default_factory=list)
    latencies: list[float] = field(default_factory=list)

    @property
    def rate(self) -> float:
        return len(self.latencies) / self.seconds

    def percentile(self, share: float) -> float:
        ordered = sorted(self.latencies)
        return ordered[min(int(len(ordered) * share), len(ordered) - 1)]


async def load_together(
    urls: Sequence[str], connections: int, seconds: float, path: str = "/"
) -> list[Load]:
    """POST ``path`` to every URL at once, ``connections`` keep-alive
    connections each, back to back until ``seconds`` have passed.

    All connections are open before the clock starts and every server is
    loaded by the same loop, so whatever slows the client or the machine
    slows them all alike. A protocol, not streams: about half the client CPU
    per request, so the servers stay the bottleneck. Raises if any response
    is not ``200``.
    """
    loop = asyncio.get_running_loop()
    loads = [Load(seconds) for _ in urls]
    pools = []
    for url, load in zip(urls, loads, strict=True):
        address = urlsplit(url)
        request = _request(address.netloc, path)
        pools += [
            (
                await loop.create_connection(
                    functools.partial(_KeepAlive, request, load),
                    address.hostname or "127.0.0.1",
                    address.port or 80,
                )
            )[1]
            for _ in range(connections)
        ]
    start = time.perf_counter()
    for connection in pools:
        connection.begin(start, start + seconds)
    try:
        await asyncio.gather(*(connection.done for connection in pools))
    finally:
        for connection in pools:
            connection.transport.close()
    return loads


class _KeepAlive(asyncio.Protocol):
    """One connection: send, read the whole response, send again."""

    def __init__(self, request: bytes, load: Load) -> None:
        self.request = request
        self.load = load
        self.buffer = b""
        self.done: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)

    def begin(self, start: float, deadline: float) -> None:
        self.start, self.deadline = start, deadline
        self._send()

    def _send(self) -> None:
        self.sent = time.perf_counter()
        if self.sent >= self.deadline:
            self.done.set_result(None)
        else:
            self.transport.write(self.request)

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        end = self.buffer.find(b"\r\n\r\n")
        if end < 0:
            return
        head = self.buffer[: end + 4]
        if head.split(b" ", 2)[1] != b"200":
            self._fail(AssertionError(head.decode()))
            return
        if len(self.buffer) - len(head) < content_length(head):
            return
        self.buffer = b""  # one request at a time: nothing follows the body
        self.load.sent_at.append(self.sent - self.start)
        self.load.latencies.append(time.perf_counter() - self.sent)
        self._send()

    def connection_lost(self, exc: Exception | None) -> None:
        self._fail(exc or ConnectionError("the server closed the connection"))

    def _fail(self, error: Exception) -> None:
        if not self.done.done():
            self.done.set_exception(error)
            self.transport.close()


def run_client(main: Coroutine[Any, Any, T]) -> T:
    """Run ``main`` on a fresh uvloop loop: less client CPU per request."""
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        return runner.run(main)


async def get_json(url: str) -> Any:
    """``GET url`` on a connection of its own; the decoded JSON body."""
    address = urlsplit(url)
    reader, writer = await asyncio.open_connection(address.hostname, address.port)
    try:
        writer.write(
            f"GET {address.path} HTTP/1.1\r\nHost: {address.netloc}\r\n"
            "Connection: close\r\n\r\n".encode()
        )
        head = await reader.readuntil(b"\r\n\r\n")
        return json.loads(await reader.readexactly(content_length(head)))
    finally:
        writer.close()


def _request(netloc: str, path: str) -> bytes:
    return (
        f"POST {path} HTTP/1.1\r\nHost: {netloc}\r\nContent-Length: 0\r\n\r\n"
    ).encode()


async def _response(reader: asyncio.StreamReader, path: str) -> None:
    head = await reader.readuntil(b"\r\n\r\n")
    status = head.split(b" ", 2)[1]
    if status != b"200":
        raise AssertionError(f"{path}: {head.decode()}")
    await reader.readexactly(content_length(head))


def content_length(head: bytes) -> int:
    for line in head.lower().split(b"\r\n"):
        if line.startswith(b"content-length:"):
            return int(line.split(b":", 1)[1])
    raise AssertionError(f"no content-length (this client reads no chunks):\n{head!r}")
