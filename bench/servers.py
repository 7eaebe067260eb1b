"""Real servers on 127.0.0.1, each in its own process, started and always stopped.

Which app a server runs is chosen by environment variables that
``bench/apps.py`` reads (see `AppSpec`). Servers can be pinned to a set of
CPUs (inherited by any process they start), so a benchmark can give every
server the same CPUs and the load generator others.
"""

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent

COMMANDS = {
    "uvicorn": [
        "uvicorn",
        "bench.apps:app",
        "--host=127.0.0.1",
        "--port={port}",
        "--loop=uvloop",
        "--http=httptools",
        "--no-access-log",
        "--log-level=warning",
    ],
    "hypercorn": [
        "hypercorn",
        "bench.apps:app",
        "--bind=127.0.0.1:{port}",
        "--worker-class=uvloop",
        "--workers=0",  # serve in this process: its pid is the server's
        "--log-level=warning",
    ],
}


@dataclass(frozen=True)
class AppSpec:
    """What ``bench/apps.py`` builds: see its docstring for the variants."""

    framework: str = "starlette"
    variant: str = "reference"
    task_seconds: float = 0.0
    shape: str = "noop"  # or "io" (when task_seconds is 0)
    max_pending: int | None = None
    gc_saveall: bool = False

    def env(self) -> dict[str, str]:
        env = {
            "BENCH_FRAMEWORK": self.framework,
            "BENCH_VARIANT": self.variant,
            "BENCH_TASK_SECONDS": str(self.task_seconds),
            "BENCH_TASK_SHAPE": self.shape,
            "BENCH_GC_SAVEALL": "1" if self.gc_saveall else "",
        }
        if self.max_pending is not None:
            env["BENCH_MAX_PENDING"] = str(self.max_pending)
        return env


@dataclass
class Server:
    """A running server: its base URL and process."""

    url: str
    process: "subprocess.Popen[bytes]"
    log: Path

    def stats(self) -> dict[str, Any]:
        """The app's ``/stats`` (see ``bench/apps.py``)."""
        with urllib.request.urlopen(self.url + "/stats", timeout=10) as response:
            return dict(json.loads(response.read()))

    def cpu_seconds(self) -> float:
        """CPU time the server's main thread has had (``/proc/<pid>/schedstat``,
        nanoseconds, unlike the clock ticks of ``/proc/<pid>/stat``)."""
        schedstat = Path(f"/proc/{self.process.pid}/schedstat").read_text()
        return int(schedstat.split()[0]) / 1e9

    def memory_mib(self) -> dict[str, float]:
        """Resident set now (``VmRSS``) and its peak so far (``VmHWM``)."""
        status = Path(f"/proc/{self.process.pid}/status").read_text()
        fields = dict(line.split(":", 1) for line in status.splitlines())
        return {
            name: int(fields[key].split()[0]) / 1024
            for name, key in (("rss", "VmRSS"), ("peak", "VmHWM"))
        }


def split_cpus() -> tuple[set[int] | None, set[int] | None]:
    """CPUs for the servers and for the load generator: the last CPU for every
    server, the others for the client; no pinning with one CPU or
    ``BENCH_PIN=0``."""
    cpus = sorted(os.sched_getaffinity(0))
    if len(cpus) < 2 or os.environ.get("BENCH_PIN") == "0":
        return None, None
    return {cpus[-1]}, set(cpus[:-1])


@contextlib.contextmanager
def pinned(cpus: set[int] | None) -> Iterator[None]:
    """Run this process (the load generator) on ``cpus`` for a while."""
    before = os.sched_getaffinity(0)
    if cpus is not None:
        os.sched_setaffinity(0, cpus)
    try:
        yield
    finally:
        os.sched_setaffinity(0, before)


@contextlib.contextmanager
def serving(
    server: str, app: AppSpec, cpus: set[int] | None = None, stop_within: float = 60
) -> Iterator[Server]:
    """Run ``app`` under ``server`` ("uvicorn" or "hypercorn") on a free port;
    SIGTERM it afterwards, SIGKILL it if it has not exited ``stop_within``
    seconds later."""
    port = _free_port()
    argv = [sys.executable, "-m", *(a.format(port=port) for a in COMMANDS[server])]
    with tempfile.TemporaryDirectory() as folder:
        log = Path(folder) / "server.log"
        with log.open("wb") as out:
            process = subprocess.Popen(
                argv,
                cwd=ROOT,
                env={**os.environ, **app.env()},
                stdout=out,
                stderr=subprocess.STDOUT,
                preexec_fn=None
                if cpus is None
                else lambda: os.sched_setaffinity(0, cpus),
            )
        running = Server(f"http://127.0.0.1:{port}", process, log)
        try:
            _wait_until_serving(running)
            yield running
        finally:
            _stop(running, stop_within)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _wait_until_serving(server: Server, limit: float = 30.0) -> None:
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline:
        if server.process.poll() is not None:
            raise RuntimeError(
                f"the server for {server.url} exited with "
                f"{server.process.returncode}:\n" + server.log.read_text()
            )
        try:
            server.stats()
            return
        except (urllib.error.URLError, ConnectionError):
            time.sleep(0.05)
    raise RuntimeError(f"nothing served {server.url} within {limit} s")


def _stop(server: Server, limit: float) -> None:
    server.process.send_signal(signal.SIGTERM)
    try:
        server.process.wait(timeout=limit)
    except subprocess.TimeoutExpired:
        server.process.kill()
        server.process.wait()
