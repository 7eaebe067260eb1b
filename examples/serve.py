"""Start an example under a real server on 127.0.0.1, and always stop it."""

import contextlib
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parent.parent


@dataclass
class Server:
    """A running server: its base URL, process and combined output."""

    url: str
    process: "subprocess.Popen[bytes]"
    log: Path

    def output(self) -> str:
        return self.log.read_text()


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def run_hypercorn(
    app: str, *args: str, env: dict[str, str] | None = None, cwd: Path = ROOT
) -> contextlib.AbstractContextManager[Server]:
    """Serve ``app`` (``module:attr``, imported from ``cwd``) under hypercorn;
    SIGTERM it afterwards.

    ``EXAMPLES_WORKER_CLASS=uvloop`` in the environment serves it on uvloop.
    """
    worker = os.environ.get("EXAMPLES_WORKER_CLASS", "asyncio")
    command = ["hypercorn", app, "--bind", "127.0.0.1:{port}", "-k", worker]
    return _run([*command, *args], env, cwd=cwd)


def run_uvicorn(
    app: str, *args: str, env: dict[str, str] | None = None
) -> contextlib.AbstractContextManager[Server]:
    """Serve ``app`` (``module:attr``) under uvicorn; SIGTERM it afterwards."""
    return _run(["uvicorn", app, "--host", "127.0.0.1", "--port", "{port}", *args], env)


def run_fastapi_cli(
    command: str, path: str, *, cwd: Path
) -> contextlib.AbstractContextManager[Server]:
    """``fastapi run`` or ``fastapi dev`` (``command``) serving the file
    ``path`` in ``cwd``, as FastAPI's docs teach; SIGTERM it afterwards."""
    argv = ["fastapi", command, path, "--host", "127.0.0.1", "--port", "{port}"]
    return _run(argv, {"NO_COLOR": "1", "COLUMNS": "200"}, cwd=cwd)


@contextlib.contextmanager
def _run(
    command: list[str],
    env: dict[str, str] | None,
    ready_within: float = 30.0,
    cwd: Path = ROOT,
) -> Iterator[Server]:
    port = free_port()
    argv = [sys.executable, "-m", *(arg.format(port=port) for arg in command)]
    with tempfile.TemporaryDirectory() as folder:
        log = Path(folder) / "server.log"
        with log.open("wb") as out:
            process = subprocess.Popen(
                argv,
                cwd=cwd,
                env={**os.environ, **(env or {})},
                stdout=out,
                stderr=subprocess.STDOUT,
            )
        server = Server(f"http://127.0.0.1:{port}", process, log)
        try:
            _wait_until_serving(server, ready_within)
            yield server
        finally:
            stop(server)


def stop(server: Server) -> None:
    """SIGTERM the server and wait for it to exit (killing it after 60 s)."""
    server.process.send_signal(signal.SIGTERM)
    try:
        server.process.wait(timeout=60)
    except subprocess.TimeoutExpired:
        server.process.kill()
        server.process.wait()


def _wait_until_serving(server: Server, limit: float) -> None:
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline:
        if server.process.poll() is not None:
            raise RuntimeError(
                f"the server exited with {server.process.returncode}:\n"
                + server.output()
            )
        try:
            httpx.get(server.url, timeout=1)
            return
        except httpx.TransportError:
            time.sleep(0.05)
    raise RuntimeError(f"the server did not serve {server.url} within {limit} s")
