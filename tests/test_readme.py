"""The README's quick start runs as written."""

import re
from pathlib import Path

from helpers import call

README = Path(__file__).parent.parent / "README.md"


async def test_readme_quick_start_sends_the_email_after_the_response(
    events: list[object],
) -> None:
    code = re.search(r"```python\n(.*?)```", README.read_text(), re.DOTALL)
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
