"""Drain modes: inline, detached, auto; concurrency and backpressure."""

import asyncio
import contextlib

import pytest
from helpers import (
    BODY,
    START_200,
    Gate,
    Lifespan,
    Recorder,
    call,
    http_scope,
    lingering,
    request_receive,
    scheduling,
    start_request,
    with_lifespan,
)

from asgi_bgtasks import (
    BackgroundTasks,
    BackgroundTasksMiddleware,
    add_task,
    background_tasks,
)

DETACHED_LOG = (
    "lifespan startup seen: background tasks run detached and are drained "
    "on shutdown for up to 30.0 s"
)
RESPONSE = ["http.response.start", "http.response.body"]


async def call_and_note(app: object, events: list[object], label: str) -> None:
    await call(app, events, http_scope(f"/{label}"))
    events.append(f"{label} call returned")


def numbered_requests(task: object) -> object:
    """An app whose request to ``/N`` schedules ``task("N")``."""

    async def app(scope: dict[str, str], receive: object, send: object) -> None:
        await scheduling((task, scope["path"][1:]))(scope, receive, send)

    return app


async def test_auto_mode_runs_inline_without_lifespan(events: list[object]) -> None:
    app = BackgroundTasksMiddleware(scheduling((events.append, "task")))

    await call_and_note(app, events, "request")

    assert events == [*RESPONSE, "task", "request call returned"]


async def test_auto_mode_runs_detached_after_lifespan_startup(
    events: list[object], caplog: pytest.LogCaptureFixture
) -> None:
    gate = Gate(events)
    app = BackgroundTasksMiddleware(
        with_lifespan(scheduling((gate.task, "task")), events)
    )
    lifespan = Lifespan(app)
    await lifespan.startup()

    await asyncio.wait_for(call_and_note(app, events, "request"), timeout=30)
    gate.opened.set()
    await app.join()

    # The call did not wait for the task (started eagerly on 3.12+, its
    # first step may run before the call returns).
    assert events[:2] == RESPONSE
    assert sorted(events[2:]) == ["request call returned", "task done", "task started"]
    assert events.index("request call returned") < events.index("task done")
    assert caplog.messages == [DETACHED_LOG]
    await lifespan.shutdown()  # no lifespan task may outlive its test


async def test_inline_mode_stays_inline_after_lifespan_startup(
    events: list[object], caplog: pytest.LogCaptureFixture
) -> None:
    app = BackgroundTasksMiddleware(
        with_lifespan(scheduling((events.append, "task")), events), mode="inline"
    )
    lifespan = Lifespan(app)
    await lifespan.startup()

    await call_and_note(app, events, "request")

    assert events == [*RESPONSE, "task", "request call returned"]
    assert caplog.messages == [
        "background tasks run inline, inside each request's ASGI call"
    ]
    await lifespan.shutdown()  # no lifespan task may outlive its test


async def test_detached_mode_detaches_without_lifespan(events: list[object]) -> None:
    gate = Gate(events)
    app = BackgroundTasksMiddleware(scheduling((gate.task, "task")), mode="detached")

    await asyncio.wait_for(call_and_note(app, events, "request"), timeout=30)
    gate.opened.set()
    await app.join()

    # The call did not wait for the task (started eagerly on 3.12+, its
    # first step may run before the call returns).
    assert events[:2] == RESPONSE
    assert sorted(events[2:]) == ["request call returned", "task done", "task started"]
    assert events.index("request call returned") < events.index("task done")


async def test_max_concurrency_bounds_chains_and_starts_them_in_order(
    events: list[object],
) -> None:
    gate = Gate(events)
    app = BackgroundTasksMiddleware(
        numbered_requests(gate.task), mode="detached", max_concurrency=2
    )

    for n in range(5):
        await call(app, events, http_scope(f"/{n}"))
    await gate.arrived["1"].wait()
    for _ in range(20):  # loop turns, not time: queued chains must not start
        await asyncio.sleep(0)

    assert (app.stats.running, app.stats.pending) == (2, 3)
    gate.opened.set()
    await app.join()
    started = [e for e in events if str(e).endswith("started")]
    assert started == [f"{n} started" for n in range(5)]
    assert app.stats.succeeded == 5


class StartRecorder(Recorder):
    """A `Recorder` that also tells when the response has started."""

    def __init__(self, events: list[object]) -> None:
        super().__init__(events)
        self.started = asyncio.Event()

    async def __call__(self, message: dict[str, object]) -> None:
        self.started.set()
        await super().__call__(message)


async def held_request(
    app: object, events: list[object], label: str
) -> "tuple[asyncio.Task[None], Recorder]":
    """Start request ``/label``; return once its app has sent its start."""
    recorder = StartRecorder(events)
    scope = http_scope(f"/{label}")
    request = asyncio.create_task(app(scope, request_receive, recorder))
    await recorder.started.wait()
    return request, recorder


async def with_a_full_queue(
    events: list[object],
) -> tuple[BackgroundTasksMiddleware, Gate]:
    """A detached app with one slot and ``max_pending=1``: request 1's task
    holds the slot (at its gate), request 2's fills the queue."""
    gate = Gate(events)
    app = BackgroundTasksMiddleware(
        numbered_requests(gate.task), mode="detached", max_concurrency=1, max_pending=1
    )
    await call_and_note(app, events, "1")
    await gate.arrived["1"].wait()
    await call_and_note(app, events, "2")
    return app, gate


async def test_past_max_pending_the_final_message_waits_for_room_and_nothing_is_lost(
    events: list[object],
) -> None:
    app, gate = await with_a_full_queue(events)
    third, sent = await held_request(app, events, "3")
    for _ in range(10):  # whatever else runs meanwhile, 3's body stays held
        await asyncio.sleep(0)

    assert not sent.body_sent.is_set()
    assert (app.stats.running, app.stats.pending) == (1, 2)
    events.append("gate opens")
    gate.opened.set()
    await third
    await app.join()

    after = events[events.index("gate opens") :]
    # Held until 1 ended and 2 left the queue for its slot:
    assert after.index("1 done") < after.index("http.response.body")
    assert after.index("http.response.body") < after.index("3 started")
    assert after[-2:] == ["3 started", "3 done"]
    assert app.stats.succeeded == 3


async def test_held_requests_never_wait_for_each_others_tasks(
    events: list[object],
) -> None:
    app, gate = await with_a_full_queue(events)
    third, _ = await held_request(app, events, "3")
    fourth, _ = await held_request(app, events, "4")

    gate.opened.set()  # 2 starts: only 3's and 4's own tasks are left pending
    await asyncio.wait_for(asyncio.gather(third, fourth), timeout=30)
    await app.join()

    assert app.stats.succeeded == 4


async def test_tasks_of_a_request_still_in_flight_never_hold_another(
    events: list[object],
) -> None:
    respond, other_ran = asyncio.Event(), asyncio.Event()

    async def app(scope: dict[str, str], receive: object, send: object) -> None:
        add_task(events.append, f"{scope['path']} task")
        if scope["path"] == "/open":  # a websocket, a long stream
            await respond.wait()
        else:
            add_task(other_ran.set)
        await send(START_200)
        await send(BODY)

    middleware = BackgroundTasksMiddleware(
        app, mode="detached", max_concurrency=1, max_pending=1
    )
    still_open = asyncio.create_task(call(middleware, events, http_scope("/open")))
    await asyncio.wait_for(call(middleware, events, http_scope("/other")), timeout=30)
    await asyncio.wait_for(other_ran.wait(), timeout=30)
    assert "/other task" in events

    respond.set()
    await still_open
    await middleware.join()
    assert "/open task" in events


async def test_an_error_response_is_never_held(events: list[object]) -> None:
    gate = Gate(events)

    async def app(scope: dict[str, str], receive: object, send: object) -> None:
        add_task(gate.task, scope["path"][1:])
        status = 503 if scope["path"] == "/3" else 200
        await send({"type": "http.response.start", "status": status, "headers": []})
        await send(BODY)

    middleware = BackgroundTasksMiddleware(
        app, mode="detached", max_concurrency=1, max_pending=1
    )
    await call_and_note(middleware, events, "1")
    await gate.arrived["1"].wait()
    await call_and_note(middleware, events, "2")  # the queue is full now

    await asyncio.wait_for(call_and_note(middleware, events, "3"), timeout=30)
    gate.opened.set()
    await middleware.join()

    assert "3 started" not in events  # dropped: its response was a 503
    assert (middleware.stats.succeeded, middleware.stats.dropped) == (2, 1)


async def test_a_request_is_never_held_for_its_own_tasks(
    events: list[object],
) -> None:
    gate = Gate(events)
    app = BackgroundTasksMiddleware(
        scheduling(*[(gate.task, str(n)) for n in range(5)]),
        mode="detached",
        max_pending=2,
    )

    await asyncio.wait_for(call_and_note(app, events, "request"), timeout=30)
    gate.opened.set()
    await app.join()

    assert events[:2] == RESPONSE
    # Not held: the call returned while its first task waited at the gate.
    assert events.index("request call returned") < events.index("0 done")
    assert app.stats.succeeded == 5


async def test_a_held_request_cancelled_by_the_server_drops_its_tasks_loudly(
    events: list[object], caplog: pytest.LogCaptureFixture
) -> None:
    app, gate = await with_a_full_queue(events)
    third, sent = await held_request(app, events, "3")

    third.cancel()
    with pytest.raises(asyncio.CancelledError):
        await third
    gate.opened.set()
    await app.join()

    assert not sent.body_sent.is_set()
    assert "3 started" not in events
    assert (app.stats.succeeded, app.stats.dropped) == (2, 1)
    assert caplog.messages[-1] == (
        "dropped 1 background task(s) because the app was cancelled before "
        "its final response message: helpers.Gate.task"
    )
    await call_and_note(app, events, "4")  # the hold was let go of: 4 is not held
    await app.join()
    assert [e for e in events if e in ("4 started", "4 done")] == [
        "4 started",
        "4 done",
    ]


async def test_shutdown_lets_held_requests_go(events: list[object]) -> None:
    gate = Gate(events)
    app = BackgroundTasksMiddleware(
        with_lifespan(numbered_requests(gate.task), events),
        max_concurrency=1,
        max_pending=1,
        shutdown_timeout=0,
    )
    lifespan = Lifespan(app)
    await lifespan.startup()
    await call_and_note(app, events, "1")
    await gate.arrived["1"].wait()
    await call_and_note(app, events, "2")
    third, sent = await held_request(app, events, "3")

    shutdown = asyncio.create_task(lifespan.shutdown())
    await sent.body_sent.wait()
    await third
    await shutdown

    assert "3 started" not in events
    assert app.stats.dropped == 3  # 1 running, 2 and 3 pending at the deadline


async def test_inline_chain_cancelled_while_waiting_for_a_slot_is_dropped_loudly(
    events: list[object], caplog: pytest.LogCaptureFixture
) -> None:
    gate = Gate(events)
    app = BackgroundTasksMiddleware(
        numbered_requests(gate.task), mode="inline", max_concurrency=1
    )
    first = await start_request(app, events, "/1")
    await gate.arrived["1"].wait()
    second = await start_request(app, events, "/2")

    second.cancel()
    with pytest.raises(asyncio.CancelledError):
        await second
    gate.opened.set()
    await first
    await call(app, events, http_scope("/3"))  # the slot was not leaked

    assert "2 started" not in events
    assert events[-1] == "3 done"
    assert caplog.messages == [
        "background task helpers.Gate.task did not finish: cancelled while pending"
    ]
    assert app.stats.dropped == 1


async def test_waiter_cancelled_just_as_its_chain_started_hands_the_slot_on(
    events: list[object],
) -> None:
    gate = Gate(events)
    app = BackgroundTasksMiddleware(
        numbered_requests(gate.task), mode="inline", max_concurrency=1
    )
    waiting: list[asyncio.Task[None]] = []

    async def first_then_cancel_second() -> None:
        await call(app, events, http_scope("/1"))
        # Same loop step as the hand-over: the second waiter's turn is
        # already granted when its cancellation arrives.
        waiting[0].cancel()

    first = asyncio.create_task(first_then_cancel_second())
    await gate.arrived["1"].wait()
    waiting.append(await start_request(app, events, "/2"))
    gate.opened.set()
    await first

    # Under an eager task factory its call may even have returned already.
    with contextlib.suppress(asyncio.CancelledError):
        await waiting[0]
    await call(app, events, http_scope("/3"))  # the slot was handed on

    # Its chain started as the slot was handed over, before the cancellation
    # arrived; the open gate let its task finish within its first step.
    assert events.count("2 done") == 1
    assert events[-1] == "3 done"
    assert (app.stats.succeeded, app.stats.dropped) == (3, 0)


async def test_tasks_after_shutdown_run_inline(events: list[object]) -> None:
    app = BackgroundTasksMiddleware(
        with_lifespan(scheduling((events.append, "task")), events)
    )
    lifespan = Lifespan(app)
    await lifespan.startup()
    await lifespan.shutdown()

    await call_and_note(app, events, "late request")

    assert events[-2:] == ["task", "late request call returned"]


async def test_request_cancelled_after_shutdown_drops_its_tasks_loudly(
    events: list[object], caplog: pytest.LogCaptureFixture
) -> None:
    app = BackgroundTasksMiddleware(
        with_lifespan(lingering((events.append, "task")), events)
    )
    lifespan = Lifespan(app)
    await lifespan.startup()
    await lifespan.shutdown()
    request = await start_request(app, events)
    request.cancel()

    with pytest.raises(asyncio.CancelledError):
        await request

    assert "task" not in events
    assert caplog.messages[-1].endswith("did not finish: cancelled while pending")


async def test_detached_chain_queued_behind_an_inline_one_starts_when_it_ends(
    events: list[object],
) -> None:
    gate = Gate(events)
    app = BackgroundTasksMiddleware(
        with_lifespan(numbered_requests(gate.task), events), max_concurrency=1
    )
    first = await start_request(app, events, "/1")  # no lifespan yet: inline
    await gate.arrived["1"].wait()
    lifespan = Lifespan(app)
    await lifespan.startup()  # from now on: detached
    await call_and_note(app, events, "2")  # queued behind the inline chain

    gate.opened.set()
    await first
    await app.join()

    started = [e for e in events if str(e).endswith(("started", "done"))]
    assert started == ["1 started", "1 done", "2 started", "2 done"]
    assert app.stats.succeeded == 2
    await lifespan.shutdown()


async def test_held_requests_never_wait_for_a_call_that_lingers_after_its_response(
    events: list[object],
) -> None:
    gate, linger = Gate(events), asyncio.Event()

    async def app(scope: dict[str, str], receive: object, send: object) -> None:
        label = scope["path"][1:]
        add_task(gate.task, label)
        await send(START_200)
        await send(BODY)
        if label == "3":
            await linger.wait()  # its call goes on after its response

    middleware = BackgroundTasksMiddleware(
        app, mode="detached", max_concurrency=1, max_pending=1
    )
    await call_and_note(middleware, events, "1")
    await gate.arrived["1"].wait()
    await call_and_note(middleware, events, "2")  # the queue is full
    third, third_sent = await held_request(middleware, events, "3")
    fourth, fourth_sent = await held_request(middleware, events, "4")

    gate.opened.set()  # 2 gets the slot: the queue is empty
    await asyncio.wait_for(fourth, timeout=30)  # though 3's call lingers

    assert third_sent.body_sent.is_set()
    assert fourth_sent.body_sent.is_set()
    linger.set()
    await third
    await middleware.join()
    assert middleware.stats.succeeded == 4


async def test_tasks_a_thread_adds_to_a_queued_chain_count_toward_max_pending(
    events: list[object],
) -> None:
    gate = Gate(events)
    lists: dict[str, BackgroundTasks] = {}

    async def app(scope: dict[str, str], receive: object, send: object) -> None:
        label = scope["path"][1:]
        lists[label] = background_tasks(scope)
        add_task(gate.task, label)
        await send(START_200)
        await send(BODY)

    middleware = BackgroundTasksMiddleware(
        app, mode="detached", max_concurrency=1, max_pending=2
    )
    await call_and_note(middleware, events, "1")
    await gate.arrived["1"].wait()
    await call_and_note(middleware, events, "2")  # queued: room for one more
    # Its chain waits for the slot; a thread adds to it: the queue is full.
    await asyncio.to_thread(lists["2"].add_task, gate.task, "2 again")
    third, sent = await held_request(middleware, events, "3")

    assert not sent.body_sent.is_set()
    gate.opened.set()
    await asyncio.wait_for(third, timeout=30)
    await middleware.join()
    assert middleware.stats.succeeded == 4


async def test_a_detached_call_returns_once_its_first_task_ended_or_suspended(
    events: list[object],
) -> None:
    async def at_once(label: str) -> None:
        events.append(label)

    app = BackgroundTasksMiddleware(
        scheduling((at_once, "first"), (at_once, "second")), mode="detached"
    )

    await call_and_note(app, events, "request")
    await app.join()

    # Eager (3.12+) the first may run within the call; the rest never does.
    assert events.index("request call returned") < events.index("second")
    assert app.stats.succeeded == 2
