"""The quick start, in the README and on the docs' home page, runs as written."""

import re
from pathlib import Path

import pytest
from helpers import call

ROOT = Path(__file__).parent.parent


@pytest.mark.parametrize("page", ["README.md", "docs/index.md"])
async def test_quick_start_sends_the_email_after_the_response(
    events: list[object], page: str
) -> None:
    code = re.search(r"```python\n(.*?)```", (ROOT / page).read_text(), re.DOTALL)
    assert code is not None
    namespace: dict[str, object] = {}
    exec(code.group(1), namespace)

    async def send_welcome_email(address: str) -> None:
        events.append(f"e-mail to {address}")

    namespace["send_welcome_email"] = send_welcome_email
    await call(namespace["app"], events)

    assert events == [
        "http.response.start",
        "http.response.body",
        "e-mail to bob@example.com",
    ]
