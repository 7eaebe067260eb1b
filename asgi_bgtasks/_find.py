"""Find the `BackgroundTasksMiddleware` an app installed, for the helpers
that take "the app" (`testing.settled`, `prometheus.register`)."""

from typing import Any

from ._middleware import BackgroundTasksMiddleware


def middleware_in(app: Any, helper: str) -> BackgroundTasksMiddleware:
    """``app`` itself, or the middleware found inside it by following each
    layer's ``.app``: a Starlette / FastAPI app's built middleware stack
    (``app.add_middleware(BackgroundTasksMiddleware, ...)``), Quart's
    ``asgi_app``, or any middleware wrapped around it.

    Raises `TypeError` naming ``helper`` and what it needs if there is none.
    """
    layer, seen = app, set[int]()
    while layer is not None and id(layer) not in seen:
        if isinstance(layer, BackgroundTasksMiddleware):
            return layer
        seen.add(id(layer))
        layer = _inner(layer)
    raise TypeError(
        f"{helper} needs the BackgroundTasksMiddleware instance, or an app that "
        "installed it (app.add_middleware(BackgroundTasksMiddleware), or "
        f"app.asgi_app = BackgroundTasksMiddleware(app.asgi_app)); found none in "
        f"{app!r}"
    )


def _inner(layer: Any) -> Any:
    """The app ``layer`` hands requests to, or None."""
    if hasattr(layer, "user_middleware") and hasattr(layer, "build_middleware_stack"):
        # Starlette builds its stack on the first call; build it as it does.
        if getattr(layer, "middleware_stack", None) is None:
            layer.middleware_stack = layer.build_middleware_stack()
        return layer.middleware_stack
    asgi_app = getattr(layer, "asgi_app", None)  # Quart
    if asgi_app is not None and not callable(getattr(asgi_app, "__func__", None)):
        return asgi_app
    return getattr(layer, "app", None)
