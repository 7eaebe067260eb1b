"""The examples' e-mail with no SMTP server listening: they start a local sink
themselves and say so in one line, or, without aiosmtpd, say in one line how
to get one; never a traceback per request."""

import json
import logging
import sys
from pathlib import Path

import httpx
import pytest
from served import until

from examples import tasks
from examples.serve import free_port, run_hypercorn


def test_example_starts_a_local_sink_when_no_smtp_server_listens(
    tmp_path: Path,
) -> None:
    activity = tmp_path / "activity.jsonl"
    activity.touch()
    env = {"SMTP_PORT": str(free_port()), "EXAMPLES_ACTIVITY": str(activity)}
    with run_hypercorn("examples.bare:app", env=env) as server:
        for n in (1, 2):
            email = f"nosink{n}@example.com"
            response = httpx.post(f"{server.url}/signup", params={"email": email})
            assert response.status_code == 201
        until(activity.read_text, lambda text: text.count('"e-mail sent"') == 2)
        output = server.output()

    assert output.count("so this example started a local sink there") == 1
    assert output.count("local SMTP sink: 'Welcome!' for nosink") == 2
    assert "Traceback" not in output
    assert "ERROR" not in output


def test_without_aiosmtpd_one_line_says_how_and_e_mail_is_skipped(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    activity = tmp_path / "activity.jsonl"
    monkeypatch.setitem(sys.modules, "aiosmtpd.controller", None)  # not importable
    monkeypatch.setattr(tasks, "_sink", None)
    port = free_port()
    monkeypatch.setenv("SMTP_PORT", str(port))
    monkeypatch.setenv("EXAMPLES_ACTIVITY", str(activity))

    tasks.send_welcome_email("ann@example.com")
    tasks.send_welcome_email("bob@example.com")

    warnings = [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert [r.getMessage() for r in warnings] == [tasks.NO_SINK % ("127.0.0.1", port)]
    events = [json.loads(line)["event"] for line in activity.read_text().splitlines()]
    assert events == ["e-mail skipped", "e-mail skipped"]
