"""MkDocs hook: the footer names the version of asgi_bgtasks being documented."""

from typing import Any

import asgi_bgtasks


def on_config(config: Any) -> Any:
    config["copyright"] = f"asgi-bgtasks {asgi_bgtasks.__version__} · MIT License"
    return config
