"""The core imports no web framework; only asgi_bgtasks.django imports Django,
only asgi_bgtasks.prometheus prometheus_client."""

import subprocess
import sys

FRAMEWORKS = (
    "django",
    "starlette",
    "fastapi",
    "quart",
    "litestar",
    "hypercorn",
    "prometheus_client",
)

BLOCKING_IMPORTER = f"""
import sys

class Blocked:
    def find_spec(self, name, path=None, target=None):
        if name.partition(".")[0] in {FRAMEWORKS!r}:
            raise ImportError(f"{{name}} is blocked by the test")

sys.meta_path.insert(0, Blocked())
"""


def run(code: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", BLOCKING_IMPORTER + code],
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_core_works_with_every_framework_blocked() -> None:
    result = run(
        "import asyncio, asgi_bgtasks\n"
        "async def app(scope, receive, send):\n"
        "    asgi_bgtasks.add_task(print, 'task ran')\n"
        "    await send({'type': 'http.response.start', 'status': 200})\n"
        "    await send({'type': 'http.response.body'})\n"
        "async def main():\n"
        "    wrapped = asgi_bgtasks.BackgroundTasksMiddleware(app)\n"
        "    async def send(message): pass\n"
        "    await wrapped({'type': 'http'}, None, send)\n"
        "asyncio.run(main())\n"
    )

    assert result.returncode == 0, result.stderr
    assert result.stdout == "task ran\n"


def test_only_the_django_module_needs_django() -> None:
    result = run("import asgi_bgtasks.django")

    assert result.returncode == 1
    assert "ImportError: django is blocked by the test" in result.stderr


def test_only_the_prometheus_module_needs_prometheus_client() -> None:
    result = run("import asgi_bgtasks.prometheus")

    assert result.returncode == 1
    assert "ImportError: prometheus_client is blocked by the test" in result.stderr
