"""A target: what it asks, what was measured, whether it holds.

A missed target is reported, never raised: the benchmarks are a report.
A figure reported without a bar has ``holds`` None.
"""

from typing import Any


def target(name: str, holds: bool | None, measured: str) -> dict[str, Any]:
    return {
        "target": name,
        "measured": measured,
        "holds": None if holds is None else bool(holds),
    }


def reported(name: str, measured: str) -> dict[str, Any]:
    """A figure reported beside the targets, with no bar to hold."""
    return target(name, None, measured)


def verdict(found: dict[str, Any]) -> str:
    return {True: "PASS", False: "FAIL", None: "info"}[found["holds"]]


def show(targets: list[dict[str, Any]]) -> None:
    for found in targets:
        print(f"{verdict(found):4}  {found['target']}: {found['measured']}")
