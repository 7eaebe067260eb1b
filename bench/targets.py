"""A target of issue 11: what it asks, what was measured, whether it holds.

A missed target is reported, never raised: the benchmarks are a report.
"""

from typing import Any


def target(name: str, holds: bool, measured: str) -> dict[str, Any]:
    return {"target": name, "measured": measured, "holds": bool(holds)}


def show(targets: list[dict[str, Any]]) -> None:
    for found in targets:
        verdict = "PASS" if found["holds"] else "FAIL"
        print(f"{verdict}  {found['target']}: {found['measured']}")
