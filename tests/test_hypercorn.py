"""End to end: the bare example under a real hypercorn on 127.0.0.1."""

import subprocess
import sys

import httpx

from examples.serve import ROOT, run_hypercorn, stop


def test_make_demo_shows_responses_arriving_before_their_tasks_finish() -> None:
    demo = subprocess.run(
        [sys.executable, "-m", "examples.demo"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )

    assert demo.returncode == 0, demo.stdout + demo.stderr
    lines = demo.stdout.splitlines()
    assert lines[-1] == "Every response arrived before its background task finished."
    assert sum("send_welcome_email finished" in line for line in lines) == 2


def test_sigterm_drains_running_tasks_before_hypercorn_exits() -> None:
    with run_hypercorn("examples.bare:app") as server:
        response = httpx.post(f"{server.url}/signup", params={"email": "a@b.c"})
        stop(server)  # at once: the 0.5 s e-mail task is still running
        output = server.output()

    assert response.status_code == 201
    assert server.process.returncode == 0
    lines = output.splitlines()
    draining = next(n for n, line in enumerate(lines) if "shutdown: waiting" in line)
    finished = next(n for n, line in enumerate(lines) if "email finished" in line)
    assert "lifespan startup seen: background tasks run detached" in output
    assert draining < finished  # the task ended during the drain, before exit
    assert "ERROR" not in output
    assert "a@b.c" not in output
