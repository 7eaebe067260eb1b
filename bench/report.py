"""The results as Markdown tables for docs/benchmarks.md, and as a plot."""

from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt

from bench.e2e import FRAMEWORKS, SERVERS

REFERENCE = "framework's own BackgroundTasks"


def render(results: dict[str, Any]) -> str:
    """Every section that ``results`` holds, targets first."""
    lines = [f"Machine: {results['machine']}.", ""]
    quick = [name for name, short in results.get("quick", {}).items() if short]
    if quick:
        lines += [
            f"**Quick run (`BENCH_QUICK=1`, fewer and shorter rounds) of: "
            f"{', '.join(quick)}.**",
            "",
        ]
    lines += _targets(results)
    for section, render_section in SECTIONS.items():
        if section in results:
            lines += render_section(results[section])
    if "micro" in results or "e2e" in results:
        lines += ["![Benchmarks](img/benchmarks.png)", ""]
    return "\n".join(lines)


def _targets(results: dict[str, Any]) -> list[str]:
    lines = ["### Targets", "", "| target | measured | holds |", "|---|---|---|"]
    for section in SECTIONS:
        for found in results.get(section, {}).get("targets", []):
            holds = "yes" if found["holds"] else "**no**"
            lines.append(f"| {found['target']} | {found['measured']} | {holds} |")
    return [*lines, ""]


def _micro(micro: dict[str, Any]) -> list[str]:
    floor = micro["variants"]["floor, one task"]["added"]
    lines = [
        f"### Added CPU time per request, in-process ({micro['rounds']} rounds)",
        "",
        "| variant | CPU µs per request | added µs | IQR | x floor, one task |",
        "|---|---:|---:|---:|---:|",
    ]
    for name, row in micro["variants"].items():
        lines.append(
            f"| {name} | {row['per_request']:.2f} | {row['added']:+.2f} "
            f"| {row['spread']:.2f} | {row['added'] / floor:.1f} |"
        )
    return [*lines, ""]


def _memory(memory: dict[str, Any]) -> list[str]:
    lines = [
        f"### Memory per pending detached task ({memory['tasks']:,} pending)",
        "",
        f"{memory['bytes_per_task']:.0f} bytes per task. Where it was allocated:",
        "",
        "| line | bytes per task |",
        "|---|---:|",
    ]
    lines += [f"| `{where}` | {size:.0f} |" for where, size in memory["where"].items()]
    return [*lines, ""]


def _e2e(e2e: dict[str, Any]) -> list[str]:
    lines = [
        f"### End to end, paired ({e2e['rounds']} windows of {e2e['seconds']:g} s"
        f" over {e2e['starts']} starts of the servers, {e2e['connections']} "
        "keep-alive connections per server)",
        "",
        f"The {REFERENCE} in absolute figures (req/s, p99, server CPU time per "
        "request), then every other server against it, loaded at the same time: "
        "medians of the windows' ratios.",
        "",
    ]
    for server in SERVERS:
        head = " | ".join(f"{f} req/s | p99 | CPU/request" for f in FRAMEWORKS)
        lines += [f"| {server} | {head} |", "|---|" + "---:|" * 3 * len(FRAMEWORKS)]
        reference = [next(iter(e2e[server][f].values())) for f in FRAMEWORKS]
        cells = " | ".join(
            f"{r['reference_rps']:,.0f} | {r['reference_p99_ms']:.1f} ms "
            f"| {r['reference_cpu_us']:.1f} µs"
            for r in reference
        )
        lines.append(f"| {REFERENCE} | {cells} |")
        for row in e2e[server][FRAMEWORKS[0]]:
            cells = " | ".join(
                f"{e2e[server][f][row]['ratio']:.3f} x "
                f"| {e2e[server][f][row]['p99_ratio']:.2f} x "
                f"| {e2e[server][f][row]['cpu_ratio']:.2f} x"
                for f in FRAMEWORKS
            )
            lines.append(f"| {row} | {cells} |")
        client = max(
            r["client_cpu"] for f in FRAMEWORKS for r in e2e[server][f].values()
        )
        lines += ["", f"Load generator: at most {client:.0%} of a CPU.", ""]
    return lines


def _cycles(cycles: dict[str, Any]) -> list[str]:
    lines = [
        "### Reference cycles per request (Starlette, `gc.DEBUG_SAVEALL`)",
        "",
        "| server | app | objects freed only by the cycle collector, per request "
        "| most common |",
        "|---|---|---:|---|",
    ]
    for server, rows in cycles.items():
        for row, found in rows.items():
            types = ", ".join(
                f"{name} {count:.2f}"
                for name, count in found["types"].items()
                if count >= 0.01
            )
            lines.append(
                f"| {server} | {row} | {found['per_request']:.2f} | {types or '—'} |"
            )
    return [*lines, ""]


def _overload(overload: dict[str, Any]) -> list[str]:
    io, slow = overload["io"], overload["slow"]
    lines = [
        f"### Overload (uvicorn, Starlette, {overload['connections']} keep-alive "
        f"connections per server, {overload['seconds']:g} s of load)",
        "",
        "50 ms async tasks, ours with default options, paired with Starlette's "
        "own BackgroundTasks:",
        "",
        f"| | ours | {REFERENCE} |",
        "|---|---:|---:|",
    ]
    for label, key, fmt in _OVERLOAD_ROWS:
        lines.append(
            f"| {label} | {_cell(io['ours'][key], fmt)} "
            f"| {_cell(io['reference'][key], fmt)} |"
        )
    first, last = slow["first_third"], slow["last_third"]
    lines += [
        "",
        f"Tasks slower than arrival: {slow['task_seconds']:g} s async tasks, "
        f"ours alone with `max_pending={slow['max_pending']:,}`:",
        "",
        "| | first third of the load | last third |",
        "|---|---:|---:|",
        f"| req/s | {first['rps']:,.0f} | {last['rps']:,.0f} |",
        f"| p50 ms | {first['p50_ms']:.1f} | {last['p50_ms']:.1f} |",
        f"| p99 ms | {first['p99_ms']:.1f} | {last['p99_ms']:.1f} |",
        f"| RSS MiB | {slow['rss_mib_at_third']:.0f} | {slow['rss_mib_after']:.0f} |",
        "",
        f"Peak pending {slow['peak_pending']:,}, peak outstanding "
        f"{slow['peak_outstanding']:,}; "
        + (
            f"{slow['left_undrained']:,} tasks were still outstanding when the "
            "harness stopped waiting for the backlog to drain."
            if slow["drained_seconds"] is None
            else f"drained {slow['drained_seconds']:.1f} s after the load stopped."
        ),
        "",
    ]
    return lines


_OVERLOAD_ROWS = [
    ("req/s", "rps", "{:,.0f}"),
    ("tasks finished per second", "tasks_per_second", "{:,.0f}"),
    ("p50 ms", "p50_ms", "{:.1f}"),
    ("p99 ms", "p99_ms", "{:.1f}"),
    ("peak RSS MiB", "peak_rss_mib", "{:.0f}"),
    ("peak tasks outstanding", "peak_outstanding", "{:,}"),
    ("drained, s after the load", "drained_seconds", "{:.2f}"),
]


def _cell(value: Any, fmt: str) -> str:
    return "not drained" if value is None else fmt.format(value)


SECTIONS = {
    "micro": _micro,
    "memory": _memory,
    "e2e": _e2e,
    "cycles": _cycles,
    "overload": _overload,
}


def plot(results: dict[str, Any], path: Path) -> None:
    """Added CPU µs per request in-process, end-to-end req/s ratios, and the
    servers' resident set under overload."""
    figure, (micro, e2e, overload) = plt.subplots(1, 3, figsize=(18, 5.5))
    if "micro" in results:
        _plot_micro(micro, results["micro"])
    if "e2e" in results:
        _plot_e2e(e2e, results["e2e"])
    if "overload" in results:
        _plot_overload(overload, results["overload"])
    figure.tight_layout()
    figure.savefig(path, dpi=90)
    plt.close(figure)


def _plot_micro(axis: Any, micro: dict[str, Any]) -> None:
    added = {
        name: row["added"]
        for name, row in micro["variants"].items()
        if row["added"] > 0
    }
    colors = ["tab:blue" if n.startswith("ours") else "tab:gray" for n in added]
    axis.barh(list(added), list(added.values()), color=colors)
    axis.set_xscale("log")
    axis.invert_yaxis()
    axis.set_xlabel("added CPU µs per request (log scale; tasks run to the end)")
    axis.set_title("In-process, no-op async tasks")


def _plot_e2e(axis: Any, e2e: dict[str, Any]) -> None:
    rows = list(e2e[SERVERS[0]][FRAMEWORKS[0]])
    pairs = [(s, f) for s in SERVERS for f in FRAMEWORKS]
    width = 0.8 / len(pairs)
    for i, (server, framework) in enumerate(pairs):
        axis.barh(
            [y + i * width for y in range(len(rows))],
            [e2e[server][framework][row]["ratio"] for row in rows],
            height=width,
            label=f"{server}, {framework}",
        )
    axis.set_yticks([y + 0.4 - width / 2 for y in range(len(rows))], rows)
    axis.invert_yaxis()
    axis.axvline(1.0, color="black", linewidth=0.8)
    axis.set_xlim(0.5, 1.4)
    axis.set_xlabel("req/s against the framework's own BackgroundTasks")
    axis.set_title("End to end, loaded at the same time")
    axis.legend(fontsize=8, loc="lower right")


def _plot_overload(axis: Any, overload: dict[str, Any]) -> None:
    for label, found in (
        ("ours, 50 ms tasks", overload["io"]["ours"]),
        (f"{REFERENCE}, 50 ms tasks", overload["io"]["reference"]),
        ("ours, tasks slower than arrival", overload["slow"]),
    ):
        timeline = found["timeline"]
        axis.plot([s["t"] for s in timeline], [s["rss"] for s in timeline], label=label)
    axis.set_xlabel("seconds of load")
    axis.set_ylabel("server RSS, MiB")
    axis.set_title("Overload (uvicorn, Starlette)")
    axis.legend(fontsize=8)
