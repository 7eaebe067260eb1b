"""`make test-all`: the whole suite on every supported Python and event loop."""

import nox

nox.options.sessions = ["tests", "coverage"]
nox.options.reuse_venv = "yes"

PYTHONS = ["3.11", "3.12", "3.13"]


@nox.session(python=PYTHONS)
def tests(session: nox.Session) -> None:
    """asyncio and uvloop on each Python.

    Not yet: asyncio.eager_task_factory on 3.12+ (ASGI_BGTASKS_TEST_LOOP=eager
    runs it; a few memory and isolation tests still fail there).
    """
    session.install("-e", ".[test]")
    for loop in ["asyncio", "uvloop"]:
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
