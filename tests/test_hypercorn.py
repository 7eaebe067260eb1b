"""End to end: the bare example under a real hypercorn on 127.0.0.1."""

import subprocess
import sys
import threading
import time

import httpx

from examples.serve import ROOT, Server, run_hypercorn, stop
from examples.smtp_sink import SmtpSink


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
    assert lines[-1] == "Every response arrived before its e-mail was delivered."
    assert sum("smtp sink: 'Welcome!'" in line for line in lines) == 2


def test_sigterm_drains_running_tasks_before_hypercorn_exits(sink: SmtpSink) -> None:
    env = {"SMTP_PORT": str(sink.port)}
    with run_hypercorn("examples.bare:app", env=env) as server, sink.hold():
        response = httpx.post(f"{server.url}/signup", params={"email": "a@b.c"})
        sink.wait_until_held()
        release_when_logged(server, "shutdown: waiting", sink)
        stop(server)  # at once: the e-mail task is still in its SMTP conversation
        output = server.output()

    assert response.status_code == 201
    assert server.process.returncode == 0
    lines = output.splitlines()
    draining = next(n for n, line in enumerate(lines) if "shutdown: waiting" in line)
    finished = next(n for n, line in enumerate(lines) if "e-mail sent" in line)
    assert "lifespan startup seen: background tasks run detached" in output
    assert draining < finished  # the task ended during the drain, before exit
    assert "ERROR" not in output
    assert "a@b.c" not in output


def release_when_logged(server: Server, text: str, sink: SmtpSink) -> None:
    """Let held mail through once ``text`` is in the server's output."""

    def watch() -> None:
        deadline = time.monotonic() + 60
        while text not in server.output() and time.monotonic() < deadline:
            time.sleep(0.02)
        sink.release()

    threading.Thread(target=watch, daemon=True).start()
