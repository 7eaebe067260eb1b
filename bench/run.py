"""``make bench``: run every benchmark, then update docs/benchmarks.md and its plot.

Writes ``bench/results.json``, ``docs/img/benchmarks.png`` and the part of
``docs/benchmarks.md`` between its ``bench:start`` and ``bench:end`` markers,
and prints each target with PASS or FAIL. A missed target never fails the
run: it is a report.

Environment:

- ``BENCH_QUICK=1``: every benchmark, with fewer and shorter rounds (about
  two minutes instead of about five).
- ``BENCH_ONLY=micro,memory,e2e,cycles,overload``: only these; the other
  sections keep their last results.
- ``BENCH_PIN=0``: no CPU pinning (see ``bench/servers.py``).
"""

import asyncio
import json
import os
import platform
import re
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
FORMAT = 3  # of results.json; older results are not merged

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


def previous() -> dict[str, Any]:
    if RESULTS.exists():
        found = json.loads(RESULTS.read_text())
        if found.get("format") == FORMAT:
            return dict(found)
    return {}


def main() -> None:
    quick = os.environ.get("BENCH_QUICK") == "1"
    only = os.environ.get("BENCH_ONLY")
    names = only.split(",") if only else list(SUITES)
    unknown = set(names) - set(SUITES)
    if unknown:
        raise SystemExit(f"BENCH_ONLY: no benchmark named {', '.join(unknown)}")
    results = previous() if only else {}
    results |= {"format": FORMAT, "machine": machine()}
    for name in names:
        print(f"bench: {name}", flush=True)
        full, short = SUITES[name]
        results[name] = short() if quick else full()
        results["quick"] = {**results.get("quick", {}), name: quick}
    RESULTS.write_text(json.dumps(results, indent=2) + "\n")
    report.plot(results, PLOT)
    table = report.render(results)
    PAGE.write_text(
        re.sub(
            r"(<!-- bench:start -->\n).*(<!-- bench:end -->)",
            lambda match: f"{match[1]}{table}\n{match[2]}",
            PAGE.read_text(),
            flags=re.DOTALL,
        )
    )
    for name in SUITES:
        show(results.get(name, {}).get("targets", []))


if __name__ == "__main__":
    main()
