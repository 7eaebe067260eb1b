"""Where one in-process variant spends its time: ``python -m bench.profile NAME``.

Serves ``bench/micro.py``'s variant ``NAME`` (default: ours inline,
noop) under cProfile and prints the functions with the most time of
their own, and how many calls each makes per request.
"""

import asyncio
import cProfile
import pstats
import sys

from bench.micro import SCOPE, receive, send, variants


async def profile(name: str, requests: int = 20_000) -> pstats.Stats:
    async with variants() as found:
        variant = next(v for v in found if v.name == name)
        for _ in range(requests // 10):  # warm up
            await variant.app(dict(SCOPE), receive, send)
        await variant.settle()
        profiler = cProfile.Profile()
        profiler.enable()
        for _ in range(requests):
            await variant.app(dict(SCOPE), receive, send)
        await variant.settle()
        profiler.disable()
    return pstats.Stats(profiler)


def main(name: str, requests: int = 20_000, top: int = 20) -> None:
    found = asyncio.run(profile(name, requests))
    entries = sorted(
        found.stats.items(),  # type: ignore[attr-defined]
        key=lambda item: item[1][2],
        reverse=True,
    )
    total = sum(entry[1][2] for entry in entries)
    calls = sum(entry[1][1] for entry in entries)
    print(f"{name}: {calls / requests:.0f} calls per request")
    print(f"{'calls/req':>9} {'own %':>6}  function")
    for (path, line, function), (_, primitive, own, _, _) in entries[:top]:
        where = f"{path.rsplit('/', 2)[-1]}:{line}" if line else path
        print(f"{primitive / requests:9.2f} {own / total:6.1%}  {function} ({where})")


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "ours inline, noop")
