import logging

import pytest


@pytest.fixture
def events() -> list[object]:
    """An ordered log of what happened, shared by app, send and tasks."""
    return []


@pytest.fixture(autouse=True)
def _capture_our_logs(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG, logger="asgi_bgtasks")
