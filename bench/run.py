"""``make bench``: run every benchmark, then update docs/benchmarks.md and its plot.

Writes ``bench/results.json``, ``docs/img/benchmarks.png`` and the part of
``docs/benchmarks.md`` between its ``bench:start`` and ``bench:end`` markers.
"""

import asyncio
import json
import os
import platform
import re
from importlib.metadata import version
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt

from bench import e2e, micro, scale

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results.json"
PLOT = ROOT / "docs" / "img" / "benchmarks.png"
PAGE = ROOT / "docs" / "benchmarks.md"
PEERS = ("Starlette, one async BackgroundTask", "asgi-background, one task")


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
        for name in ("asgi-bgtasks", "starlette", "asgi-background", "hypercorn")
    )
    return (
        f"{cpu}, {os.cpu_count()} CPUs, {platform.system()} {platform.release()}; "
        f"Python {platform.python_version()}; {packages}"
    )


def targets(results: dict[str, Any]) -> list[tuple[str, str, bool]]:
    """Each target of the project, what was measured, and whether it holds."""
    m, e, s = results["micro"], results["e2e"], results["scale"]
    inline = m["ours, one async task inline"]["added"]
    floor = m["floor, one task"]["added"]
    best_peer = min(m[peer]["added"] for peer in PEERS)
    starlette = m["Starlette, one async BackgroundTask"]["added"]
    detached = m["ours, one async task detached"]["added"]
    no_task = m["ours, no task"]["added"]
    ratio = e["ours, one task"]["vs_bare"]
    memory = s["pending"]["100000"]["memory_mib"]
    return [
        (
            "inline, one task ≤ 1.5 x the floor's added cost",
            f"{inline:.2f} µs = {inline / floor:.1f} x {floor:.2f} µs",
            inline <= 1.5 * floor,
        ),
        (
            "inline, one task below every peer",
            f"{inline:.2f} µs vs best peer {best_peer:.2f} µs",
            inline < best_peer,
        ),
        ("no task ≤ 0.3 µs over bare", f"{no_task:.2f} µs", no_task <= 0.3),
        (
            "detached ≤ Starlette's added cost",
            f"{detached:.2f} µs vs {starlette:.2f} µs",
            detached <= starlette,
        ),
        ("end to end ≥ 97 % of bare req/s", f"{ratio:.1%}", ratio >= 0.97),
        ("100k pending detached tasks ≤ 100 MB", f"{memory:.1f} MiB", memory <= 95.4),
    ]


def render(results: dict[str, Any]) -> str:
    m, e, s = results["micro"], results["e2e"], results["scale"]
    floor = m["floor, one task"]["added"]
    best_peer = min(m[peer]["added"] for peer in PEERS)
    lines = [
        f"Machine: {results['machine']}.",
        "",
        "### Added cost per request (one process, one loop)",
        "",
        "| variant | µs per request | added µs | x floor | x best peer |",
        "|---|---:|---:|---:|---:|",
    ]
    for name, row in m.items():
        added = row["added"]
        lines.append(
            f"| {name} | {row['per_request']:.2f} ± {row['spread']:.2f} "
            f"| {added:+.2f} | {added / floor:.1f} | {added / best_peer:.1f} |"
        )
    lines += [
        "",
        "### End to end (hypercorn on 127.0.0.1, 50 keep-alive connections)",
        "",
        "| app | req/s | vs bare | p50 ms | p99 ms |",
        "|---|---:|---:|---:|---:|",
    ]
    for name, row in e.items():
        lines.append(
            f"| {name} | {row['rps']:.0f} | {row['vs_bare']:.1%} "
            f"| {row['p50_ms']:.2f} | {row['p99_ms']:.2f} |"
        )
    lines += [
        "",
        "### Scale",
        "",
        "| tasks per request (inline) | µs per request | µs per task |",
        "|---:|---:|---:|",
    ]
    for k, row in s["tasks_per_request"].items():
        per_task = f"{row['per_task']:.2f}" if int(k) else "—"
        lines.append(f"| {k} | {row['per_request']:.2f} | {per_task} |")
    lines += [
        "",
        "| pending detached tasks | memory held | bytes per task | µs per task |",
        "|---:|---:|---:|---:|",
    ]
    for n, row in s["pending"].items():
        lines.append(
            f"| {int(n):,} | {row['memory_mib']:.1f} MiB "
            f"| {row['bytes_per_task']:.0f} | {row['us_per_task']:.2f} |"
        )
    lines += ["", "### Targets", "", "| target | measured | holds |", "|---|---|---|"]
    for target, measured, holds in targets(results):
        lines.append(f"| {target} | {measured} | {'yes' if holds else '**no**'} |")
    lines += ["", "![Added cost per request](img/benchmarks.png)"]
    return "\n".join(lines)


def plot(results: dict[str, Any]) -> None:
    m = results["micro"]
    names = [n for n, row in m.items() if row["added"] > 0 and "one sync" not in n]
    added = [m[name]["added"] for name in names]
    figure, axis = plt.subplots(figsize=(9, 5))
    colors = ["tab:blue" if name.startswith("ours") else "tab:gray" for name in names]
    axis.barh(names, added, color=colors)
    axis.set_xscale("log")
    axis.set_xlabel("added µs per request (log scale; tasks run to their end)")
    axis.invert_yaxis()
    axis.set_title("asgi-bgtasks vs the floor and peers (async no-op task)")
    for y, value in enumerate(added):
        axis.text(value, y, f" {value:.2f}", va="center", fontsize=8)
    figure.tight_layout()
    figure.savefig(PLOT, dpi=110)


def main() -> None:
    results = {
        "machine": machine(),
        "micro": asyncio.run(micro.measure()),
        "e2e": e2e.measure(),
        "scale": asyncio.run(scale.measure()),
    }
    RESULTS.write_text(json.dumps(results, indent=2) + "\n")
    results = json.loads(RESULTS.read_text())  # keys as the page reads them
    plot(results)
    table = render(results)
    page = PAGE.read_text()
    PAGE.write_text(
        re.sub(
            r"(<!-- bench:start -->\n).*(<!-- bench:end -->)",
            lambda match: f"{match[1]}{table}\n{match[2]}",
            page,
            flags=re.DOTALL,
        )
    )
    print(table)


if __name__ == "__main__":
    main()
