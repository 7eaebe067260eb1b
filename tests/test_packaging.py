"""The sdist and the wheel built from this checkout: they pass ``twine check
--strict`` and carry the licence, and the wheel, installed into a clean
virtual environment with nothing but hypercorn beside it, runs a task after
the response."""

import os
import subprocess
import sys
import tarfile
import zipfile
from collections.abc import Iterator
from email.parser import Parser
from pathlib import Path

import httpx
import pytest
from served import until

from examples.serve import ROOT, Server, free_port, stop

APP = """\
import pathlib

import asgi_bgtasks
from asgi_bgtasks import BackgroundTasksMiddleware, add_task


def note(path: str) -> None:
    pathlib.Path("ran.txt").write_text(asgi_bgtasks.__file__)


async def hello(scope, receive, send):
    if scope["type"] != "http":
        return
    if scope["path"] == "/task":
        add_task(note, scope["path"])
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": b"hello"})


app = BackgroundTasksMiddleware(hello)
"""


def run(*argv: str | Path) -> subprocess.CompletedProcess[str]:
    done = subprocess.run(argv, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr
    return done


@pytest.fixture(scope="module")
def dist(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A folder with the sdist and the wheel, built as for a release."""
    folder = tmp_path_factory.mktemp("dist")
    run(sys.executable, "-m", "build", "--outdir", folder, ROOT)
    return folder


def test_sdist_and_wheel_pass_twine_check_strict(dist: Path) -> None:
    built = sorted(dist.iterdir())

    checked = run(sys.executable, "-m", "twine", "check", "--strict", *built)

    assert sorted(path.suffix for path in built) == [".gz", ".whl"]
    assert checked.stdout.count("PASSED") == 2


def test_sdist_and_wheel_carry_the_license_and_the_project_urls(dist: Path) -> None:
    [sdist] = dist.glob("*.tar.gz")
    [wheel] = dist.glob("*.whl")
    license_text = (ROOT / "LICENSE").read_text()
    with tarfile.open(sdist) as archive:
        top = archive.getnames()[0].split("/")[0]
        member = archive.extractfile(f"{top}/LICENSE")
        assert member is not None
        assert member.read().decode() == license_text
    with zipfile.ZipFile(wheel) as archive:
        info = next(n for n in archive.namelist() if n.endswith(".dist-info/METADATA"))
        metadata = Parser().parsestr(archive.read(info).decode())
        licenses = info.replace("METADATA", "licenses/LICENSE")
        assert archive.read(licenses).decode() == license_text

    assert metadata["License-Expression"] == "MIT"
    assert metadata["Description-Content-Type"] == "text/markdown"
    assert {url.split(",")[0] for url in metadata.get_all("Project-URL")} == {
        "Homepage",
        "Documentation",
        "Source",
        "Issues",
        "Changelog",
    }


@pytest.fixture
def served_from_wheel(dist: Path, tmp_path: Path) -> Iterator[Server]:
    venv = tmp_path / "venv"
    run(sys.executable, "-m", "venv", "--without-pip", venv)
    python = venv / "bin" / "python"
    [wheel] = dist.glob("*.whl")
    run(sys.executable, "-m", "pip", "--python", python, "install", wheel, "hypercorn")
    (tmp_path / "hello.py").write_text(APP)
    port = free_port()
    log = tmp_path / "server.log"
    with log.open("wb") as out:
        process = subprocess.Popen(
            [python, "-m", "hypercorn", "hello:app", "--bind", f"127.0.0.1:{port}"],
            cwd=tmp_path,  # away from the checkout: only the wheel can be imported
            env={k: v for k, v in os.environ.items() if k != "PYTHONPATH"},
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    server = Server(f"http://127.0.0.1:{port}", process, log)
    try:
        until(lambda: answers(server), bool)
        yield server
    finally:
        stop(server)


def answers(server: Server) -> bool:
    assert server.process.poll() is None, server.output()
    try:
        httpx.get(server.url, timeout=1)
    except httpx.TransportError:
        return False
    return True


def test_wheel_in_a_clean_venv_runs_a_task_under_hypercorn(
    served_from_wheel: Server, tmp_path: Path
) -> None:
    ran = tmp_path / "ran.txt"

    response = httpx.get(f"{served_from_wheel.url}/task", timeout=30)
    module = until(lambda: ran.exists() and ran.read_text(), bool)

    assert response.text == "hello"
    assert Path(module).is_relative_to(tmp_path / "venv")  # the wheel's, not ours
    assert "Traceback" not in served_from_wheel.output()
