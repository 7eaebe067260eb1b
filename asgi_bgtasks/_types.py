"""Plain ASGI type aliases, and what an observer is called with.

``asgiref.typing``'s TypedDicts demand every key and omit extension events such
as ``http.response.pathsend``, so the public API uses these simple aliases.
"""

from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

from ._stats import Outcome

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

# What an observer is called with once an attempt has ended: its outcome (a
# `Stats` field name), what it raised (a timeout as the builtin
# TimeoutError) and how long it ran, in seconds.
Ended = Callable[[Outcome, BaseException | None, float], None]
