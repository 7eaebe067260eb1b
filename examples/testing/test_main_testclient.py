"""Sync tests of the FastAPI quick start with FastAPI's TestClient, no event
loop of your own: save as test_main.py beside main.py.

``pip install "fastapi[standard]" pytest``, then ``pytest``.
"""

import main
import pytest
from fastapi.testclient import TestClient


def test_register_sends_a_welcome_email(monkeypatch: pytest.MonkeyPatch) -> None:
    sent: list[str] = []
    monkeypatch.setattr(main, "send_welcome_email", sent.append)

    with TestClient(main.app) as client:  # runs the lifespan: tasks run detached
        response = client.post("/register", params={"email": "ann@example.com"})
    # Leaving the block shut the app down, and shutdown waited for the tasks.

    assert response.status_code == 201
    assert sent == ["ann@example.com"]


def test_register_without_with(monkeypatch: pytest.MonkeyPatch) -> None:
    sent: list[str] = []
    monkeypatch.setattr(main, "send_welcome_email", sent.append)
    client = TestClient(main.app)  # no lifespan: tasks run inside each request

    response = client.post("/register", params={"email": "ann@example.com"})

    assert response.status_code == 201
    assert sent == ["ann@example.com"]
