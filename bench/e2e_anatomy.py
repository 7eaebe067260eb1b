"""Why a request costs more end to end than in-process: ``python -m bench.e2e_anatomy``.

Serves ``bench/apps.py`` (Starlette, one noop task a request) under uvicorn,
one worker, httptools, on 127.0.0.1, in the variants of `VARIANTS`, and
measures per request, over a fixed number of requests (the load stops by
itself):

1. **Counts** (load-independent), on a measurement-only build: uvicorn on
   the pure-Python asyncio loop (uvloop's internals cannot be hooked), whose
   ``BaseEventLoop._run_once`` (loop iterations), ``call_soon`` (Handles,
   by callback), ``call_at`` (timers), ``create_future`` and ``asyncio.Task``
   (a counting subclass) are wrapped, with one keep-alive connection (no
   batching: each request is one round trip) and with 32.
2. **CPU time**, on uvloop, not instrumented: all variants served at once,
   loaded one after another in rotated order each round; ``utime + stime``
   of ``/proc/PID/stat`` (all threads) over the round; medians. Cycle
   collections (``gc.get_stats()``, by generation) come from the same runs.
3. **System calls** on uvloop: ``strace -c -f -p PID`` over a fixed number
   of requests (``epoll_wait`` calls are uvloop's loop iterations).
4. **Where the time goes** on uvloop: ``py-spy record --nonblocking -f raw``
   while a fixed number of requests is served; the functions with the most
   samples of their own, and the share of samples under ``asgi_bgtasks``.

Run from the repository root, e.g.
``python -m bench.e2e_anatomy --requests 20000 --rounds 7``; ``--no-strace``
and ``--no-pyspy`` skip those steps (py-spy: ``pip install py-spy``). Prints
a JSON report. ``python -m bench.e2e_anatomy serve`` is the server it
starts (configured by ``ANATOMY_*`` and ``BENCH_*`` environment variables).
"""

import argparse
import asyncio
import collections
import contextlib
import gc
import json
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from bench.loadgen import post_all, run_client
from bench.servers import ROOT, AppSpec, split_cpus

VARIANTS = {  # row: variant of bench/apps.py
    "Starlette BackgroundTasks": "reference",
    "ours, no task": "none",
    "ours inline": "inline",
    "ours detached": "detached",
}
TICK = os.sysconf("SC_CLK_TCK")


# The server side: ``python -m bench.e2e_anatomy serve``.


def _name(callback: Any) -> str:
    name = getattr(callback, "__qualname__", None) or type(callback).__qualname__
    module = getattr(callback, "__module__", None) or ""
    return f"{module.split('.')[0]}:{name}" if module else name


def _install_counters(counts: "collections.Counter[str]") -> None:
    """Count loop iterations, Handles, timers, futures and Tasks (asyncio
    loop only: its methods are Python)."""
    base = asyncio.base_events.BaseEventLoop
    run_once, call_soon, call_at = base._run_once, base.call_soon, base.call_at  # type: ignore[attr-defined]
    threadsafe, create_future = base.call_soon_threadsafe, base.create_future

    def _run_once(self: Any) -> None:
        counts["loop iterations"] += 1
        run_once(self)

    def _call_soon(self: Any, callback: Any, *args: Any, **kwargs: Any) -> Any:
        counts["handles (call_soon)"] += 1
        counts["call_soon " + _name(callback)] += 1
        return call_soon(self, callback, *args, **kwargs)

    def _call_at(self: Any, when: Any, callback: Any, *args: Any, **kw: Any) -> Any:
        counts["timers (call_at/call_later)"] += 1
        counts["call_at " + _name(callback)] += 1
        return call_at(self, when, callback, *args, **kw)

    def _threadsafe(self: Any, callback: Any, *args: Any, **kwargs: Any) -> Any:
        counts["handles (call_soon_threadsafe)"] += 1
        return threadsafe(self, callback, *args, **kwargs)

    def _create_future(self: Any) -> Any:
        counts["futures (create_future)"] += 1
        return create_future(self)

    base._run_once = _run_once  # type: ignore[attr-defined]
    base.call_soon = _call_soon  # type: ignore[method-assign]
    base.call_at = _call_at  # type: ignore[method-assign]
    base.call_soon_threadsafe = _threadsafe  # type: ignore[method-assign]
    base.create_future = _create_future  # type: ignore[method-assign]

    class CountingTask(asyncio.Task):  # type: ignore[type-arg]
        def __init__(self, coro: Any, **kwargs: Any) -> None:
            counts["tasks (asyncio.Task)"] += 1
            counts["task " + _name(coro)] += 1
            super().__init__(coro, **kwargs)

    asyncio.Task = asyncio.tasks.Task = CountingTask  # type: ignore[misc]

    if sys.version_info >= (3, 12):  # Python function calls, by function
        monitoring = sys.monitoring
        tool = monitoring.PROFILER_ID
        monitoring.use_tool_id(tool, "e2e_anatomy")

        def started(code: Any, offset: int) -> None:
            counts["python calls"] += 1
            if "asgi_bgtasks" in code.co_filename:
                counts["ours " + code.co_qualname] += 1

        monitoring.register_callback(tool, monitoring.events.PY_START, started)
        monitoring.set_events(tool, monitoring.events.PY_START)


def serve() -> None:
    """Serve ``bench.apps:app``; on SIGUSR1, write the counters, the cycle
    collector's and the process's figures to ``ANATOMY_OUT``."""
    import uvicorn

    loop = os.environ.get("ANATOMY_LOOP", "uvloop")
    counts: collections.Counter[str] = collections.Counter()
    if os.environ.get("ANATOMY_COUNT") == "1":
        _install_counters(counts)
    out = Path(os.environ["ANATOMY_OUT"])

    def snapshot(*_: Any) -> None:
        report = dict(counts)
        for generation, stats in enumerate(gc.get_stats()):
            report[f"gc gen{generation} collections"] = stats["collections"]
            report[f"gc gen{generation} collected"] = stats["collected"]
        partial = out.with_suffix(".part")
        partial.write_text(json.dumps(report))
        partial.rename(out)

    signal.signal(signal.SIGUSR1, snapshot)
    uvicorn.run(
        "bench.apps:app",
        host="127.0.0.1",
        port=int(os.environ["ANATOMY_PORT"]),
        loop=loop,
        http="httptools",
        access_log=False,
        log_level="warning",
    )


# The driver.


class Served:
    """One server process and its snapshots."""

    def __init__(self, variant: str, loop: str, count: bool, folder: Path) -> None:
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            self.port = int(sock.getsockname()[1])
        self.url = f"http://127.0.0.1:{self.port}"
        self.out = folder / f"{variant}-{loop}-{self.port}.json"
        env = {
            **os.environ,
            **AppSpec(variant=variant).env(),
            "ANATOMY_LOOP": loop,
            "ANATOMY_COUNT": "1" if count else "",
            "ANATOMY_OUT": str(self.out),
            "ANATOMY_PORT": str(self.port),
        }
        server_cpus, _ = split_cpus()
        self.process = subprocess.Popen(
            [sys.executable, "-m", "bench.e2e_anatomy", "serve"],
            cwd=ROOT,
            env=env,
            preexec_fn=None
            if server_cpus is None
            else lambda: os.sched_setaffinity(0, server_cpus),
        )
        deadline = time.monotonic() + 30
        while True:
            with (
                contextlib.suppress(OSError),
                socket.create_connection(("127.0.0.1", self.port), timeout=1),
            ):
                break
            if time.monotonic() > deadline or self.process.poll() is not None:
                self.stop()
                raise RuntimeError(f"{variant} on {loop} did not start")
            time.sleep(0.05)

    def snapshot(self) -> dict[str, float]:
        """The server's counters now, and its CPU ticks (all threads)."""
        with contextlib.suppress(FileNotFoundError):
            self.out.unlink()
        self.process.send_signal(signal.SIGUSR1)
        deadline = time.monotonic() + 10
        while not self.out.exists():
            if time.monotonic() > deadline:
                raise RuntimeError("no snapshot from the server")
            time.sleep(0.005)
        report: dict[str, float] = json.loads(self.out.read_text())
        fields = Path(f"/proc/{self.process.pid}/stat").read_text()
        utime, stime = fields.rsplit(")", 1)[1].split()[11:13]
        report["cpu seconds"] = (int(utime) + int(stime)) / TICK
        return report

    def stop(self) -> None:
        self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


@contextlib.contextmanager
def serving(
    variants: list[str], loop: str, count: bool = False
) -> Iterator[dict[str, Served]]:
    with tempfile.TemporaryDirectory() as folder:
        servers: dict[str, Served] = {}
        try:
            for variant in variants:
                servers[variant] = Served(variant, loop, count, Path(folder))
            yield servers
        finally:
            for server in servers.values():
                server.stop()


def post(url: str, requests: int, connections: int) -> None:
    run_client(post_all(url, ["/"] * requests, connections))


def per_request(
    before: dict[str, float], after: dict[str, float], n: int
) -> dict[str, float]:
    return {
        key: (after.get(key, 0) - before.get(key, 0)) / n
        for key in sorted(set(before) | set(after))
        if after.get(key, 0) != before.get(key, 0) or key.startswith("gc ")
    }


def counts(requests: int, connections: int) -> dict[str, dict[str, float]]:
    """Per request, on the counting build (asyncio loop)."""
    found: dict[str, dict[str, float]] = {}
    with serving(list(VARIANTS.values()), "asyncio", count=True) as servers:
        for row, variant in VARIANTS.items():
            server = servers[variant]
            post(server.url, 2_000, connections)  # warm up
            before = server.snapshot()
            post(server.url, requests, connections)
            time.sleep(0.2)  # detached: the last tasks end
            found[row] = per_request(before, server.snapshot(), requests)
            found[row].pop("cpu seconds", None)
    return found


def cpu(requests: int, rounds: int, connections: int) -> dict[str, dict[str, float]]:
    """Per request on uvloop, not instrumented: medians of interleaved rounds."""
    samples: dict[str, list[dict[str, float]]] = {row: [] for row in VARIANTS}
    rows = list(VARIANTS)
    with serving(list(VARIANTS.values()), "uvloop") as servers:
        for server in servers.values():
            post(server.url, 2_000, connections)  # warm up
        for turn in range(rounds):
            for row in rows[turn % len(rows) :] + rows[: turn % len(rows)]:
                server = servers[VARIANTS[row]]
                before = server.snapshot()
                started = time.perf_counter()
                post(server.url, requests, connections)
                seconds = time.perf_counter() - started
                change = per_request(before, server.snapshot(), requests)
                change["req/s"] = requests / seconds
                samples[row].append(change)
    return {
        row: {
            key: statistics.median(s.get(key, 0) for s in found)
            for key in sorted({k for s in found for k in s})
        }
        for row, found in samples.items()
    }


def syscalls(requests: int, connections: int) -> dict[str, dict[str, float]]:
    """System calls per request on uvloop, under ``strace -c -f``."""
    found: dict[str, dict[str, float]] = {}
    with (
        serving(list(VARIANTS.values()), "uvloop") as servers,
        tempfile.TemporaryDirectory() as folder,
    ):
        for row, variant in VARIANTS.items():
            server = servers[variant]
            post(server.url, 2_000, connections)
            summary = Path(folder) / f"{variant}.txt"
            tracer = subprocess.Popen(
                [
                    "strace",
                    "-c",
                    "-f",
                    "-o",
                    str(summary),
                    "-p",
                    str(server.process.pid),
                ],
                stderr=subprocess.DEVNULL,
            )
            time.sleep(1.0)  # attached
            post(server.url, requests, connections)
            tracer.send_signal(signal.SIGINT)
            tracer.wait(timeout=30)
            calls: dict[str, float] = {}
            for line in summary.read_text().splitlines():
                parts = line.split()
                if len(parts) >= 5 and parts[0][0].isdigit() and parts[-1] != "total":
                    calls[parts[-1]] = int(parts[3]) / requests
            found[row] = dict(sorted(calls.items(), key=lambda kv: -kv[1]))
    return found


def profiles(requests: int, connections: int, top: int = 12) -> dict[str, Any]:
    """py-spy samples (500 Hz, native frames) while ``requests`` are served."""
    spy = shutil.which("py-spy") or str(Path(sys.executable).with_name("py-spy"))
    found: dict[str, Any] = {}
    with (
        serving(list(VARIANTS.values()), "uvloop") as servers,
        tempfile.TemporaryDirectory() as folder,
    ):
        for row, variant in VARIANTS.items():
            server = servers[variant]
            post(server.url, 2_000, connections)
            raw = Path(folder) / f"{variant}.txt"
            recorder = subprocess.Popen(
                [
                    spy,
                    "record",
                    "--nonblocking",
                    "-r",
                    "500",
                    "-f",
                    "raw",
                    "-o",
                    str(raw),
                    "-p",
                    str(server.process.pid),
                ],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
            time.sleep(1.0)
            post(server.url, requests, connections)
            recorder.send_signal(signal.SIGINT)
            recorder.wait(timeout=60)
            found[row] = _read_raw(raw, requests, top)
    return found


def _read_raw(raw: Path, requests: int, top: int) -> dict[str, Any]:
    own: collections.Counter[str] = collections.Counter()
    ours: collections.Counter[str] = collections.Counter()
    total = busy = 0
    for line in raw.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack:
            continue
        samples = int(count)
        frames = stack.split(";")
        total += samples
        leaf = frames[-1]
        if "epoll_wait" in leaf:
            continue  # idle
        busy += samples
        own[_frame(leaf)] += samples
        for frame in dict.fromkeys(_frame(f) for f in frames if "asgi_bgtasks" in f):
            ours[frame] += samples
    return {
        "busy samples per 1,000 requests": busy * 1000 / requests,
        "own": {f: n * 1000 / requests for f, n in own.most_common(top)},
        "under asgi_bgtasks": {
            f: n * 1000 / requests for f, n in ours.most_common(top)
        },
    }


def _frame(frame: str) -> str:
    # "function (path/file.py:line)" -> "function (file.py)"
    function, _, where = frame.partition(" (")
    return (
        f"{function} ({where.rstrip(')').rsplit('/', 1)[-1].split(':')[0]})"
        if where
        else function
    )


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--requests", type=int, default=20_000)
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument("--no-strace", action="store_true")
    parser.add_argument("--no-pyspy", action="store_true")
    parser.add_argument("--only", choices=["counts", "cpu", "strace", "pyspy"])
    options = parser.parse_args()
    n, c = options.requests, options.connections
    report: dict[str, Any] = {"python": sys.version.split()[0], "requests": n}
    steps = {
        "counts, 1 connection": lambda: counts(n // 4, 1),
        f"counts, {c} connections": lambda: counts(n // 4, c),
        f"cpu, uvloop, {c} connections": lambda: cpu(n, options.rounds, c),
        "syscalls, uvloop, 1 connection": lambda: syscalls(n // 4, 1),
        f"syscalls, uvloop, {c} connections": lambda: syscalls(n, c),
        f"py-spy, uvloop, {c} connections": lambda: profiles(n, c),
    }
    for name, step in steps.items():
        kind = (
            name.split(",")[0].replace("syscalls", "strace").replace("py-spy", "pyspy")
        )
        if options.only and kind != options.only:
            continue
        if (kind == "strace" and options.no_strace) or (
            kind == "pyspy" and options.no_pyspy
        ):
            continue
        print(f"... {name}", file=sys.stderr)
        report[name] = step()
    print(json.dumps(report, indent=1))


if __name__ == "__main__":
    if sys.argv[1:2] == ["serve"]:
        serve()
    else:
        main()
