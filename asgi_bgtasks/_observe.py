"""Observers of task attempts: what tracing and metrics integrations see.

An observer learns when each attempt of a task starts and how it ended; it
never sees a task's arguments. The core imports no integration library:
`observers_found` loads our OpenTelemetry module only when
``opentelemetry-api`` is importable, and `asgi_bgtasks.prometheus.register`
adds its own observer.
"""

import contextvars
import importlib.util
import logging
from collections.abc import Sequence
from typing import Protocol

from ._stats import Outcome
from ._types import Ended

logger = logging.getLogger("asgi_bgtasks")

OBSERVER_FAILED = "observer %r raised while observing background task %s"


class Observer(Protocol):
    def active(self) -> bool:
        """Whether to observe attempts now (asked once per chain)."""

    def started(
        self,
        name: str,
        attempt: int,
        context: contextvars.Context,
        waited: float | None,
    ) -> Ended | None:
        """Attempt ``attempt`` of the task ``name`` starts in ``context`` (which
        it may change: the task runs in it); ``waited``, seconds from the end
        of its response to its first attempt's start (None for a retry)."""


def observers_found() -> list[Observer]:
    """The observers that need no set-up: tracing, if ``opentelemetry-api``
    is there (not just another distribution of the ``opentelemetry``
    namespace package, such as ``opentelemetry-proto``)."""
    if (
        importlib.util.find_spec("opentelemetry") is None
        or importlib.util.find_spec("opentelemetry.trace") is None
    ):
        return []
    from . import otel  # only where OpenTelemetry is installed

    return [otel.Tracing()]


def start(
    observers: Sequence[Observer],
    name: str,
    attempt: int,
    context: contextvars.Context,
    waited: float | None,
) -> list[Ended]:
    """Tell ``observers`` that an attempt starts; return what to call at its
    end. What an observer raises is logged, never propagated."""
    ends = []
    for observer in observers:
        try:
            ended = observer.started(name, attempt, context, waited)
        except Exception:
            logger.exception(OBSERVER_FAILED, observer, name, extra={"task": name})
        else:
            if ended is not None:
                ends.append(ended)
    return ends


def end(
    ends: Sequence[Ended],
    name: str,
    outcome: Outcome,
    error: BaseException | None,
    duration: float,
) -> None:
    """Tell the observers of an attempt how it ended."""
    for ended in ends:
        try:
            ended(outcome, error, duration)
        except Exception:
            logger.exception(OBSERVER_FAILED, ended, name, extra={"task": name})
