"""A small HTTP/1.1 load generator: keep-alive connections on raw asyncio streams.

httpx spends more CPU per request than the server under test; this client
spends little, so the figures it reports are the server's.
"""

import asyncio
import time
from collections.abc import Iterable
from urllib.parse import urlsplit


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
                writer.write(
                    f"POST {path} HTTP/1.1\r\nHost: {address.netloc}\r\n"
                    "Content-Length: 0\r\n\r\n".encode()
                )
                head = await reader.readuntil(b"\r\n\r\n")
                status = head.split(b" ", 2)[1]
                if status != b"200":
                    raise AssertionError(f"{path}: {head.decode()}")
                await reader.readexactly(content_length(head))
                latencies.append(time.perf_counter() - started)
        finally:
            writer.close()

    await asyncio.gather(*(connection() for _ in range(connections)))
    return latencies


def content_length(head: bytes) -> int:
    for line in head.lower().split(b"\r\n"):
        if line.startswith(b"content-length:"):
            return int(line.split(b":", 1)[1])
    raise AssertionError(f"no content-length (this client reads no chunks):\n{head!r}")
