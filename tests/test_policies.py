"""Per-task options: timeout, retries with backoff, run_on_error (DESIGN.md,
"Per-task options"). Raw ASGI, inline and detached."""

import asyncio
import contextvars
import functools
import logging
from collections.abc import Callable
from typing import Any

import pytest
from helpers import (
    BODY,
    START_200,
    Lifespan,
    assert_accounted,
    call,
    scheduling,
    with_lifespan,
)

from asgi_bgtasks import (
    BackgroundTasksMiddleware,
    DroppedTask,
    Stats,
    add_task,
    task_options,
)

MODES = ["inline", "detached"]


class Flaky:
    """Fails ``failures`` times with ``error``, then succeeds; logs attempts."""

    def __init__(self, events: list[object], failures: int, error: Exception) -> None:
        self.events = events
        self.failures = failures
        self.error = error

    def attempt(self, label: str) -> None:
        self.events.append(label)
        if self.failures:
            self.failures -= 1
            raise self.error


def flaky_tasks(flaky: Flaky, **options: Any) -> tuple[Callable[..., Any], ...]:
    """The same flaky work as an ``async def`` and as a plain ``def`` task."""

    @task_options(**options)
    async def flaky_async(label: str) -> None:
        await asyncio.sleep(0)
        flaky.attempt(label)

    @task_options(**options)
    def flaky_sync(label: str) -> None:
        flaky.attempt(label)

    return flaky_async, flaky_sync


class Logged(logging.Handler):
    """Sets ``seen`` when a message containing ``text`` is logged."""

    def __init__(self, text: str) -> None:
        super().__init__()
        self.text = text
        self.seen = asyncio.Event()

    def emit(self, record: logging.LogRecord) -> None:
        if self.text in record.getMessage():
            self.seen.set()


def retry_lines(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]


def test_task_options_returns_the_same_function_still_callable_directly() -> None:
    def resize(width: int) -> int:
        return width * 2

    class Mailer:
        @task_options(retries=1)
        def send(self, address: str) -> str:
            return address

    assert task_options(timeout=5)(resize) is resize
    assert resize(21) == 42
    assert Mailer().send("bob@example.com") == "bob@example.com"


@pytest.mark.parametrize(
    ("options", "error", "message"),
    [
        ({"timeout": 0}, ValueError, "task_options: timeout must be > 0, got 0"),
        ({"timeout": "5"}, TypeError, "task_options: timeout must be a number"),
        ({"retries": -1}, ValueError, "task_options: retries must be >= 0, got -1"),
        ({"retries": 1.5}, TypeError, "task_options: retries must be an int"),
        ({"retry_delay": -1}, ValueError, "task_options: retry_delay must be >= 0"),
        ({"retry_on": ValueError()}, TypeError, "task_options: retry_on must be an"),
        ({"retry_on": (OSError, 1)}, TypeError, "task_options: retry_on must be an"),
        ({"retry_on": ()}, TypeError, "task_options: retry_on must be an"),
        ({"run_on_error": 1}, TypeError, "task_options: run_on_error must be True"),
    ],
)
def test_bad_task_options_are_refused_at_decoration_naming_the_option(
    options: dict[str, Any], error: type[Exception], message: str
) -> None:
    with pytest.raises(error) as raised:
        task_options(**options)

    assert str(raised.value).startswith(message)


def test_task_options_refuses_what_it_cannot_mark() -> None:
    with pytest.raises(TypeError, match="task_options\\(\\) decorates a callable"):
        task_options(retries=1)(42)  # type: ignore[type-var]
    with pytest.raises(TypeError, match="decorate the function where it is defined"):
        task_options(retries=1)(Flaky([], 0, ValueError()).attempt)


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("kind", ["async", "sync"])
async def test_a_flaky_task_is_retried_with_doubling_delays_then_succeeds(
    mode: str, kind: str, events: list[object], caplog: pytest.LogCaptureFixture
) -> None:
    flaky = Flaky(events, failures=2, error=ConnectionError("smtp down"))
    flaky_async, flaky_sync = flaky_tasks(flaky, retries=3, retry_delay=0.01)
    task = flaky_async if kind == "async" else flaky_sync
    errors: list[BaseException] = []
    app = BackgroundTasksMiddleware(
        scheduling((task, "attempt"), (events.append, "next")),
        mode=mode,
        on_error=lambda info, error: errors.append(error),
    )

    await call(app, events)
    await app.join()

    assert events[-4:] == ["attempt", "attempt", "attempt", "next"]
    name = f"{task.__module__}.{task.__qualname__}"
    retrying = f"background task {name} attempt %d failed (ConnectionError)"
    assert retry_lines(caplog) == [
        f"{retrying % 1}; retrying in 0.01 s",
        f"{retrying % 2}; retrying in 0.02 s",
    ]
    stats = app.stats
    assert (stats.succeeded, stats.failed, stats.retried) == (2, 0, 2)
    assert errors == []


@pytest.mark.parametrize("mode", MODES)
async def test_a_task_that_keeps_failing_fails_once_after_its_last_attempt(
    mode: str, events: list[object], caplog: pytest.LogCaptureFixture
) -> None:
    flaky = Flaky(events, failures=10, error=ConnectionError("smtp down"))
    task, _ = flaky_tasks(flaky, retries=2, retry_delay=0)
    errors: list[BaseException] = []
    app = BackgroundTasksMiddleware(
        scheduling((task, "attempt")),
        mode=mode,
        on_error=lambda info, error: errors.append(error),
    )

    await call(app, events)
    await app.join()

    assert events == ["http.response.start", "http.response.body"] + ["attempt"] * 3
    assert len(retry_lines(caplog)) == 2
    assert caplog.messages[-1] == (
        f"background task {task.__module__}.{task.__qualname__} failed after 3 attempts"
    )
    assert caplog.records[-1].exc_info is not None
    assert caplog.records[-1].exc_info[1] is errors[0]
    assert [type(error) for error in errors] == [ConnectionError]
    stats = app.stats
    assert (stats.scheduled, stats.failed, stats.retried) == (1, 1, 2)
    assert_accounted(stats)


async def test_only_the_exceptions_in_retry_on_are_retried(
    events: list[object], caplog: pytest.LogCaptureFixture
) -> None:
    flaky = Flaky(events, failures=1, error=ValueError("bad address"))
    task, _ = flaky_tasks(flaky, retries=3, retry_delay=0, retry_on=ConnectionError)
    app = BackgroundTasksMiddleware(scheduling((task, "attempt")))

    await call(app, events)
    await app.join()

    assert events.count("attempt") == 1
    assert caplog.messages[-1].endswith("failed")
    assert (app.stats.failed, app.stats.retried) == (1, 0)


async def test_an_own_cancellation_is_not_an_exception_to_retry(
    events: list[object],
) -> None:
    @task_options(retries=3, retry_delay=0)
    async def cancels_itself() -> None:
        events.append("attempt")
        asyncio.current_task().cancel()  # type: ignore[union-attr]
        await asyncio.sleep(0)

    app = BackgroundTasksMiddleware(scheduling((cancels_itself,)))

    await call(app, events)
    await app.join()

    assert events.count("attempt") == 1
    assert (app.stats.failed, app.stats.retried) == (1, 0)


@pytest.mark.parametrize("mode", MODES)
async def test_a_timeout_is_not_retried(
    mode: str, events: list[object], caplog: pytest.LogCaptureFixture
) -> None:
    @task_options(timeout=0.01, retries=3, retry_delay=0)
    async def hangs() -> None:
        events.append("attempt")
        await asyncio.Event().wait()

    app = BackgroundTasksMiddleware(scheduling((hangs,)), mode=mode)

    await call(app, events)
    await app.join()

    assert events.count("attempt") == 1
    assert caplog.messages[-1].endswith("timed out after 0.01 s and was cancelled")
    assert (app.stats.timed_out, app.stats.retried) == (1, 0)


async def test_a_task_waiting_for_its_retry_is_pending_and_holds_back_the_next(
    events: list[object],
) -> None:
    flaky = Flaky(events, failures=1, error=ConnectionError("smtp down"))
    task, _ = flaky_tasks(flaky, retries=1, retry_delay=60)
    app = BackgroundTasksMiddleware(
        with_lifespan(scheduling((task, "attempt"), (events.append, "next")), events),
        shutdown_timeout=0,
    )
    lifespan = Lifespan(app)
    await lifespan.startup()
    retrying = Logged("retrying in 60 s")
    logging.getLogger("asgi_bgtasks").addHandler(retrying)

    await call(app, events)
    await retrying.seen.wait()  # wakes after the retry was scheduled
    logging.getLogger("asgi_bgtasks").removeHandler(retrying)

    stats = app.stats
    assert (stats.pending, stats.running, stats.failed) == (2, 0, 0)
    assert_accounted(stats)
    assert "next" not in events
    await lifespan.shutdown()


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize(
    ("before", "added"),
    [((), ("added",)), ((), ("added 1", "added 2")), (("before",), ("added",))],
)
async def test_tasks_added_while_one_awaits_its_retry_run_after_that_retry(
    mode: str, before: tuple[str, ...], added: tuple[str, ...], events: list[object]
) -> None:
    flaky = Flaky(events, failures=1, error=ConnectionError("smtp down"))

    @task_options(retries=1, retry_delay=0)
    async def adds_then_fails(label: str) -> None:
        if flaky.failures:  # its first attempt
            for label_added in added:
                add_task(events.append, label_added)
        flaky.attempt(label)

    app = BackgroundTasksMiddleware(
        scheduling(*[(events.append, b) for b in before], (adds_then_fails, "attempt")),
        mode=mode,
    )

    await call(app, events)
    await app.join()
    await app.join()  # detached, they were added after the first join began

    assert events[-len(before) - 2 - len(added) :] == [
        *before,
        "attempt",
        "attempt",
        *added,
    ]
    assert (app.stats.succeeded, app.stats.retried) == (
        len(before) + 1 + len(added),
        1,
    )


async def test_per_task_timeout_overrides_the_middlewares(
    events: list[object], caplog: pytest.LogCaptureFixture
) -> None:
    @task_options(timeout=60)
    async def slow_but_allowed() -> None:
        await asyncio.sleep(0.05)
        events.append("slow done")

    @task_options(timeout=0.01)
    async def hangs() -> None:
        await asyncio.Event().wait()

    unlimited = BackgroundTasksMiddleware(scheduling((hangs,)))
    strict = BackgroundTasksMiddleware(
        scheduling((slow_but_allowed,)), task_timeout=0.01
    )

    await call(unlimited, events)
    await call(strict, events)

    assert unlimited.stats.timed_out == 1
    assert caplog.messages[-1].endswith("timed out after 0.01 s and was cancelled")
    assert (strict.stats.succeeded, events[-1]) == (1, "slow done")


@pytest.mark.parametrize("middleware_runs_on_error", [False, True])
async def test_run_on_error_per_task_overrides_the_middlewares(
    middleware_runs_on_error: bool,
    events: list[object],
    caplog: pytest.LogCaptureFixture,
) -> None:
    @task_options(run_on_error=True)
    async def audit() -> None:
        events.append("audit")

    @task_options(run_on_error=False)
    async def welcome() -> None:
        events.append("welcome")

    async def follows_middleware() -> None:
        events.append("follows middleware")

    async def fails(scope: Any, receive: Any, send: Any) -> None:
        add_task(audit)
        add_task(welcome)
        add_task(follows_middleware)
        await send({**START_200, "status": 500})
        await send(BODY)

    dropped: list[DroppedTask] = []
    app = BackgroundTasksMiddleware(
        fails, run_on_error=middleware_runs_on_error, on_drop=dropped.append
    )

    await call(app, events)

    ran = ["audit", "follows middleware"] if middleware_runs_on_error else ["audit"]
    assert [e for e in events if not str(e).startswith("http.")] == ran
    dropped_names = [d.name.rsplit(".", 1)[-1] for d in dropped]
    assert dropped_names == (
        ["welcome"] if middleware_runs_on_error else ["welcome", "follows_middleware"]
    )
    assert {d.reason for d in dropped} == {"error_response"}
    assert caplog.messages[0].startswith(
        f"dropped {len(dropped)} background task(s) because the response status was 500"
    )


async def test_options_reach_partials_and_callable_instances(
    events: list[object], caplog: pytest.LogCaptureFixture
) -> None:
    class Notifier:
        @task_options(retries=1, retry_delay=0)
        async def __call__(self, label: str) -> None:
            events.append(label)
            if events.count(label) == 1:
                raise ConnectionError("first try")

    @task_options(retries=1, retry_delay=0)
    async def send(label: str) -> None:
        events.append(label)
        if events.count(label) == 1:
            raise ConnectionError("first try")

    app = BackgroundTasksMiddleware(
        scheduling((Notifier(), "instance"), (functools.partial(send, "partial"),))
    )

    await call(app, events)

    assert events.count("instance") == events.count("partial") == 2
    assert (app.stats.succeeded, app.stats.retried) == (2, 2)


async def test_options_reach_static_and_class_methods_and_marked_partials(
    events: list[object],
) -> None:
    async def send(label: str) -> None:
        events.append(label)
        if events.count(label) == 1:
            raise ConnectionError("first try")

    class Mailer:
        @task_options(retries=1, retry_delay=0)
        @staticmethod
        async def static(label: str) -> None:
            await send(label)

        @task_options(retries=1, retry_delay=0)
        @classmethod
        async def of_class(cls, label: str) -> None:
            await send(label)

    marked = task_options(retries=1, retry_delay=0)(functools.partial(send, "partial"))
    app = BackgroundTasksMiddleware(
        scheduling((Mailer.static, "static"), (Mailer.of_class, "class"), (marked,))
    )

    await call(app, events)

    assert [events.count(label) for label in ("static", "class", "partial")] == [2] * 3
    assert (app.stats.succeeded, app.stats.retried) == (3, 3)


request_id: contextvars.ContextVar[str] = contextvars.ContextVar("request_id")


@pytest.mark.parametrize("kind", ["async", "sync"])
async def test_each_attempt_starts_from_the_context_of_add_task(
    kind: str, events: list[object]
) -> None:
    def attempt() -> None:
        events.append(request_id.get())
        request_id.set("changed by the failed attempt")
        if len(events) == 1:
            raise ConnectionError("first try")

    @task_options(retries=1, retry_delay=0)
    async def async_task() -> None:
        attempt()

    @task_options(retries=1, retry_delay=0)
    def sync_task() -> None:
        attempt()

    async def app(scope: Any, receive: Any, send: Any) -> None:
        request_id.set("at add_task")
        add_task(async_task if kind == "async" else sync_task)
        await send(START_200)
        await send(BODY)

    await call(BackgroundTasksMiddleware(app), [])

    assert events == ["at add_task", "at add_task"]


async def test_the_stats_identity_holds_at_every_step_under_retries_and_drops(
    events: list[object],
) -> None:
    @task_options(retries=2, retry_delay=0.001)
    async def flaky(n: int) -> None:
        events.append(n)
        if events.count(n) < 2:
            raise ConnectionError("first try")

    @task_options(timeout=0.005, retries=2, retry_delay=0)
    async def hangs(n: int) -> None:
        await asyncio.Event().wait()

    async def app(scope: Any, receive: Any, send: Any) -> None:
        n = int(scope["path"].strip("/"))
        add_task(flaky, n)
        add_task(hangs, n)
        await send({**START_200, "status": 503 if n % 3 == 0 else 200})
        await send(BODY)

    middleware = BackgroundTasksMiddleware(app, mode="detached", max_concurrency=4)
    snapshots = []

    async def sample() -> None:
        while True:
            snapshots.append(middleware.stats)
            await asyncio.sleep(0)

    sampler = asyncio.create_task(sample())
    for n in range(1, 31):
        await call(middleware, [], {"type": "http", "path": f"/{n}"})
    await middleware.join()
    sampler.cancel()

    for stats in snapshots:
        assert_accounted(stats)
    final = middleware.stats
    assert final == Stats(
        scheduled=60,
        succeeded=20,
        failed=0,
        timed_out=20,
        dropped=20,
        running=0,
        pending=0,
        retried=20,
    )
    assert any(stats.pending and stats.retried for stats in snapshots)


async def test_a_coroutine_a_retried_sync_task_returns_runs_in_that_attempts_context(
    events: list[object],
) -> None:
    async def reports() -> None:
        events.append(request_id.get())

    @task_options(retries=1, retry_delay=0)
    def sets_then_returns_a_coroutine() -> Any:
        request_id.set("set by this attempt")
        return reports()

    await call(
        BackgroundTasksMiddleware(scheduling((sets_then_returns_a_coroutine,))), []
    )

    assert events == ["set by this attempt"]
