"""The durable hand-off for real: ``examples/celery_handoff.py`` under
hypercorn, a Redis broker and result backend (``redis-server`` on a free
port), and a Celery worker process, all on 127.0.0.1.

Without ``redis-server`` these tests are skipped, or fail when
``ASGI_BGTASKS_REQUIRE_REDIS=1`` (``.ci/run`` sets it).
"""

import contextlib
import json
import os
import re
import shutil
import signal
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
import redis
from celery import Celery
from served import Example, until

from examples.serve import ROOT, Server, free_port, run_hypercorn
from examples.smtp_sink import SmtpSink

APP = "examples.celery_handoff:app"
ENQUEUE = "examples.celery_handoff.enqueue_welcome_email"
REQUIRE_REDIS = os.environ.get("ASGI_BGTASKS_REQUIRE_REDIS") == "1"


@dataclass
class Redis:
    """A redis-server of our own: database 0 is the broker, 1 the results."""

    process: "subprocess.Popen[bytes]"
    port: int
    client: redis.Redis

    def env(self) -> dict[str, str]:
        url = f"redis://127.0.0.1:{self.port}"
        return {"CELERY_BROKER_URL": f"{url}/0", "CELERY_RESULT_BACKEND": f"{url}/1"}

    def queued(self) -> int:
        """Jobs waiting in the broker's default queue."""
        return int(self.client.llen("celery"))


def answers(client: redis.Redis) -> bool:
    try:
        return bool(client.ping())
    except redis.ConnectionError:
        return False


def redis_server() -> str:
    """Where ``redis-server`` is; skip (or, in CI, fail) without it."""
    executable = shutil.which("redis-server")
    if executable is None:
        missing = "redis-server is not installed (apt-get install redis-server)"
        if REQUIRE_REDIS:
            pytest.fail(f"{missing}, and ASGI_BGTASKS_REQUIRE_REDIS=1 requires it")
        pytest.skip(missing)
    return executable


@contextlib.contextmanager
def running_redis(port: int, folder: Path) -> Iterator[Redis]:
    """A redis-server on 127.0.0.1:``port`` that keeps nothing on disk."""
    command = [redis_server(), "--bind", "127.0.0.1", "--port", str(port)]
    command += ["--dir", str(folder), "--save", "", "--appendonly", "no"]
    with (folder / "redis.log").open("wb") as log:
        process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT)
    client = redis.Redis(host="127.0.0.1", port=port)
    try:
        until(lambda: answers(client) or process.poll() is not None, bool)
        assert process.poll() is None, (folder / "redis.log").read_text()
        yield Redis(process, port, client)
    finally:
        client.close()
        process.terminate()
        process.wait(timeout=30)


@pytest.fixture(scope="module")
def broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Redis]:
    with running_redis(free_port(), tmp_path_factory.mktemp("redis")) as server:
        yield server


@contextlib.contextmanager
def celery_worker(env: dict[str, str], folder: Path) -> Iterator[Example]:
    """``celery -A examples.celery_handoff:celery worker`` (solo pool) with
    ``env`` added to ours, its output and its activity log in ``folder``;
    stopped with a warm shutdown."""
    env = {**os.environ, **env, "EXAMPLES_ACTIVITY": str(folder / "activity.jsonl")}
    command = [sys.executable, "-m", "celery", "-A", "examples.celery_handoff:celery"]
    command += ["worker", "--pool", "solo", "--loglevel", "INFO"]
    command += ["--without-gossip", "--without-mingle", "--hostname", "test@%h"]
    log = folder / "worker.log"
    with log.open("wb") as out:
        process = subprocess.Popen(
            command, cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT
        )
    running = Example(Server("", process, log), folder / "activity.jsonl")
    try:
        output = until(
            running.server.output,
            lambda output: " ready." in output or process.poll() is not None,
        )
        assert process.poll() is None, output
        yield running
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=60)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


@pytest.fixture(scope="module")
def worker(
    broker: Redis, sink: SmtpSink, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Example]:
    folder = tmp_path_factory.mktemp("celery-worker")
    env = {**broker.env(), "SMTP_PORT": str(sink.port)}
    with celery_worker(env, folder) as running:
        yield running


@pytest.fixture(scope="module")
def web(
    broker: Redis, sink: SmtpSink, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Example]:
    """The example under hypercorn, on our broker."""
    folder = tmp_path_factory.mktemp("celery-web")
    env = {
        **broker.env(),
        "SMTP_PORT": str(sink.port),
        "EXAMPLES_ACTIVITY": str(folder / "activity.jsonl"),
    }
    with run_hypercorn(APP, env=env) as server:
        yield Example(server, folder / "activity.jsonl")


def job_result(web: Example, job: str) -> dict[str, str]:
    """``GET /jobs/{job}`` once the result backend says it succeeded."""
    status: dict[str, str] = until(
        lambda: httpx.get(f"{web.url}/jobs/{job}").json(),
        lambda status: status["state"] == "SUCCESS",
    )
    return status


def stored_result(broker: Redis, job: str) -> object:
    """The job's result, read from the result backend once it succeeded."""
    results = Celery("results", backend=broker.env()["CELERY_RESULT_BACKEND"])
    job_result = results.AsyncResult(job)
    until(lambda: job_result.state, lambda state: state == "SUCCESS")
    return job_result.result


def emails_sent(example: Example, since: int) -> int:
    return sum(e["event"] == "e-mail sent" for e in example.events_since(since))


def test_the_response_does_not_wait_for_the_broker_and_the_worker_runs_the_job(
    broker: Redis, worker: Example, web: Example, sink: SmtpSink, address: str
) -> None:
    mark = worker.mark()

    broker.process.send_signal(signal.SIGSTOP)  # the broker answers nothing
    try:
        response = httpx.post(f"{web.url}/signup", params={"email": address})
    finally:
        broker.process.send_signal(signal.SIGCONT)

    assert response.status_code == 201
    job = response.json()["job"]
    assert job_result(web, job) == {"job": job, "state": "SUCCESS", "result": "sent"}
    [mail] = sink.wait_for_mail(address)
    assert mail.subject == "Welcome!"
    assert emails_sent(worker, mark) == 1
    assert f"[{job}] succeeded" in worker.server.output()
    assert address not in web.server.output() + worker.server.output()


def test_a_5xx_enqueues_nothing(
    broker: Redis, worker: Example, web: Example, sink: SmtpSink, address: str
) -> None:
    mark, logged = worker.mark(), len(web.server.output())

    failed = httpx.post(f"{web.url}/signup", params={"email": address, "fail": 1})
    dropped = "dropped 1 background task(s) because the response status was 503"
    until(lambda: web.server.output()[logged:], lambda output: dropped in output)
    assert f"{dropped}: {ENQUEUE}" in web.server.output()[logged:]
    # Then a request that succeeds: its job is the only one the worker runs.
    barrier = httpx.post(f"{web.url}/signup", params={"email": f"after-{address}"})
    job_result(web, barrier.json()["job"])

    assert failed.status_code == 503
    assert sink.mail_to(address) == []
    assert emails_sent(worker, mark) == 1
    assert broker.queued() == 0
    assert "handed over to Celery" not in web.server.output()[logged:]


def test_a_broker_that_is_down_fails_the_background_task_not_the_response(
    sink: SmtpSink, address: str, tmp_path: Path
) -> None:
    redis_server()
    port = free_port()  # no broker there yet
    env = {
        "CELERY_BROKER_URL": f"redis://127.0.0.1:{port}/0",
        "CELERY_RESULT_BACKEND": f"redis://127.0.0.1:{port}/1",
        "SMTP_PORT": str(sink.port),
        "EXAMPLES_ACTIVITY": str(tmp_path / "activity.jsonl"),
    }
    with run_hypercorn(APP, env=env) as server:
        web = Example(server, tmp_path / "activity.jsonl")
        response = httpx.post(f"{server.url}/signup", params={"email": address})
        [*_, failure] = web.wait_for("background task failed", since=0)
        with running_redis(port, tmp_path) as broker:  # the broker is back
            again = httpx.post(f"{server.url}/signup", params={"email": address})
            until(broker.queued, lambda queued: queued == 1)
            [message] = broker.client.lrange("celery", 0, -1)
        output = server.output()

    assert response.status_code == 201
    assert failure["task"] == ENQUEUE  # what on_error was told
    assert f"ERROR:asgi_bgtasks:background task {ENQUEUE} failed" in output
    assert "Traceback" in output
    assert again.status_code == 201  # and the next hand-off needs no restart
    assert json.loads(message)["headers"]["id"] == again.json()["job"]
    assert address not in output


def test_sigterm_hands_every_pending_task_to_the_worker_and_each_runs_once(
    broker: Redis, worker: Example, sink: SmtpSink, tmp_path: Path
) -> None:
    """Two requests invite five people each. The first invitation of each is
    held in its SMTP conversation when SIGTERM comes; the drain (0.5 s) ends
    with the other eight pending, and on_drop hands them to Celery."""
    invitees = [[f"invitee{r}-{n}@example.com" for n in range(5)] for r in range(2)]
    everyone = [address for request in invitees for address in request]
    env = {
        **broker.env(),
        "SMTP_PORT": str(sink.port),
        "EXAMPLES_ACTIVITY": str(tmp_path / "activity.jsonl"),
        "SHUTDOWN_TIMEOUT": "0.5",
    }
    mark = worker.mark()

    with run_hypercorn(APP, env=env) as server, sink.hold():
        web = Example(server, tmp_path / "activity.jsonl")
        for addresses in invitees:
            response = httpx.post(f"{server.url}/invite", params={"email": addresses})
            assert response.status_code == 202
        sink.wait_until_held()
        sink.wait_until_held()  # both first invitations are being delivered
        server.process.send_signal(signal.SIGTERM)
        output = until(server.output, lambda out: out.count("to Celery as job") == 8)
        sink.release()
        assert server.process.wait(timeout=60) == 0
        output = server.output()

    jobs = re.findall(r"handed over to Celery as job (\S+)", output)
    for address in everyone:
        sink.wait_for_mail(address)
    results = [stored_result(broker, job) for job in jobs]
    assert len(jobs) == 8
    assert results == ["sent"] * 8
    assert emails_sent(web, 0) == 2  # the two in their SMTP conversation
    assert emails_sent(worker, mark) == 8  # the eight pending ones
    received = {address: len(sink.mail_to(address)) for address in everyone}
    assert received == dict.fromkeys(everyone, 1)  # each of the ten exactly once
    assert broker.queued() == 0
    # Handed over, so a WARNING; summarised at the shutdown's end, per function.
    handed = re.findall(
        r"WARNING:asgi_bgtasks:shutdown: (\d+) background task\(s\) \S+ did not "
        r"start: dropped while pending; handed over to on_drop",
        output,
    )
    assert sum(map(int, handed)) == 8
    assert not any(address in output for address in everyone)
