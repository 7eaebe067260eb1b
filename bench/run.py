"""Run every benchmark on this Python, then update docs/benchmarks.md and its plot.

``make bench`` runs this once per Python (``bench/pythons.sh``), each in
its own venv. Results are kept per Python ("3.11", "3.13", ...) in
``bench/results.json``: a run replaces its own Python's and keeps the
others' from their last run. Writes ``docs/img/benchmarks.png`` and the
part of ``docs/benchmarks.md`` between its ``bench:start`` and
``bench:end`` markers (every Python side by side), and prints each target
of this run with PASS or FAIL. A missed target never fails the run: it is
a report.

Environment:

- ``BENCH_QUICK=1``: every benchmark, with fewer and shorter rounds (about
  two minutes instead of about five).
- ``BENCH_ONLY=micro,memory,e2e,cycles,overload``: only these; the other
  sections keep this Python's last results.
- ``BENCH_PIN=0``: no CPU pinning (see ``bench/servers.py``).
"""

import asyncio
import json
import os
import platform
import re
import sys
from collections.abc import Callable
from importlib.metadata import version
from pathlib import Path
from typing import Any

from bench import cycles, e2e, memory, micro, overload, report
from bench.targets import show

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results.json"
PLOT = ROOT / "docs" / "img" / "benchmarks.png"
PAGE = ROOT / "docs" / "benchmarks.md"
FORMAT = 4  # of results.json; older results are not kept
PYTHON = f"{sys.version_info.major}.{sys.version_info.minor}"

# name: (full run, quick run)
SUITES: dict[str, tuple[Callable[[], Any], Callable[[], Any]]] = {
    "micro": (
        lambda: asyncio.run(micro.measure()),
        lambda: asyncio.run(micro.measure(rounds=11)),
    ),
    "memory": (
        lambda: asyncio.run(memory.bytes_per_pending_task()),
        lambda: asyncio.run(memory.bytes_per_pending_task(5_000)),
    ),
    "e2e": (
        e2e.measure,
        lambda: e2e.measure(rounds=6, seconds=1.0, starts=2),
    ),
    "cycles": (cycles.measure, lambda: cycles.measure(0.5)),
    "overload": (
        overload.measure,
        lambda: overload.measure(seconds=4, drain_limit=15),
    ),
}


def machine() -> str:
    cpu = next(
        (
            line.split(":", 1)[1].strip()
            for line in Path("/proc/cpuinfo").read_text().splitlines()
            if line.startswith("model name")
        ),
        platform.processor() or "unknown CPU",
    )
    packages = ", ".join(
        f"{name} {version(name)}"
        for name in (
            "asgi-bgtasks",
            "starlette",
            "fastapi",
            "uvicorn",
            "hypercorn",
            "uvloop",
            "asgi-background",
        )
    )
    load = ", ".join(f"{x:.1f}" for x in os.getloadavg())
    return (
        f"{cpu}, {os.cpu_count()} CPUs, {platform.system()} {platform.release()}"
        f" (load average {load} at the start); Python {platform.python_version()};"
        f" {packages}"
    )


def previous() -> dict[str, dict[str, Any]]:
    """Every Python's last results."""
    if RESULTS.exists():
        found = json.loads(RESULTS.read_text())
        if found.get("format") == FORMAT:
            return dict(found["pythons"])
    return {}


def main() -> None:
    quick = os.environ.get("BENCH_QUICK") == "1"
    only = os.environ.get("BENCH_ONLY")
    names = only.split(",") if only else list(SUITES)
    unknown = set(names) - set(SUITES)
    if unknown:
        raise SystemExit(f"BENCH_ONLY: no benchmark named {', '.join(unknown)}")
    pythons = previous()
    results = pythons.get(PYTHON, {}) if only else {}
    results |= {"machine": machine()}
    for name in names:
        print(f"bench: Python {PYTHON}: {name}", flush=True)
        full, short = SUITES[name]
        results[name] = short() if quick else full()
        results["quick"] = {**results.get("quick", {}), name: quick}
    pythons[PYTHON] = results
    pythons = dict(sorted(pythons.items(), key=lambda item: _version(item[0])))
    RESULTS.write_text(
        json.dumps({"format": FORMAT, "pythons": pythons}, indent=2) + "\n"
    )
    report.plot(pythons, PLOT)
    table = report.render(pythons)
    PAGE.write_text(
        re.sub(
            r"(<!-- bench:start -->\n).*(<!-- bench:end -->)",
            lambda match: f"{match[1]}{table}\n{match[2]}",
            PAGE.read_text(),
            flags=re.DOTALL,
        )
    )
    print(f"bench: Python {PYTHON}:")
    for name in SUITES:
        show(results.get(name, {}).get("targets", []))


def _version(name: str) -> tuple[int, ...]:
    return tuple(int(part) for part in name.split("."))


if __name__ == "__main__":
    main()
