"""A finished span as a plain dict: what the examples that show spans to
their tests (``examples/observability.py``, ``examples/trace_file.py``) send."""

from typing import Any

from opentelemetry.sdk.trace import ReadableSpan


def as_dict(span: ReadableSpan) -> dict[str, Any]:
    parent = span.parent
    return {
        "name": span.name,
        "kind": span.kind.name,
        "trace_id": format(span.context.trace_id, "032x"),
        "span_id": format(span.context.span_id, "016x"),
        "parent_id": None if parent is None else format(parent.span_id, "016x"),
        "start": span.start_time,
        "attributes": dict(span.attributes or {}),
        "status": span.status.status_code.name,
        "events": [event.name for event in span.events],
    }
