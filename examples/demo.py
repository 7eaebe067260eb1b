"""``make demo``: serve examples.bare under hypercorn and show the timeline.

Each client response arrives at once; its welcome e-mail task finishes about
half a second later. Exits 1 if a response ever waited for its task.
"""

import sys
import time

import httpx

from examples.serve import run_hypercorn

TASK_DONE = "send_welcome_email finished"
REQUESTS = 2


def main() -> int:
    rows: list[tuple[float, str]] = []
    answered: list[float] = []
    with run_hypercorn("examples.bare:app") as server, httpx.Client() as client:
        for n in range(1, REQUESTS + 1):
            rows.append((time.monotonic(), f"request {n} sent: POST /signup"))
            response = client.post(
                f"{server.url}/signup", params={"email": f"user{n}@example.com"}
            )
            answered.append(time.monotonic())
            rows.append((answered[-1], f"request {n} answered: {response.status_code}"))
        events = wait_for_tasks(client, server.url)
    rows += [(float(e["at"]), f"  task: {e['event']}") for e in events]
    start = rows[0][0]
    print(f"hypercorn served examples.bare:app at {server.url}\n")
    for at, what in sorted(rows):
        print(f"{(at - start) * 1000:9.1f} ms  {what}")
    done = sorted(float(e["at"]) for e in events if e["event"] == TASK_DONE)
    if any(answered[n] > done[n] for n in range(REQUESTS)):
        print("\nFAIL: a response waited for its background task")
        return 1
    print("\nEvery response arrived before its background task finished.")
    return 0


def wait_for_tasks(client: httpx.Client, url: str) -> list[dict[str, float | str]]:
    """Poll /events until every request's e-mail task has finished."""
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        events: list[dict[str, float | str]] = client.get(f"{url}/events").json()
        if sum(e["event"] == TASK_DONE for e in events) == REQUESTS:
            return events
        time.sleep(0.05)
    raise SystemExit("the background tasks did not finish within 30 s")


if __name__ == "__main__":
    sys.exit(main())
