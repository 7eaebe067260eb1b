"""Overload: tasks that take time, at full load, under uvicorn and Starlette.

- ``io``: 50 ms async tasks (``asyncio.sleep(0.05)``), ours with default
  options paired with Starlette's own ``BackgroundTasks`` (same load, same
  time, 64 keep-alive connections each, as in ``bench/e2e.py``). The
  framework runs them all concurrently; ours must keep up: req/s and p99
  against the framework's, the servers' peak resident set, and how long
  the backlog takes to drain once the load stops.
- ``slow``: tasks slower than arrival (ours alone, long sleeps behind a
  small ``max_pending``): the backlog must stay bounded (requests are held
  at their final response message), so memory stays flat while latency
  rises instead.

While loaded, each server's ``/stats`` and ``/proc/<pid>/status`` are
sampled every ``SAMPLE_EVERY`` seconds.
"""

import asyncio
import statistics
import time
from typing import Any

from bench.loadgen import Load, get_json, load_together, run_client
from bench.servers import AppSpec, Server, pinned, serving, split_cpus
from bench.targets import show, target

CONNECTIONS = 64
SAMPLE_EVERY = 0.25
IO_TASK_SECONDS = 0.05
SLOW_TASK_SECONDS = 0.5
SLOW_MAX_PENDING = 1_000
RSS_MIB = 150
DRAINED_WITHIN = 5.0


def measure(seconds: float = 10.0, drain_limit: float = 60.0) -> dict[str, Any]:
    server_cpus, client_cpus = split_cpus()
    with pinned(client_cpus):
        io = _io(seconds, drain_limit, server_cpus)
        slow = _slow(seconds, drain_limit, server_cpus)
    return {
        "seconds": seconds,
        "connections": CONNECTIONS,
        "io": io,
        "slow": slow,
        "targets": targets(io, slow),
    }


def _io(seconds: float, drain_limit: float, cpus: set[int] | None) -> dict[str, Any]:
    reference = AppSpec("starlette", "reference", IO_TASK_SECONDS)
    ours = AppSpec("starlette", "default", IO_TASK_SECONDS)
    stop = drain_limit + 5
    with (
        serving("uvicorn", ours, cpus, stop) as mine,
        serving("uvicorn", reference, cpus, stop) as theirs,
    ):
        loads, samples = run_client(_sampled([mine, theirs], seconds))
        drained = run_client(_drained([mine, theirs], drain_limit))
        memory = [server.memory_mib() for server in (mine, theirs)]
    ours_load, their_load = loads
    return {
        "ours": _summary(ours_load, samples[0], drained[0], memory[0]),
        "reference": _summary(their_load, samples[1], drained[1], memory[1]),
        "ratio": ours_load.rate / their_load.rate,
        "p99_ratio": ours_load.percentile(0.99) / their_load.percentile(0.99),
    }


def _slow(seconds: float, drain_limit: float, cpus: set[int] | None) -> dict[str, Any]:
    spec = AppSpec(
        "starlette", "default", SLOW_TASK_SECONDS, max_pending=SLOW_MAX_PENDING
    )
    with serving("uvicorn", spec, cpus, stop_within=5) as mine:
        (load,), (samples,) = run_client(_sampled([mine], seconds))
        (drained,) = run_client(_drained([mine], drain_limit))
        memory = mine.memory_mib()
    third = seconds / 3
    return {
        "task_seconds": SLOW_TASK_SECONDS,
        "max_pending": SLOW_MAX_PENDING,
        **_summary(load, samples, drained, memory),
        "first_third": _window(load, 0, third),
        "last_third": _window(load, seconds - third, seconds),
        "rss_mib_at_third": _at(samples, third)["rss"],
    }


async def _sampled(
    servers: list[Server], seconds: float
) -> tuple[list[Load], list[list[dict[str, float]]]]:
    """Load every server together; meanwhile sample their stats and memory."""
    samples: list[list[dict[str, float]]] = [[] for _ in servers]
    loading = asyncio.ensure_future(
        load_together([s.url for s in servers], CONNECTIONS, seconds)
    )
    started = time.perf_counter()
    while not loading.done():
        for server, found in zip(servers, samples, strict=True):
            stats = await get_json(server.url + "/stats")
            found.append(
                {"t": time.perf_counter() - started, **stats, **server.memory_mib()}
            )
        await asyncio.wait([loading], timeout=SAMPLE_EVERY)
    return loading.result(), samples


async def _drained(servers: list[Server], limit: float) -> list[dict[str, Any]]:
    """Per server: seconds until no task is outstanding (None: not within
    ``limit`` seconds) and how many still were then."""
    started = time.perf_counter()
    drained: list[dict[str, Any]] = [{"seconds": None, "left": None} for _ in servers]
    while time.perf_counter() - started < limit:
        for server, found in zip(servers, drained, strict=True):
            if found["seconds"] is None:
                found["left"] = (await get_json(server.url + "/stats"))["outstanding"]
                if found["left"] == 0:
                    found["seconds"] = time.perf_counter() - started
        if all(found["seconds"] is not None for found in drained):
            break
        await asyncio.sleep(0.05)
    return drained


def _summary(
    load: Load,
    samples: list[dict[str, float]],
    drained: dict[str, Any],
    memory: dict[str, float],
) -> dict[str, Any]:
    first, last = samples[0], samples[-1]
    return {
        "rps": load.rate,
        "tasks_per_second": (last["finished"] - first["finished"])
        / (last["t"] - first["t"]),
        "p50_ms": load.percentile(0.5) * 1000,
        "p99_ms": load.percentile(0.99) * 1000,
        "peak_rss_mib": memory["peak"],
        "rss_mib_after": memory["rss"],
        "peak_outstanding": max(s["outstanding"] for s in samples),
        "peak_pending": max(s.get("pending", 0) for s in samples),
        "drained_seconds": drained["seconds"],
        "left_undrained": drained["left"],
        "timeline": [
            {key: sample[key] for key in ("t", "rss", "outstanding")}
            for sample in samples
        ],
    }


def _window(load: Load, start: float, end: float) -> dict[str, float]:
    """Requests sent between ``start`` and ``end``: their rate, p50, p99."""
    latencies = sorted(
        latency
        for sent, latency in zip(load.sent_at, load.latencies, strict=True)
        if start <= sent < end
    )
    return {
        "rps": len(latencies) / (end - start),
        "p50_ms": statistics.median(latencies) * 1000,
        "p99_ms": latencies[int(len(latencies) * 0.99)] * 1000,
    }


def _at(samples: list[dict[str, float]], t: float) -> dict[str, float]:
    return min(samples, key=lambda sample: abs(sample["t"] - t))


def targets(io: dict[str, Any], slow: dict[str, Any]) -> list[dict[str, Any]]:
    """The overload targets (kept from v0.2)."""
    ours, drained = io["ours"], io["ours"]["drained_seconds"]
    growth = slow["rss_mib_after"] - slow["rss_mib_at_third"]
    return [
        target(
            "overload io: ≥ 0.95 x the framework's req/s",
            io["ratio"] >= 0.95,
            f"{io['ratio']:.3f} x",
        ),
        target(
            "overload io: p99 ≤ 1.5 x the framework's",
            io["p99_ratio"] <= 1.5,
            f"{io['p99_ratio']:.2f} x ({ours['p99_ms']:.0f} ms vs "
            f"{io['reference']['p99_ms']:.0f} ms)",
        ),
        target(
            f"overload io: peak RSS ≤ {RSS_MIB} MiB",
            ours["peak_rss_mib"] <= RSS_MIB,
            f"{ours['peak_rss_mib']:.0f} MiB",
        ),
        target(
            f"overload io: backlog drained within {DRAINED_WITHIN:.0f} s",
            drained is not None and drained <= DRAINED_WITHIN,
            "not drained" if drained is None else f"{drained:.1f} s",
        ),
        target(
            # Tasks count pending from add_task on, and held requests all go
            # once the queue is below the bound: per connection, one request
            # let go past it and one in flight or held (one task each here).
            "overload slow: pending ≤ max_pending + two tasks per connection",
            slow["peak_pending"] <= SLOW_MAX_PENDING + 2 * CONNECTIONS,
            f"peak {slow['peak_pending']:,} (max_pending {SLOW_MAX_PENDING:,}, "
            f"{CONNECTIONS} connections)",
        ),
        target(
            "overload slow: RSS flat over the last two thirds (≤ 10 MiB growth)",
            growth <= 10,
            f"{growth:+.0f} MiB",
        ),
    ]


if __name__ == "__main__":
    show(measure(seconds=4, drain_limit=15)["targets"])
