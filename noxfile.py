"""`make test-all`: the whole suite on every supported Python and event loop."""

import nox

nox.options.sessions = ["tests", "coverage"]
nox.options.reuse_venv = "yes"

PYTHONS = ["3.11", "3.12", "3.13"]


@nox.session(python=PYTHONS)
def tests(session: nox.Session) -> None:
    """asyncio and uvloop on each Python, and asyncio's eager task factory
    where it exists (3.12+)."""
    session.install("-e", ".[test]")
    loops = ["asyncio", "uvloop"]
    if session.python != "3.11":
        loops.append("eager")
    for loop in loops:
        session.log(f"event loop: {loop}")
        worker = "uvloop" if loop == "uvloop" else "asyncio"
        session.run(
            "pytest",
            "-q",
            "-p",
            "no:cacheprovider",
            "--cov",
            "--cov-append",
            "--cov-report=",
            *session.posargs,
            env={"ASGI_BGTASKS_TEST_LOOP": loop, "EXAMPLES_WORKER_CLASS": worker},
        )


@nox.session(python=False)
def coverage(session: nox.Session) -> None:
    """Every line and branch, over all the runs above together."""
    session.run(".venv/bin/coverage", "report", "--fail-under=100", external=True)
