"""A small HTTP/1.1 load generator: keep-alive connections on raw asyncio streams.

httpx spends more CPU per request than the server under test; this client
spends little, so the figures it reports are the server's.
"""

import asyncio
from collections.abc import Iterable
from urllib.parse import urlsplit


async def post_all(url: str, paths: Iterable[str], connections: int) -> int:
    """POST each path over ``connections`` keep-alive connections; return count.

    Raises if any response is not ``200``.
    """
    address = urlsplit(url)
    queue = list(paths)
    queue.reverse()

    async def connection() -> int:
        reader, writer = await asyncio.open_connection(address.hostname, address.port)
        sent = 0
        try:
            while queue:
                path = queue.pop()
                writer.write(
                    f"POST {path} HTTP/1.1\r\nHost: {address.netloc}\r\n"
                    "Content-Length: 0\r\n\r\n".encode()
                )
                head = await reader.readuntil(b"\r\n\r\n")
                status = head.split(b" ", 2)[1]
                if status != b"200":
                    raise AssertionError(f"{path}: {head.decode()}")
                await reader.readexactly(content_length(head))
                sent += 1
        finally:
            writer.close()
        return sent

    return sum(await asyncio.gather(*(connection() for _ in range(connections))))


def content_length(head: bytes) -> int:
    for line in head.lower().split(b"\r\n"):
        if line.startswith(b"content-length:"):
            return int(line.split(b":", 1)[1])
    raise AssertionError(f"no content-length (this client reads no chunks):\n{head!r}")
