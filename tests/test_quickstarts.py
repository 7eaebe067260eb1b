"""Each framework's quick start (docs home, README, each guide's opening file)
runs as written under a real hypercorn, and its task runs after the response.

Hypercorn writes its access-log line for a request once the final response
message has been sent (inside the app's ``send`` of it); the task starts only
after that ``send`` returned. So in the server's output the access line of
the request comes first, then the task's line.
"""

import httpx
import pytest
from served import until

from examples.serve import run_hypercorn

FRAMEWORKS = ["fastapi", "django", "starlette", "quart", "litestar", "bare"]


@pytest.mark.parametrize("framework", FRAMEWORKS)
def test_quick_start_sends_the_welcome_email_after_the_response(
    framework: str, address: str
) -> None:
    app = f"examples.quickstart_{framework}:app"
    with run_hypercorn(app, "--access-logfile", "-") as server:
        response = httpx.post(
            f"{server.url}/register", params={"email": address}, timeout=30
        )
        sent = f"welcome e-mail sent to {address}"
        output = until(server.output, lambda text: sent in text)

    assert response.status_code == 201
    assert response.json() == {"status": "welcome"}
    lines = output.splitlines()
    answered = next(n for n, line in enumerate(lines) if "POST /register" in line)
    emailed = next(n for n, line in enumerate(lines) if sent in line)
    assert answered < emailed
    assert "Traceback" not in output
