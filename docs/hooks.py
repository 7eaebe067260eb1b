"""MkDocs hooks: the footer names the version of asgi_bgtasks being
documented, and the API reference shows defaults as values."""

import re
from typing import Any

import asgi_bgtasks
from asgi_bgtasks import _middleware

# Defaults that depend on the machine: shown as the expression, not as the
# value on the machine that built the docs.
_EXPRESSIONS = {"DEFAULT_MAX_THREADS": "min(32, os.cpu_count() + 4)"}


def on_config(config: Any) -> Any:
    config["copyright"] = f"asgi-bgtasks {asgi_bgtasks.__version__} · MIT License"
    return config


def on_post_page(html: str, page: Any, **kwargs: Any) -> str:
    """In the API reference (once autorefs has made its links), a default
    named by a constant (``max_concurrency: int = DEFAULT_MAX_CONCURRENCY``)
    reads as its value (``= 1000``)."""
    if page.file.src_uri != "api.md":
        return html
    for name, value in vars(_middleware).items():
        if name.startswith("DEFAULT_") and isinstance(value, int | float | str):
            shown = _EXPRESSIONS.get(name, repr(value))
            shown_span = rf"\g<1>{shown}</span>"
            html = re.sub(rf"(<span [^>]*>){name}</span>", shown_span, html)
            html = html.replace(f'title="asgi_bgtasks._middleware.{name}"', "")
    return html
