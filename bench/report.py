"""The results as Markdown for docs/benchmarks.md, and as a plot: every
Python's results side by side (``results`` maps "3.11", "3.13", ... to
what ``bench/run.py`` measured on it)."""

from collections.abc import Iterable
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt

from bench.e2e import FRAMEWORKS, LEAST, UNDER_TEST
from bench.targets import verdict

REFERENCE = "framework's own BackgroundTasks"
Pythons = dict[str, dict[str, Any]]


def render(pythons: Pythons) -> str:
    """The summary of every target per Python, the plot, then the details."""
    lines = [*_summary(pythons)]
    if any("micro" in r or "e2e" in r or "overload" in r for r in pythons.values()):
        lines += ["![Benchmarks](img/benchmarks.png)", ""]
    lines += _machines(pythons)
    for section, render_section in SECTIONS.items():
        found = {python: r[section] for python, r in pythons.items() if section in r}
        if found:
            lines += render_section(found)
    return "\n".join(lines)


def _summary(pythons: Pythons) -> list[str]:
    names = list(pythons)
    found: dict[str, dict[str, dict[str, Any]]] = {}
    for python, results in pythons.items():
        for section in SECTIONS:
            for row in results.get(section, {}).get("targets", []):
                found.setdefault(row["target"], {})[python] = row
    lines = [
        "### Summary",
        "",
        "Every target, per Python: **PASS** or **FAIL**; *info* is a figure "
        "reported with no bar on that Python.",
        "",
        "| target | " + " | ".join(f"Python {p}" for p in names) + " |",
        "|---|" + "---|" * len(names),
    ]
    for name, per_python in found.items():
        cells = []
        for python in names:
            row = per_python.get(python)
            if row is None:
                cells.append("—")
                continue
            mark = verdict(row)
            mark = f"*{mark}*" if row["holds"] is None else f"**{mark}**"
            cells.append(f"{row['measured']} {mark}")
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return [*lines, ""]


def _machines(pythons: Pythons) -> list[str]:
    lines = ["### Machine", ""]
    for python, results in pythons.items():
        lines.append(f"- Python {python}: {results['machine']}.")
        quick = [name for name, short in results.get("quick", {}).items() if short]
        if quick:
            lines[-1] += (
                f" **Quick run (`BENCH_QUICK=1`, fewer and shorter rounds) of: "
                f"{', '.join(quick)}.**"
            )
    return [*lines, ""]


def _union(rows: Iterable[Iterable[str]]) -> list[str]:
    """Every key, in the order first seen."""
    return list(dict.fromkeys(key for keys in rows for key in keys))


def _micro(micro: Pythons) -> list[str]:
    names = list(micro)
    rounds = ", ".join(f"{m['rounds']} on {p}" for p, m in micro.items())
    lines = [
        f"### In-process: added CPU µs per request (medians of rounds: {rounds})",
        "",
        "Each variant's CPU time per request minus its baseline's (the bare "
        "app, or Starlette's plain Response for Starlette's own), every task "
        "run to its end; IQR: the interquartile range of the rounds' "
        "differences. Bare app: "
        + ", ".join(
            f"{m['variants']['bare app']['per_request']:.2f} µs on {p}"
            for p, m in micro.items()
        )
        + ".",
        "",
        "| variant | over | "
        + " | ".join(f"{p} added µs | {p} IQR" for p in names)
        + " |",
        "|---|---|" + "---:|---:|" * len(names),
    ]
    for name in _union(m["variants"] for m in micro.values()):
        if name in ("bare app", "Starlette Response"):  # the baselines
            continue
        rows = [m["variants"].get(name) for m in micro.values()]
        baseline = next(r["baseline"] for r in rows if r)
        cells = " | ".join(
            f"{r['added']:+.2f} | {r['spread']:.2f}" if r else "— | —" for r in rows
        )
        lines.append(f"| {name} | {baseline} | {cells} |")
    return [*lines, ""]


def _memory(memory: Pythons) -> list[str]:
    names = list(memory)
    lines = [
        "### Memory per pending detached task",
        "",
        "| | " + " | ".join(f"Python {p}" for p in names) + " |",
        "|---|" + "---:|" * len(names),
        "| tasks pending | "
        + " | ".join(f"{m['pending']:,}" for m in memory.values())
        + " |",
        "| bytes per task | "
        + " | ".join(f"{m['bytes_per_task']:.0f}" for m in memory.values())
        + " |",
        "",
        "Where it was allocated, bytes per task:",
        "",
        "| line | " + " | ".join(f"Python {p}" for p in names) + " |",
        "|---|" + "---:|" * len(names),
    ]
    for where in _union(m["where"] for m in memory.values()):
        cells = " | ".join(
            f"{m['where'][where]:.0f}" if where in m["where"] else "—"
            for m in memory.values()
        )
        lines.append(f"| `{where}` | {cells} |")
    return [*lines, ""]


def _e2e(e2e: Pythons) -> list[str]:
    lines = [
        "### End to end, paired",
        "",
        f"The {REFERENCE} in absolute figures (req/s, p99, server CPU time per "
        "request), then every other server against it, loaded at the same time: "
        "medians of the windows' ratios. The `noop` task ends in its first "
        "step; the `io` task suspends once (`asyncio.sleep(0)`).",
        "",
    ]
    for python, found in e2e.items():
        lines += [
            f"#### Python {python} ({found['rounds']} windows of "
            f"{found['seconds']:g} s over {found['starts']} starts of the servers, "
            f"{found['connections']} keep-alive connections per server)",
            "",
        ]
        for run in ("noop", "io"):
            for server, frameworks in found.get(run, {}).items():
                lines += _e2e_table(f"{server}, {run} task", frameworks)
    return lines


def _e2e_table(title: str, frameworks: dict[str, Any]) -> list[str]:
    names = list(frameworks)
    head = " | ".join(f"{f} req/s | p99 | CPU/request" for f in names)
    lines = [f"| {title} | {head} |", "|---|" + "---:|" * 3 * len(names)]
    cells = " | ".join(
        f"{r['reference_rps']:,.0f} | {r['reference_p99_ms']:.1f} ms "
        f"| {r['reference_cpu_us']:.1f} µs"
        for r in (next(iter(rows.values())) for rows in frameworks.values())
    )
    lines.append(f"| {REFERENCE} | {cells} |")
    for row in frameworks[names[0]]:
        cells = " | ".join(
            f"{frameworks[f][row]['ratio']:.3f} x "
            f"| {frameworks[f][row]['p99_ratio']:.2f} x "
            f"| {frameworks[f][row]['cpu_ratio']:.2f} x"
            for f in names
        )
        lines.append(f"| {row} | {cells} |")
    client = max(r["client_cpu"] for rows in frameworks.values() for r in rows.values())
    return [*lines, "", f"Load generator: at most {client:.0%} of a CPU.", ""]


def _cycles(cycles: Pythons) -> list[str]:
    names = list(cycles)
    lines = [
        "### Reference cycles per request (Starlette, `gc.DEBUG_SAVEALL`)",
        "",
        "Objects freed only by the cycle collector, per request, and the most "
        "common of them.",
        "",
        "| server | app | "
        + " | ".join(f"{p} | {p} most common" for p in names)
        + " |",
        "|---|---|" + "---:|---|" * len(names),
    ]
    servers = _union(c for c in cycles.values())
    for server in servers:
        rows = _union(c.get(server, {}) for c in cycles.values())
        for row in rows:
            cells = []
            for found in (c.get(server, {}).get(row) for c in cycles.values()):
                if found is None:
                    cells.append("— | —")
                    continue
                types = ", ".join(
                    f"{name} {count:.2f}"
                    for name, count in found["types"].items()
                    if count >= 0.01
                )
                cells.append(f"{found['per_request']:.2f} | {types or '—'}")
            lines.append(f"| {server} | {row} | " + " | ".join(cells) + " |")
    return [*lines, ""]


def _overload(overload: Pythons) -> list[str]:
    lines: list[str] = []
    for python, found in overload.items():
        lines += _overload_one(python, found)
    return lines


def _overload_one(python: str, overload: dict[str, Any]) -> list[str]:
    io, slow = overload["io"], overload["slow"]
    lines = [
        f"### Overload, Python {python} (uvicorn, Starlette, "
        f"{overload['connections']} keep-alive connections per server, "
        f"{overload['seconds']:g} s of load)",
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


def plot(pythons: Pythons, path: Path) -> None:
    """One row per Python: added CPU µs per request in-process, end-to-end
    req/s ratios, and the servers' resident set under overload."""
    panels = {
        section: draw
        for section, draw in (
            ("micro", _plot_micro),
            ("e2e", _plot_e2e),
            ("overload", _plot_overload),
        )
        if any(section in results for results in pythons.values())
    }
    figure, axes = plt.subplots(
        len(pythons),
        len(panels),
        figsize=(7 * len(panels), 7 * len(pythons)),
        squeeze=False,
    )
    for row, (python, results) in zip(axes, pythons.items(), strict=True):
        for axis, (section, draw) in zip(row, panels.items(), strict=True):
            if section in results:
                draw(axis, results[section])
                axis.set_title(f"{axis.get_title()}, Python {python}")
            else:
                axis.set_axis_off()
    figure.tight_layout()
    figure.savefig(path, dpi=80)
    plt.close(figure)


def _plot_micro(axis: Any, micro: dict[str, Any]) -> None:
    added = {
        (
            name
            if row["baseline"] in ("bare app", "Starlette Response")
            else f"{name.removeprefix(row['baseline']).lstrip(', ')} "
            f"(over {row['baseline']})"
        ): row["added"]
        for name, row in micro["variants"].items()
        if row["added"] > 0
    }
    colors = [
        "tab:blue"
        if n.startswith("ours") or "over ours" in n
        else "tab:gray"
        if n.startswith("floor")
        else "tab:orange"
        for n in added
    ]
    axis.barh(list(added), list(added.values()), color=colors)
    axis.set_xscale("log")
    axis.invert_yaxis()
    axis.tick_params(axis="y", labelsize=8)
    axis.set_xlabel("added CPU µs per request (log scale; tasks run to the end)")
    axis.set_title("In-process (blue: ours, gray: floors)")


def _plot_e2e(axis: Any, e2e: dict[str, Any]) -> None:
    runs = e2e["noop"]
    rows = list(UNDER_TEST)
    pairs = [(s, f) for s in runs for f in FRAMEWORKS if f in runs[s]]
    width = 0.8 / len(pairs)
    for i, (server, framework) in enumerate(pairs):
        axis.barh(
            [y + i * width for y in range(len(rows))],
            [runs[server][framework][row]["ratio"] for row in rows],
            height=width,
            label=f"{server}, {framework}",
        )
    axis.set_yticks([y + 0.4 - width / 2 for y in range(len(rows))], rows)
    axis.invert_yaxis()
    axis.axvline(1.0, color="black", linewidth=0.8)
    axis.axvline(LEAST, color="tab:red", linewidth=0.8, linestyle="--")
    axis.set_xlim(0.5, 1.4)
    axis.set_xlabel(f"req/s over the {REFERENCE}\n(noop task; dashed: {LEAST:.2f})")
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
