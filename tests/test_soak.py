"""Soak: 10,000+ requests from many clients against hypercorn on 127.0.0.1.

Every task must run exactly once, with its own request's arguments and
contextvars, and the server's memory must come back to where it was. Marked
``soak``: ``make soak`` runs it (and CI does); ``make test`` does not.
"""

import asyncio
import gc
import secrets
import time
from collections import Counter
from pathlib import Path

import httpx
import pytest
from served import Example, reliability_app

from bench.loadgen import post_all

pytestmark = pytest.mark.soak
CLIENTS = 50


def load(url: str, first: int, count: int) -> dict[str, str]:
    """``count`` requests from ``CLIENTS`` concurrent clients; the tokens sent."""
    tokens = {str(n): secrets.token_hex(8) for n in range(first, first + count)}
    paths = [f"/soak?n={n}&token={token}" for n, token in tokens.items()]
    assert asyncio.run(post_all(url, paths, CLIENTS)) == count
    return tokens


def settle_and_collect(app: Example, expected: int) -> list[list[object]]:
    """Wait until ``expected`` tasks ended; return their runs and clear them."""
    stats = app.settled_stats(expected, timeout=120)
    assert stats == {
        "scheduled": expected,
        "succeeded": expected,
        "failed": 0,
        "timed_out": 0,
        "dropped": 0,
        "running": 0,
        "pending": 0,
        "retried": 0,
    }
    runs: list[list[object]] = httpx.get(
        f"{app.url}/soak-runs", params={"clear": 1}
    ).json()
    return runs


def assert_each_ran_once_with_its_own_request(
    runs: list[list[object]], tokens: dict[str, str]
) -> None:
    counts = Counter(n for n, *_ in runs)
    assert set(counts) == set(tokens)
    assert set(counts.values()) == {1}
    for n, token, context_n, _ in runs:
        assert token == tokens[str(n)]
        assert context_n == n


def memory_kib(app: Example, field: str) -> int:
    """``VmRSS`` or ``VmHWM`` (peak) of the server process, in KiB."""
    status = Path(f"/proc/{app.server.process.pid}/status").read_text()
    line = next(line for line in status.splitlines() if line.startswith(field))
    return int(line.split()[1])


def test_10k_requests_run_each_task_once_with_its_own_arguments_and_context(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    warm_up, soak = 2_000, 10_000
    with reliability_app(tmp_path) as app:
        tokens = load(app.url, 0, warm_up)
        assert_each_ran_once_with_its_own_request(
            settle_and_collect(app, warm_up), tokens
        )
        baseline = memory_kib(app, "VmRSS")

        started = time.perf_counter()
        tokens = load(app.url, warm_up, soak)
        seconds = time.perf_counter() - started
        runs = settle_and_collect(app, warm_up + soak)
        assert_each_ran_once_with_its_own_request(runs, tokens)
        del runs
        gc.collect()
        after = memory_kib(app, "VmRSS")
        peak = memory_kib(app, "VmHWM")

    report = (
        f"{soak} requests in {seconds:.1f} s = {soak / seconds:.0f} req/s; "
        f"server RSS {baseline / 1024:.1f} MiB after warm-up, "
        f"{after / 1024:.1f} MiB after the soak, peak {peak / 1024:.1f} MiB"
    )
    with capsys.disabled():
        print(f"\nsoak: {report}")
    assert after - baseline < 4 * 1024, report  # < 0.4 KiB per request


def test_past_max_pending_requests_are_held_and_nothing_is_lost(
    tmp_path: Path,
) -> None:
    requests = 3_000
    with reliability_app(
        tmp_path, max_pending=5, max_concurrency=2, soak_task_seconds=0.002
    ) as app:
        tokens = load(app.url, 0, requests)
        runs = settle_and_collect(app, requests)

    assert_each_ran_once_with_its_own_request(runs, tokens)
    inline = Counter(bool(ran_inline) for *_, ran_inline in runs)
    assert inline == {False: requests}  # held back, never run inline
