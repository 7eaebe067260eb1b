"""FastAPI's own CLI serves the FastAPI quick start, saved as ``main.py`` as
the guide says, with its tasks: ``fastapi run main.py`` and ``fastapi dev
main.py`` find ``app`` (the ``FastAPI`` object that installed the middleware
with ``add_middleware``) and serve it under uvicorn, lifespan included."""

import shutil
from pathlib import Path

import httpx
import pytest
from served import until

from examples.serve import ROOT, run_fastapi_cli

QUICK_START = ROOT / "examples" / "quickstart_fastapi.py"


@pytest.mark.parametrize("command", ["run", "dev"])
def test_fastapi_cli_serves_the_quick_start_and_runs_its_task_after_the_response(
    command: str, address: str, tmp_path: Path
) -> None:
    shutil.copy(QUICK_START, tmp_path / "main.py")

    with run_fastapi_cli(command, "main.py", cwd=tmp_path) as server:
        response = httpx.post(
            f"{server.url}/register", params={"email": address}, timeout=30
        )
        sent = f"welcome e-mail sent to {address}"
        output = until(server.output, lambda text: sent in text)

    assert response.status_code == 201
    assert response.json() == {"status": "welcome"}
    assert "main:app" in output  # the import string the CLI says it serves
    lines = output.splitlines()
    answered = next(n for n, line in enumerate(lines) if "POST /register" in line)
    emailed = next(n for n, line in enumerate(lines) if sent in line)
    assert answered < emailed
    assert "Traceback" not in output
