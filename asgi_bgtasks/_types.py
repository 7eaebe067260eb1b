"""Plain ASGI type aliases.

``asgiref.typing``'s TypedDicts demand every key and omit extension events such
as ``http.response.pathsend``, so the public API uses these simple aliases.
"""

from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]
