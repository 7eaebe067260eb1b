"""Bad options are refused in the constructor, naming the option."""

import functools
import math

import pytest
from helpers import app_that, call

from asgi_bgtasks import BackgroundTasksMiddleware


async def app(scope: object, receive: object, send: object) -> None:
    pass


async def async_handler(info: object, error: object) -> None:
    pass


class AsyncHook:
    async def __call__(self, *args: object) -> None:
        pass


@pytest.mark.parametrize(
    ("option", "value", "error", "message"),
    [
        ("mode", "eager", ValueError, "mode must be 'auto', 'detached' or 'inline'"),
        ("max_concurrency", 0, ValueError, "max_concurrency must be >= 1, got 0"),
        ("max_concurrency", 2.5, TypeError, "max_concurrency must be an int"),
        ("max_concurrency", True, TypeError, "max_concurrency must be an int"),
        ("max_pending", -1, ValueError, "max_pending must be >= 1, got -1"),
        ("task_timeout", -1, ValueError, "task_timeout must be > 0, got -1"),
        ("task_timeout", 0, ValueError, "task_timeout must be > 0, got 0"),
        ("task_timeout", math.nan, ValueError, "task_timeout must be > 0, got nan"),
        ("task_timeout", "5", TypeError, "task_timeout must be a number of seconds"),
        ("shutdown_timeout", -0.5, ValueError, "shutdown_timeout must be >= 0"),
        ("run_on_error", "yes", TypeError, "run_on_error must be a bool"),
        ("on_error", "log", TypeError, "on_error must be a plain (not async) callable"),
        ("on_error", async_handler, TypeError, "on_error must be a plain"),
        ("max_threads", 0, ValueError, "max_threads must be >= 1, got 0"),
        ("max_threads", "4", TypeError, "max_threads must be an int"),
        ("on_drop", print.__self__, TypeError, "on_drop must be a plain"),
        ("on_drop", async_handler, TypeError, "on_drop must be a plain"),
        ("on_drop", AsyncHook(), TypeError, "on_drop must be a plain"),
        ("on_error", AsyncHook(), TypeError, "on_error must be a plain"),
    ],
)
def test_bad_option_is_refused_with_a_message_naming_it(
    option: str, value: object, error: type[Exception], message: str
) -> None:
    with pytest.raises(error) as raised:
        BackgroundTasksMiddleware(app, **{option: value})  # type: ignore[arg-type]

    assert str(raised.value).startswith(message)


def test_good_options_are_kept() -> None:
    middleware = BackgroundTasksMiddleware(
        app,
        mode="inline",
        max_pending=5,
        task_timeout=1.5,
        shutdown_timeout=0,
        run_on_error=True,
    )

    assert (middleware.mode, middleware.max_pending) == ("inline", 5)
    assert (middleware.shutdown_timeout, middleware.run_on_error) == (0, True)


async def test_dropped_tasks_are_named_by_function_partial_or_class(
    caplog: pytest.LogCaptureFixture,
) -> None:
    class Notifier:
        def __call__(self) -> None:
            pass

    middleware = BackgroundTasksMiddleware(
        app_that(
            schedule=[
                (functools.partial(async_handler, None), (None,)),
                (Notifier(), ()),
                ([].append, (1,)),
            ]
        )
    )

    await call(middleware, [])

    assert caplog.messages == [
        "dropped 3 background task(s) because the app sent no response: "
        "test_validation.async_handler, "
        "test_validation.test_dropped_tasks_are_named_by_function_partial_or_class"
        ".<locals>.Notifier, list.append"
    ]
