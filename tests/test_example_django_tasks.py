"""The Django tasks guide's complete project (``examples/django_tasks_project``,
laid out as ``startproject`` makes one) served as its page says, from its
own folder: ``hypercorn mysite.asgi:application``. The task is enqueued in
a view, runs after the response, and its result reads SUCCESSFUL."""

import httpx
from served import until

from examples.serve import ROOT, run_hypercorn

PROJECT = ROOT / "examples" / "django_tasks_project"


def test_enqueued_task_runs_after_the_response_and_its_result_succeeds(
    address: str,
) -> None:
    settings = {"DJANGO_SETTINGS_MODULE": "mysite.settings"}
    with run_hypercorn(
        "mysite.asgi:application",
        "--access-logfile",
        "-",
        cwd=PROJECT,
        env=settings,
    ) as server:
        response = httpx.post(
            f"{server.url}/register", params={"email": address}, timeout=30
        )
        sent = f"welcome e-mail sent to {address}"
        output = until(server.output, lambda text: sent in text)
        task = response.json()["task"]
        result = until(
            lambda: httpx.get(f"{server.url}/tasks/{task}", timeout=30).json(),
            lambda result: result["status"] == "SUCCESSFUL",
        )

    assert response.status_code == 201
    assert result == {"status": "SUCCESSFUL", "value": "Welcome!"}
    lines = output.splitlines()
    answered = next(n for n, line in enumerate(lines) if "POST /register" in line)
    emailed = next(n for n, line in enumerate(lines) if sent in line)
    assert answered < emailed
    assert "Traceback" not in output


def test_a_post_without_csrf_exemption_or_token_is_refused_with_403() -> None:
    with run_hypercorn(
        "mysite.asgi:application",
        cwd=PROJECT,
        env={"DJANGO_SETTINGS_MODULE": "mysite.settings"},
    ) as server:
        response = httpx.post(f"{server.url}/tasks/some-id", timeout=30)

    assert response.status_code == 403  # CsrfViewMiddleware, as startproject has
