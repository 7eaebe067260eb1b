"""``make demo``: serve examples.bare under hypercorn and show the timeline.

Each client response arrives at once; its welcome e-mail reaches a local SMTP
sink (which takes half a second per message) afterwards. Exits 1 if a
response ever waited for its task.
"""

import json
import sys
import tempfile
import time
from pathlib import Path

import httpx

from examples.serve import run_hypercorn
from examples.smtp_sink import SmtpSink

REQUESTS = 2


def main() -> int:
    rows: list[tuple[float, str]] = []
    answered: list[float] = []
    with (
        tempfile.TemporaryDirectory() as folder,
        SmtpSink(delay=0.5) as sink,
    ):
        activity = Path(folder) / "activity.jsonl"
        env = {"SMTP_PORT": str(sink.port), "EXAMPLES_ACTIVITY": str(activity)}
        with (
            run_hypercorn("examples.bare:app", env=env) as server,
            httpx.Client() as client,
        ):
            for n in range(1, REQUESTS + 1):
                rows.append((time.monotonic(), f"request {n} sent: POST /signup"))
                response = client.post(
                    f"{server.url}/signup", params={"email": address(n)}
                )
                answered.append(time.monotonic())
                rows.append(
                    (answered[-1], f"request {n} answered: {response.status_code}")
                )
            mail = [sink.wait_for_mail(address(n))[0] for n in range(1, REQUESTS + 1)]
        events = [json.loads(line) for line in activity.read_text().splitlines()]
    rows += [(float(e["at"]), f"  task: {e['event']}") for e in events]
    rows += [(m.at, f"  smtp sink: '{m.subject}' for {m.to[0]}") for m in mail]
    start = rows[0][0]
    print(f"hypercorn served examples.bare:app at {server.url}\n")
    for at, what in sorted(rows):
        print(f"{(at - start) * 1000:9.1f} ms  {what}")
    delivered = {m.to[0]: m.at for m in mail}
    if any(answered[n - 1] > delivered[address(n)] for n in range(1, REQUESTS + 1)):
        print("\nFAIL: a response waited for its background task")
        return 1
    print("\nEvery response arrived before its e-mail was delivered.")
    return 0


def address(n: int) -> str:
    return f"user{n}@example.com"


if __name__ == "__main__":
    sys.exit(main())
