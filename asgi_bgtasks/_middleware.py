"""The ASGI middleware: scope routing, the send wrapper, lifespan and hand-off."""

import asyncio
import logging
import os
from collections.abc import Awaitable
from typing import Any, Literal, cast

from asgiref.compatibility import guarantee_single_callable

from ._chain import DONE, Chain, now
from ._checks import check_count, check_flag, check_hook, check_seconds
from ._runner import DropHandler, ErrorHandler, TaskRunner
from ._stats import Ledger, Stats
from ._tasks import (
    _NEEDS_ASYNCIO,
    SCOPE_KEY,
    BackgroundTasks,
    DropReason,
    _current,
    _Task,
)
from ._types import ASGIApp, Message, Receive, Scope, Send

logger = logging.getLogger("asgi_bgtasks")

Mode = Literal["auto", "detached", "inline"]

MODE_DETACHED = (
    "lifespan startup seen: background tasks run detached and are drained "
    "on shutdown for up to %s s"
)
MODE_INLINE = "background tasks run inline, inside each request's ASGI call"
LIFESPAN_UNSUPPORTED = (
    "the app does not handle lifespan (it %s); BackgroundTasksMiddleware "
    "completes the lifespan protocol itself so that tasks drain on shutdown"
)
JOIN_ITSELF = (
    "join() was awaited inside a request that scheduled background tasks, or "
    "inside one of its tasks: it would wait for itself. Await join() outside "
    "the request and its tasks (in a test, or a lifespan handler)"
)
LIFESPAN_ABORTED = (
    "the app received lifespan.startup but %s without answering it; "
    "BackgroundTasksMiddleware completes the lifespan protocol itself so that "
    "tasks drain on shutdown"
)


# Enough for I/O-bound tasks at full load: 50 ms tasks at 5,000 requests/s
# keep 250 chains busy (100 throttled them to 2,000 tasks/s). Memory is
# bounded by max_pending, not by this.
DEFAULT_MAX_CONCURRENCY = 1_000

# Python's own default for a thread pool: threads for plain def tasks are
# mostly waiting on I/O, but each one is a real OS thread.
DEFAULT_MAX_THREADS = min(32, (os.cpu_count() or 1) + 4)


class BackgroundTasksMiddleware:
    """Run tasks added during a request after its response has been sent.

    Wrap the whole ASGI app with it, outermost. Every option is keyword-only
    and checked here: a bad value raises ``ValueError`` or ``TypeError``
    naming the option.

    Args:
        app: Any ASGI 3 application (ASGI 2 is accepted and adapted).
        mode: ``"inline"``: tasks run inside the request's ASGI call.
            ``"detached"``: the middleware owns them and the call returns at
            once. ``"auto"``: detached once a lifespan startup has been seen
            (then drained on shutdown), inline otherwise. See "Drain modes".
        max_concurrency: How many requests' task chains run at once, in
            either mode; the others wait in one FIFO queue. An int >= 1.
        max_pending: Detached only: once this many tasks wait to start
            (queued for a slot, or behind a running task of their request),
            the final response message of a request whose tasks will run is
            held until fewer do (backpressure: memory stays bounded, nothing
            is dropped). An int >= 1.
        max_threads: Worker threads of the middleware's own pool for plain
            ``def`` tasks (never the loop's default executor). The default
            is ``min(32, os.cpu_count() + 4)``. An int >= 1.
        task_timeout: Seconds a task may run before it is cancelled, logged
            and counted as timed out; ``None``: no limit. A number > 0.
        shutdown_timeout: Seconds the lifespan shutdown waits for pending
            and running tasks before cancelling the rest; shutdown then
            completes within about 0.5 s more. A number >= 0.
        run_on_error: Run a request's tasks even after a 5xx response, an
            app crash before the final message, or no response at all.
            A task's own ``task_options(run_on_error=...)`` overrides it.
        on_error: ``(TaskInfo, BaseException) -> None``, called after a task
            failed or timed out (it is logged anyway).
        on_drop: ``(DroppedTask) -> None``, called once for every task that
            will not complete, with its function, arguments and the reason.
    """

    def __init__(
        self,
        app: Any,
        /,
        *,
        mode: Mode = "auto",
        max_concurrency: int = DEFAULT_MAX_CONCURRENCY,
        max_pending: int = 10_000,
        max_threads: int = DEFAULT_MAX_THREADS,
        task_timeout: float | None = None,
        shutdown_timeout: float = 30.0,
        run_on_error: bool = False,
        on_error: ErrorHandler | None = None,
        on_drop: DropHandler | None = None,
    ) -> None:
        if mode not in ("auto", "detached", "inline"):
            raise ValueError(
                f"mode must be 'auto', 'detached' or 'inline', got {mode!r}"
            )
        check_count("max_concurrency", max_concurrency)
        check_count("max_pending", max_pending)
        check_count("max_threads", max_threads)
        if task_timeout is not None:
            check_seconds("task_timeout", task_timeout, allow_zero=False)
        check_seconds("shutdown_timeout", shutdown_timeout, allow_zero=True)
        check_flag("run_on_error", run_on_error)
        check_hook("on_error", on_error)
        check_hook("on_drop", on_drop)
        single = guarantee_single_callable(app)  # type: ignore[no-untyped-call]
        self.app: ASGIApp = cast(ASGIApp, single)
        self.mode = mode
        self.max_pending = max_pending
        self.shutdown_timeout = shutdown_timeout
        self.run_on_error = run_on_error
        self._ledger = Ledger(max_pending)
        self._runner = TaskRunner(
            self._ledger,
            max_concurrency=max_concurrency,
            max_threads=max_threads,
            task_timeout=task_timeout,
            on_error=on_error,
            on_drop=on_drop,
        )
        self._detached = mode == "detached"
        self._on_asyncio = False  # seen running on an asyncio loop

    @property
    def stats(self) -> Stats:
        """A snapshot of the task counters."""
        return self._ledger.snapshot()

    async def join(self) -> None:
        """Wait until every task scheduled so far has ended.

        Raises `RuntimeError` at once if awaited where it would wait for
        itself: by a task's own code, or by a request that scheduled tasks.
        """
        tasks = _current.get()
        if (
            tasks is not None
            and tasks._ledger is self._ledger
            and (tasks._chained or tasks._has_tasks())
        ):
            raise RuntimeError(JOIN_ITSELF)
        await self._ledger.join()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        scope_type = scope["type"]
        if scope_type not in _REQUESTS or SCOPE_KEY in scope:
            if scope_type == "lifespan":
                await self._lifespan(scope, receive, send)
            else:  # another scope type, or an outer BackgroundTasksMiddleware
                await self.app(scope, receive, send)
            return
        if self._on_asyncio:
            tasks = BackgroundTasks(self._ledger)
        else:
            tasks = BackgroundTasks(self._ledger, self._asyncio_missing())
        scope[SCOPE_KEY] = tasks
        token = _current.set(tasks)
        watch = None
        if scope_type == "http":
            watch = _ResponseWatch(send, tasks, self)
        error: BaseException | None = None
        try:
            await self.app(scope, receive, send if watch is None else watch.send)
        except BaseException as raised:
            error = raised
        _current.reset(token)
        # Outside any except block: tasks must not see the app's exception.
        if not tasks._close_if_empty() and self._hand_off(
            tasks, _why_not_run(watch, error), error
        ):
            chain = self._runner.run(tasks)
            if chain.state is not DONE:  # it did not end as it started
                await self._run_inline(chain)
        if error is not None:
            try:
                raise error
            finally:
                del error  # no cycle: this frame -> error -> traceback -> frame

    def _asyncio_missing(self) -> str | None:
        """None once a request ran on an asyncio loop; else why ``add_task``
        must refuse (a request under another event loop)."""
        try:
            asyncio.get_running_loop()
        except RuntimeError:
            return _NEEDS_ASYNCIO
        self._on_asyncio = True
        return None

    def _hand_off(
        self,
        tasks: BackgroundTasks,
        why_not: "tuple[DropReason, str] | None",
        error: BaseException | None,
    ) -> bool:
        """Drop or detach the tasks of a finished request; True if they are
        to run inline."""
        runner = self._runner
        cancelled = isinstance(error, asyncio.CancelledError)
        if why_not is not None:
            dropped = tasks._close_unless(self._runs_on_error)
            if dropped:
                runner.drop(dropped, *why_not)
            if tasks._close_if_empty():
                return False
        if self._detached and runner.accepting:
            runner.submit(tasks)
        elif not runner.accepting and runner.expired:  # (no property call
            runner.abandon(tasks._close(), "shutdown")  # on the hot path)
        elif cancelled:  # this call is being cancelled: it cannot run them
            runner.abandon(tasks._close(), "cancelled")
        else:
            return True
        return False

    def _held(self, tasks: BackgroundTasks) -> Awaitable[None] | None:
        """Backpressure, detached: what a request that added ``tasks`` must
        await before its final message, if anything: room in the queue of
        chains waiting for a slot (`Ledger.room`)."""
        if self._runner.accepting and self._ledger.crowded():
            return self._ledger.room()
        return None

    def _runs_on_error(self, task: _Task) -> bool:
        """Whether ``task`` runs after a failed request (its own option first)."""
        own = task.options.run_on_error
        return self.run_on_error if own is None else own

    def _any_runs_on_error(self, tasks: BackgroundTasks) -> bool:
        """Whether any of ``tasks`` would run after an error response."""
        tasks._gather_threads()  # added from threads: they count too
        return any(self._runs_on_error(task) for task in tasks._waiting())

    async def _run_inline(self, chain: Chain) -> None:
        """Wait for an inline chain; if the server cancels this call, end the
        chain, then let that same cancellation go on (its message is how
        anyio's cancel scopes know their own)."""
        try:
            await chain.ended()
            return
        except asyncio.CancelledError as cancelled:
            cancellation = cancelled
        try:
            await self._runner.cancel_chains([chain], "cancelled")
            raise cancellation
        finally:
            del cancellation  # no cycle: this frame -> it -> traceback -> frame

    async def _lifespan(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Pass lifespan through; drain tasks before the app sees shutdown."""
        received_startup = False
        answered_startup = False

        if self._asyncio_missing() is not None:
            await self._refuse_lifespan(receive, send)
            return

        async def receive_and_drain() -> Message:
            nonlocal received_startup
            message = await receive()
            if message["type"] == "lifespan.startup":
                received_startup = True
            else:  # lifespan.shutdown
                await self._runner.shutdown(self.shutdown_timeout)
            return message

        async def send_and_watch(message: Message) -> None:
            nonlocal answered_startup
            if message["type"] == "lifespan.startup.complete":
                answered_startup = True
                self._started()
            elif message["type"] == "lifespan.startup.failed":
                answered_startup = True
            await send(message)

        error: Exception | None = None
        try:
            await self.app(scope, receive_and_drain, send_and_watch)
        except Exception as raised:
            if answered_startup:
                raise
            error = raised
        else:
            if answered_startup:
                return
        how = "returned" if error is None else f"raised {type(error).__name__}: {error}"
        if received_startup:
            logger.warning(LIFESPAN_ABORTED, how, exc_info=error)
        else:
            logger.info(LIFESPAN_UNSUPPORTED, how)
        # The app does not speak lifespan: speak it for the app.
        if not received_startup:
            await receive_and_drain()
        self._started()
        await send({"type": "lifespan.startup.complete"})
        await receive_and_drain()
        await send({"type": "lifespan.shutdown.complete"})

    async def _refuse_lifespan(self, receive: Receive, send: Send) -> None:
        """Not on asyncio: fail the startup, loudly, rather than serve
        requests whose tasks could never run."""
        logger.error(_NEEDS_ASYNCIO)
        await receive()  # lifespan.startup
        await send({"type": "lifespan.startup.failed", "message": _NEEDS_ASYNCIO})

    def _started(self) -> None:
        self._runner.reopen()
        if self.mode == "inline":
            logger.info(MODE_INLINE)
        else:
            self._detached = True
            logger.info(MODE_DETACHED, self.shutdown_timeout)


_REQUESTS = frozenset({"http", "websocket"})
_BODY_ENDS = frozenset(
    {"http.response.body", "http.response.pathsend", "http.response.zerocopysend"}
)


class _ResponseWatch:
    """Wraps ``send`` to learn the status and whether the response ended.

    The response has ended once the server's ``send`` of the final message
    returned; messages after that change nothing. In detached mode, the
    final message of a request that added tasks waits for room
    (`BackgroundTasksMiddleware._held`).
    """

    __slots__ = ("_send", "middleware", "phase", "status", "tasks", "trailers")

    def __init__(
        self, send: Send, tasks: BackgroundTasks, middleware: BackgroundTasksMiddleware
    ) -> None:
        self._send = send
        self.tasks = tasks
        self.middleware = middleware
        self.status = 0  # -1: one the middleware cannot read
        self.trailers = False
        self.phase = _SENDING

    def send(self, message: Message) -> Awaitable[None]:
        """Note what ``message`` says; return the server's ``send`` of it.

        A plain function, not a coroutine: no extra frame per message, but
        for the final one, whose delivery decides.
        """
        if self.phase:  # the final message went out (or failed to)
            return self._send(message)
        message_type = message.get("type")
        if message_type in _BODY_ENDS:
            if not self.trailers and not message.get("more_body", False):
                return self._send_final(message)
        elif message_type == "http.response.start":
            status = message.get("status")
            self.status = status if type(status) is int else _read_status(status)
            self.trailers = message.get("trailers", False)
        elif (
            message_type == "http.response.trailers"
            and self.trailers
            and not message.get("more_trailers", False)
        ):
            return self._send_final(message)
        return self._send(message)

    async def _send_final(self, message: Message) -> None:
        middleware = self.middleware
        tasks = self.tasks
        # Held only if its tasks will run: not an error response's, unless
        # some of them run on error.
        status = self.status
        if (
            middleware._detached
            and tasks._has_tasks()
            and (0 < status < 500 or middleware._any_runs_on_error(tasks))
        ):
            held = middleware._held(tasks)
            if held is not None:
                await held
        try:
            await self._send(message)
        except BaseException:
            self.phase = _SEND_FAILED
            raise
        self.phase = _SENT
        if middleware._runner.observers:  # when it ended, for their wait time
            tasks._watched = (now(), ())


# A response watch's phases: the final message not sent yet, sent, or the
# server's send of it raised.
_SENDING, _SENT, _SEND_FAILED = 0, 1, 2


def _why_not_run(
    watch: _ResponseWatch | None, error: BaseException | None
) -> tuple[DropReason, str] | None:
    """Why a request's tasks must not run, or None if they should."""
    if watch is None:  # websocket: only a failing app call stops them
        return None if error is None else ("app_failed", f"the app {_failed(error)}")
    if watch.phase == _SEND_FAILED:
        return ("app_failed", "the server's send of the final response message raised")
    if error is not None and watch.phase == _SENDING:
        return (
            "app_failed",
            f"the app {_failed(error)} before its final response message",
        )
    if watch.status == 0:
        return ("app_failed", "the app sent no response")
    if watch.status < 0:
        return ("app_failed", "its response status could not be read")
    if watch.status >= 500:
        return ("error_response", f"the response status was {watch.status}")
    return None


def _read_status(status: Any) -> int:
    """A status that is not an int, read as a server reads it (``"200"``
    is 200); -1 if it cannot be."""
    try:
        return int(status)
    except Exception:  # whatever it is, it cannot be read: the app's failure
        return -1


def _failed(error: BaseException) -> str:
    if isinstance(error, asyncio.CancelledError):
        return "was cancelled"
    return f"raised {type(error).__name__}"
