"""Property-based: whatever an app sends, a task runs at most once, and only
when the contract says: after a final message, or after an app that started
a response returned without error."""

import asyncio
from dataclasses import dataclass, field
from typing import Any

from helpers import assert_accounted, http_scope, request_receive
from hypothesis import given, settings
from hypothesis import strategies as st

from asgi_bgtasks import BackgroundTasksMiddleware, add_task

Message = dict[str, Any]
RAISE = {"type": "raise"}  # not a message: the app raises here

BODIES = ("http.response.body", "http.response.zerocopysend", "http.response.pathsend")
more = st.sampled_from([True, False, None])  # None: the key is left out


def with_flag(kind: str, key: str, value: bool | None) -> Message:
    return {"type": kind} if value is None else {"type": kind, key: value}


messages = st.one_of(
    st.builds(
        lambda status, trailers: {
            "type": "http.response.start",
            "status": status,
            "trailers": trailers,
        },
        st.sampled_from([200, 204, 404, 500, 503]),
        st.booleans(),
    ),
    st.builds(lambda m: with_flag("http.response.body", "more_body", m), more),
    st.builds(lambda m: with_flag("http.response.zerocopysend", "more_body", m), more),
    st.just({"type": "http.response.pathsend", "path": "/dev/null"}),
    st.builds(lambda m: with_flag("http.response.trailers", "more_trailers", m), more),
    st.just(RAISE),
)


@dataclass
class Expected:
    """The contract, applied to a sequence of messages."""

    status: int = 0
    trailers: bool = False
    final_at: int | None = None  # how many messages had been sent at the first final
    raised: bool = False
    sent: list[Message] = field(default_factory=list)

    def see(self, message: Message) -> None:
        if self.final_at is not None:
            return  # messages after the final one change nothing
        kind = message["type"]
        if kind == "http.response.start":
            self.status, self.trailers = message["status"], message["trailers"]
        ends_body = (
            kind in BODIES and not self.trailers and not message.get("more_body", False)
        )
        ends_trailers = (
            kind == "http.response.trailers"
            and self.trailers
            and not message.get("more_trailers", False)
        )
        self.sent.append(message)
        if (ends_body or ends_trailers) and self.final_at is None:
            self.final_at = len(self.sent)

    @property
    def runs(self) -> bool:
        ended = self.final_at is not None
        if self.raised and not ended:
            return False
        return self.status != 0 and self.status < 500


def script(sequence: list[Message]) -> tuple[list[Message], bool]:
    """The messages the app sends, and whether it then raises."""
    if RAISE in sequence:
        return sequence[: sequence.index(RAISE)], True
    return sequence, False


@settings(max_examples=300, deadline=None)
@given(
    sequence=st.lists(messages, max_size=8),
    mode=st.sampled_from(["inline", "detached"]),
)
def test_a_task_runs_at_most_once_and_only_as_the_contract_says(
    sequence: list[Message], mode: str
) -> None:
    to_send, raises = script(sequence)
    expected = Expected(raised=raises)
    server_saw: list[Message] = []
    runs: list[int] = []  # how many messages the server had when the task ran

    async def task() -> None:
        runs.append(len(server_saw))

    async def app(scope: Any, receive: Any, send: Any) -> None:
        add_task(task)
        for message in to_send:
            expected.see(message)
            await send(message)
        if raises:
            raise RuntimeError("the app failed")

    async def server_send(message: Message) -> None:
        server_saw.append(message)

    async def scenario() -> BackgroundTasksMiddleware:
        middleware = BackgroundTasksMiddleware(app, mode=mode)  # type: ignore[arg-type]
        try:
            await middleware(http_scope(), request_receive, server_send)
        except RuntimeError:
            assert raises
        await middleware.join()
        return middleware

    middleware = asyncio.run(scenario())

    assert len(runs) <= 1
    assert bool(runs) == expected.runs
    if runs:  # only after everything the app sent, a final message included
        assert runs[0] == len(to_send)
        assert expected.final_at is not None or not raises
    stats = middleware.stats
    assert_accounted(stats)
    assert (stats.succeeded, stats.dropped) == ((1, 0) if runs else (0, 1))
