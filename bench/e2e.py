"""End to end: hypercorn on 127.0.0.1, with and without the middleware.

Each app runs in its own hypercorn (one worker); a raw keep-alive client
(``bench/loadgen.py``, 50 connections) sends a fixed number of requests per
round, rounds interleaved across the apps in rotating order. The servers are
pinned to the last CPU and the client to the first, so they do not compete
for one core; still, compare the ratios rather than the absolute rates.
"""

import asyncio
import contextlib
import os
import statistics
import time

from bench.loadgen import timed_posts
from examples.serve import run_hypercorn

APPS = {
    "bare app": "bench.apps:bare",
    "bare app, second server (control)": "bench.apps:bare",
    "ours, no task": "bench.apps:with_middleware",
    "ours, one task": "bench.apps:with_one_task",
    "ours, one task inline": "bench.apps:with_one_task_inline",
}
CONNECTIONS = 50


def measure(requests: int = 10_000, rounds: int = 7) -> dict[str, dict[str, float]]:
    """``{app: {"rps", "vs_bare", "p50_ms", "p99_ms"}}``: the median rate, the
    median of its per-round ratios to the bare app's rate, and latencies."""
    rates: dict[str, list[float]] = {name: [] for name in APPS}
    latencies: dict[str, list[float]] = {name: [] for name in APPS}
    with contextlib.ExitStack() as stack:
        servers = {
            name: stack.enter_context(run_hypercorn(app, "--log-level", "warning"))
            for name, app in APPS.items()
        }
        cpus = sorted(os.sched_getaffinity(0))
        os.sched_setaffinity(0, cpus[:1])
        for server in servers.values():
            os.sched_setaffinity(server.process.pid, cpus[-1:])
        for server in servers.values():  # warm up
            asyncio.run(timed_posts(server.url, ["/"] * 2_000, CONNECTIONS))
        names = list(servers)
        for round_ in range(rounds):  # rotate the order: no app always goes first
            for name in names[round_ % len(names) :] + names[: round_ % len(names)]:
                server = servers[name]
                started = time.perf_counter()
                taken = asyncio.run(
                    timed_posts(server.url, ["/"] * requests, CONNECTIONS)
                )
                rates[name].append(requests / (time.perf_counter() - started))
                latencies[name] += taken
    results = {}
    for name in APPS:
        ordered = sorted(latencies[name])
        ratios = [
            mine / bare
            for mine, bare in zip(rates[name], rates["bare app"], strict=True)
        ]
        results[name] = {
            "rps": statistics.median(rates[name]),
            "vs_bare": statistics.median(ratios),
            "p50_ms": ordered[len(ordered) // 2] * 1000,
            "p99_ms": ordered[int(len(ordered) * 0.99)] * 1000,
        }
    return results


if __name__ == "__main__":
    for name, result in measure().items():
        print(
            f"{name:34} {result['rps']:6.0f} req/s ({result['vs_bare']:.1%})"
            f"  p50 {result['p50_ms']:.2f} ms"
            f"  p99 {result['p99_ms']:.2f} ms"
        )
