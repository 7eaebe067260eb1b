"""Reference cycles per request under a real server.

Objects in a cycle are freed only by the cycle collector, whose passes cost
throughput and p99 under load, yet a cycle through the server's own objects
never shows in-process. Each app runs under the real server with
``gc.set_debug(gc.DEBUG_SAVEALL)`` (``BENCH_GC_SAVEALL=1``, see
``bench/apps.py``), so everything the collector would have freed is kept;
after a short load, its count per request and most common types are read
from the app's ``/stats``.
"""

from typing import Any

from bench.e2e import SERVERS, UNDER_TEST
from bench.loadgen import get_json, load_together, run_client
from bench.servers import AppSpec, pinned, serving, split_cpus

ROWS = {
    "reference": "reference",
    **{k: v for k, v in UNDER_TEST.items() if v != "reference"},
}


def measure(seconds: float = 1.0, connections: int = 8) -> dict[str, Any]:
    """``{server: {row: {"per_request", "types"}}}`` for the Starlette apps."""
    server_cpus, client_cpus = split_cpus()
    results: dict[str, Any] = {}
    with pinned(client_cpus):
        for server in SERVERS:
            for row, variant in ROWS.items():
                spec = AppSpec("starlette", variant, gc_saveall=True)
                with serving(server, spec, server_cpus) as running:
                    results.setdefault(server, {})[row] = _garbage(
                        running.url, seconds, connections
                    )
    return results


def _garbage(url: str, seconds: float, connections: int) -> dict[str, Any]:
    run_client(load_together([url], connections, seconds / 2))  # warm up
    run_client(get_json(url + "/stats"))  # collects, then forgets, the garbage
    (load,) = run_client(load_together([url], connections, seconds))
    requests = len(load.latencies)
    stats = run_client(get_json(url + "/stats"))
    return {
        "per_request": stats["garbage"] / requests,
        "types": {name: count / requests for name, count in stats["garbage_types"]},
    }


if __name__ == "__main__":
    for server, rows in measure().items():
        for row, found in rows.items():
            types = ", ".join(f"{n} {c:.1f}" for n, c in found["types"].items())
            print(f"{server:9} {row:26} {found['per_request']:6.1f}  {types}")
