"""Per-task options: `task_options` marks a function; `add_task` reads the mark."""

import functools
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

from ._checks import check_count, check_flag, check_seconds

F = TypeVar("F", bound=Callable[..., Any])

_ATTRIBUTE = "__asgi_bgtasks_options__"
MAX_RETRY_DELAY = 300.0  # seconds: the cap on a retry's exponential wait


@dataclass(frozen=True, slots=True)
class TaskOptions:
    """What `task_options` set; ``None`` means "the middleware's setting"."""

    timeout: float | None = None
    retries: int = 0
    retry_delay: float = 1.0
    retry_on: tuple[type[BaseException], ...] = (Exception,)
    run_on_error: bool | None = None

    def retry_wait(self, attempt: int, error: BaseException) -> float | None:
        """Seconds to wait before the attempt after failed ``attempt``, or
        None if it is not to be retried."""
        if attempt > self.retries or not isinstance(error, self.retry_on):
            return None
        doubled = self.retry_delay * 2.0 ** min(attempt - 1, 1000)  # no overflow
        return min(doubled, MAX_RETRY_DELAY)


DEFAULTS = TaskOptions()


def task_options(
    func: None = None,
    /,
    *,
    timeout: float | None = None,
    retries: int = 0,
    retry_delay: float = 1.0,
    retry_on: type[BaseException] | tuple[type[BaseException], ...] = (Exception,),
    run_on_error: bool | None = None,
) -> Callable[[F], F]:
    """Give a task function its own timeout, retries or ``run_on_error``.

    Returns a decorator that returns the same function, still callable
    directly; `add_task` reads the options whenever it schedules it. Bad
    values raise here, at decoration time.

    Args:
        func: Not given: the options are keywords. ``@task_options`` used
            without parentheses passes the function here, and raises
            ``TypeError`` saying to add them.
        timeout: Seconds per attempt, instead of the middleware's
            ``task_timeout``; ``None``: the middleware's. A timeout is not
            retried.
        retries: Retries after the first attempt (0: none). An int >= 0.
        retry_delay: Seconds before the first retry; each later one waits
            twice the one before, capped at 300 s. A number >= 0.
        retry_on: The exception classes (one, or a tuple) that are retried;
            any other exception fails the task at once.
        run_on_error: ``True``: run even after a 5xx response or an app
            crash (an audit record); ``False``: never then; ``None``: follow
            the middleware's ``run_on_error``.
    """
    if func is not None:
        raise TypeError(
            "task_options takes keyword options only and returns the decorator: "
            "write @task_options() with parentheses, or "
            f"@task_options(retries=3, ...), got {func!r}"
        )
    if timeout is not None:
        check_seconds("task_options: timeout", timeout, allow_zero=False)
    check_count("task_options: retries", retries, minimum=0)
    check_seconds("task_options: retry_delay", retry_delay, allow_zero=True)
    classes = retry_on if isinstance(retry_on, tuple) else (retry_on,)
    if not classes or not all(
        isinstance(c, type) and issubclass(c, BaseException) for c in classes
    ):
        raise TypeError(
            "task_options: retry_on must be an exception class or a tuple of "
            f"them, got {retry_on!r}"
        )
    check_flag("task_options: run_on_error", run_on_error, allow_none=True)
    options = TaskOptions(timeout, retries, retry_delay, classes, run_on_error)

    def mark(func: F) -> F:
        if isinstance(func, (staticmethod, classmethod)):
            setattr(func.__func__, _ATTRIBUTE, options)  # what the class gives out
            return func
        if not callable(func):
            raise TypeError(f"task_options() decorates a callable, got {func!r}")
        try:
            setattr(func, _ATTRIBUTE, options)
        except AttributeError:  # e.g. a bound method
            raise TypeError(
                f"task_options() cannot mark {func!r}: decorate the function "
                "where it is defined"
            ) from None
        return func

    return mark


def options_of(func: Any) -> TaskOptions:
    """The options `task_options` gave ``func``, or the function a partial
    wraps."""
    options = getattr(func, _ATTRIBUTE, None)
    while options is None and isinstance(func, functools.partial):
        func = func.func
        options = getattr(func, _ATTRIBUTE, None)
    if options is None:  # a callable instance whose __call__ was decorated
        options = getattr(type(func).__call__, _ATTRIBUTE, DEFAULTS)
    assert isinstance(options, TaskOptions)
    return options
