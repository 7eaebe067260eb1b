"""How to test views that schedule tasks, per framework (the guides quote these).

In-process clients do not run the lifespan, so the middleware runs tasks
inline and ``await app.join()`` waits for every task scheduled so far.
Replace the task itself to check what it was given.
"""

from types import ModuleType

import httpx
import pytest

from examples import bare, fastapi_app, litestar_app, quart_app, starlette_app


async def test_starlette_order_schedules_its_receipt(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    sent: list[tuple[str, str]] = []
    monkeypatch.setattr(starlette_app, "send_email", lambda *mail: sent.append(mail))
    transport = httpx.ASGITransport(app=starlette_app.app)
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
        response = await client.post("/orders", params={"email": "ann@example.com"})
    await starlette_app.app.join()

    assert response.status_code == 201
    assert sent == [("ann@example.com", "Receipt #1")]


async def test_quart_registration_sends_a_welcome_email(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    sent: list[str] = []
    monkeypatch.setattr(quart_app, "send_welcome_email", sent.append)
    client = quart_app.app.test_client()  # goes through app.asgi_app
    response = await client.post("/register", query_string={"email": "ann@example.com"})
    await quart_app.app.asgi_app.join()

    assert response.status_code == 201
    assert sent == ["ann@example.com"]


async def test_django_registration_sends_a_welcome_email(
    django_project: ModuleType, monkeypatch: pytest.MonkeyPatch
) -> None:
    from examples.django_app import app, views

    sent: list[str] = []
    monkeypatch.setattr(views, "send_welcome_email", sent.append)
    # Django's own test client skips the ASGI stack, and with it the middleware.
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
        response = await client.post("/register", params={"email": "ann@example.com"})
    await app.join()

    assert response.status_code == 201
    assert sent == ["ann@example.com"]


@pytest.mark.parametrize(
    ("example", "path"),
    [(fastapi_app, "/register"), (litestar_app, "/register"), (bare, "/signup")],
    ids=["fastapi", "litestar", "bare"],
)
async def test_registration_sends_a_welcome_email(
    example: ModuleType, path: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    sent: list[str] = []
    monkeypatch.setattr(example, "send_welcome_email", sent.append)
    transport = httpx.ASGITransport(app=example.app)
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
        response = await client.post(path, params={"email": "ann@example.com"})
    await example.app.join()

    assert response.status_code == 201
    assert sent == ["ann@example.com"]
