"""Async tests of the FastAPI quick start: save as test_main.py beside main.py.

``pip install pytest pytest-asyncio httpx``, then ``pytest``. This runs in
pytest-asyncio's default (strict) mode: the fixture and the tests say that
they are asyncio ones.
"""

from collections.abc import AsyncIterator

import httpx
import main
import pytest
import pytest_asyncio

from asgi_bgtasks.testing import settled


@pytest_asyncio.fixture
async def client() -> AsyncIterator[httpx.AsyncClient]:
    """A client of the app; a test that uses it fails if a task of it fails."""
    transport = httpx.ASGITransport(app=main.app)  # runs no lifespan: tasks inline
    async with (
        settled(main.app),  # on leaving: waits for every task, fails on theirs
        httpx.AsyncClient(transport=transport, base_url="http://test") as client,
    ):
        yield client


@pytest.mark.asyncio
async def test_register_answers_at_once(client: httpx.AsyncClient) -> None:
    response = await client.post("/register", params={"email": "ann@example.com"})

    assert response.status_code == 201
    assert response.json() == {"status": "welcome"}


@pytest.mark.asyncio
async def test_register_sends_a_welcome_email(
    client: httpx.AsyncClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    sent: list[str] = []
    monkeypatch.setattr(main, "send_welcome_email", sent.append)

    response = await client.post("/register", params={"email": "ann@example.com"})

    assert response.status_code == 201
    assert sent == ["ann@example.com"]
