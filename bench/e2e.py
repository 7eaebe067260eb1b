"""End to end, paired: the servers under test and the reference server are
loaded at the same time.

For each server (uvicorn on uvloop and httptools; hypercorn on uvloop) and
framework (Starlette, FastAPI), the reference is the framework's own
``BackgroundTasks`` with one trivial async task a request; the servers
under test are a second copy of the reference (the control), ours with no
task, ours inline and ours detached (``bench/apps.py``). All of them share
one CPU, the load generator has the others. Each window loads every one of
them at once, with the same number of keep-alive connections each, so
whatever else the machine does hits them all alike and they all have the
same history; a server's req/s, p99 and CPU time per request are divided
by the reference's in that same window. Windows rotate which server's
connections start first; the median of the windows is reported.

Two runs: ``noop``, the task ends in its first step, under both servers
(the targets: on Python 3.13 and later, ours inline and detached ≥ 0.92 x
the reference's req/s, p99 no worse, the control within ±3 %; on older
Pythons the same figures are reported with no bar); ``io``, the task
suspends once (``asyncio.sleep(0)``), under uvicorn (reported).

Servers are started afresh a few times over the windows: two processes
of the same app can differ by a few percent for the whole of their lives
(memory layout, hash seeds). Loading one server under test at a time with
the reference (which then has four times the history of any of them)
favoured the servers under test by about 4 % under hypercorn, control
included.
"""

import contextlib
import statistics
import sys
import time
from dataclasses import replace
from typing import Any

from bench.loadgen import load_together, run_client
from bench.servers import AppSpec, Server, pinned, serving, split_cpus
from bench.targets import reported, show, target

SERVERS = ("uvicorn", "hypercorn")
FRAMEWORKS = ("starlette", "fastapi")
UNDER_TEST = {  # row: variant of bench/apps.py
    "control (second reference)": "reference",
    "ours, no task": "none",
    "ours inline add_task": "inline",
    "ours detached add_task": "detached",
}
VARIANTS = {"reference": "reference", **UNDER_TEST}  # the reference divides the rest
CONTROL = "control (second reference)"
WITH_TASK = ("ours inline add_task", "ours detached add_task")
# run: (task shape, servers, rows under test)
RUNS = {
    "noop": ("noop", SERVERS, tuple(UNDER_TEST)),
    "io": ("io", ("uvicorn",), (CONTROL, *WITH_TASK)),
}
LEAST = 0.92  # of the reference's req/s, for ours with a task
BAR = sys.version_info >= (3, 13)  # older Pythons: reported, no bar
P99_SLACK = 1.05  # "p99 no worse": ≤ this, or ≤ the control's p99 ratio if higher


def measure(
    rounds: int = 21, seconds: float = 2.0, connections: int = 32, starts: int = 3
) -> Any:
    """``{run: {server: {framework: {row: medians}}}}``, the method and the
    targets: ``rounds`` windows in all per server and framework, the servers
    started afresh ``starts`` times."""
    server_cpus, client_cpus = split_cpus()
    results: dict[str, Any] = {
        "rounds": rounds,
        "seconds": seconds,
        "connections": connections,
        "starts": starts,
        "pinned": server_cpus is not None,
    }
    with pinned(client_cpus):
        for run, (shape, servers, rows) in RUNS.items():
            results[run] = {}
            for server in servers:
                results[run][server] = {}
                for framework in FRAMEWORKS:
                    windows = []
                    for start in range(starts):
                        windows += _windows(
                            server,
                            AppSpec(framework, shape=shape),
                            rows,
                            server_cpus,
                            range(
                                start * rounds // starts,
                                (start + 1) * rounds // starts,
                            ),
                            seconds,
                            connections,
                        )
                    results[run][server][framework] = {
                        row: _medians([window[row] for window in windows])
                        for row in rows
                    }
    results["targets"] = targets(results)
    return results


def _windows(
    server: str,
    app: AppSpec,
    rows: tuple[str, ...],
    cpus: set[int] | None,
    turns: range,
    seconds: float,
    connections: int,
) -> list[dict[str, dict[str, float]]]:
    """Start every server, warm them up, and load them for each turn."""
    with contextlib.ExitStack() as stack:
        servers = {
            row: stack.enter_context(
                serving(server, replace(app, variant=VARIANTS[row]), cpus)
            )
            for row in ("reference", *rows)
        }
        _window(servers, connections, seconds / 2, turn=0)
        return [_window(servers, connections, seconds, turn) for turn in turns]


def _window(
    servers: dict[str, Server], connections: int, seconds: float, turn: int
) -> dict[str, dict[str, float]]:
    """Load every server at once; each one's figures against the reference's."""
    names = list(servers)
    names = names[turn % len(names) :] + names[: turn % len(names)]
    before = {name: server.cpu_seconds() for name, server in servers.items()}
    cpu, wall = time.process_time(), time.perf_counter()
    loads = run_client(
        load_together([servers[name].url for name in names], connections, seconds)
    )
    client_cpu = (time.process_time() - cpu) / (time.perf_counter() - wall)
    found = {
        name: (load, (servers[name].cpu_seconds() - before[name]) * 1e6)
        for name, load in zip(names, loads, strict=True)
    }
    reference, reference_cpu = found.pop("reference")
    reference_us = reference_cpu / len(reference.latencies)
    return {
        name: {
            "rps": load.rate,
            "p99_ms": load.percentile(0.99) * 1000,
            "cpu_us": cpu_us / len(load.latencies),
            "reference_rps": reference.rate,
            "reference_p99_ms": reference.percentile(0.99) * 1000,
            "reference_cpu_us": reference_us,
            "ratio": load.rate / reference.rate,
            "p99_ratio": load.percentile(0.99) / reference.percentile(0.99),
            "cpu_ratio": cpu_us / len(load.latencies) / reference_us,
            "client_cpu": client_cpu,
        }
        for name, (load, cpu_us) in found.items()
    }


def _medians(windows: list[dict[str, float]]) -> dict[str, float]:
    return {key: statistics.median(w[key] for w in windows) for key in windows[0]}


def targets(results: dict[str, Any]) -> list[dict[str, Any]]:
    """The end-to-end targets for every server and framework (with no bar
    before Python 3.13), then the io run's figures, reported."""
    found = []
    for server, frameworks in results["noop"].items():
        for framework, rows in frameworks.items():
            where = f"end to end, {server}, {framework}"
            control = rows[CONTROL]
            p99_bound = max(P99_SLACK, control["p99_ratio"])
            for row in WITH_TASK:
                ratio, p99 = rows[row]["ratio"], rows[row]["p99_ratio"]
                found += [
                    target(
                        f"{where}: {row} ≥ {LEAST:.2f} x req/s",
                        ratio >= LEAST if BAR else None,
                        f"{ratio:.3f} x",
                    ),
                    target(
                        f"{where}: {row} p99 no worse (≤ {P99_SLACK:.2f} x, "
                        "or the control's)",
                        p99 <= p99_bound if BAR else None,
                        f"{p99:.2f} x (bound {p99_bound:.2f} x)",
                    ),
                ]
            found.append(
                target(
                    f"{where}: control within ±3 % req/s",
                    abs(control["ratio"] - 1) <= 0.03 if BAR else None,
                    f"{control['ratio']:.3f} x",
                )
            )
    for server, frameworks in results["io"].items():
        for framework, rows in frameworks.items():
            for row in (*WITH_TASK, CONTROL):
                found.append(
                    reported(
                        f"end to end, io task, {server}, {framework}: {row}",
                        f"{rows[row]['ratio']:.3f} x req/s, "
                        f"p99 {rows[row]['p99_ratio']:.2f} x",
                    )
                )
    return found


if __name__ == "__main__":
    show(measure(rounds=5, seconds=1.0)["targets"])
