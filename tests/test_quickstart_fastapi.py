"""The FastAPI quick start tested in-process; the FastAPI guide shows this file.

In your project, ``import main`` (the quick start saved as ``main.py``).
"""

import httpx
import pytest

from examples import quickstart_fastapi as main


@pytest.mark.asyncio  # needs pytest-asyncio; with anyio's plugin: @pytest.mark.anyio
async def test_register_sends_a_welcome_email(monkeypatch: pytest.MonkeyPatch) -> None:
    sent: list[str] = []
    monkeypatch.setattr(main, "send_welcome_email", sent.append)
    transport = httpx.ASGITransport(app=main.app)  # runs no lifespan: tasks inline
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
        response = await client.post("/register", params={"email": "ann@example.com"})
    await main.app.join()  # every task scheduled so far has ended

    assert response.status_code == 201
    assert sent == ["ann@example.com"]
