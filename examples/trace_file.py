"""Spans as JSON lines in a file, one file per process: how
``tests/test_celery_tracing.py`` collects the spans of the web process and of
the Celery worker without a collector. In production, export to your
collector instead (``BatchSpanProcessor(OTLPSpanExporter())``).
"""

import json
import threading
from collections.abc import Sequence
from pathlib import Path

from opentelemetry import trace
from opentelemetry.instrumentation.celery import CeleryInstrumentor
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import (
    SimpleSpanProcessor,
    SpanExporter,
    SpanExportResult,
)

from examples.span_json import as_dict


class JsonLinesExporter(SpanExporter):
    """Appends each finished span to ``path``, one JSON object a line."""

    def __init__(self, path: str) -> None:
        self.path = Path(path)
        self.lock = threading.Lock()

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        lines = "".join(json.dumps(as_dict(span), default=str) + "\n" for span in spans)
        with self.lock, self.path.open("a") as file:
            file.write(lines)
        return SpanExportResult.SUCCESS


def trace_to_file(path: str) -> None:
    """Once in each process, web or worker, before its first span."""
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(JsonLinesExporter(path)))
    trace.set_tracer_provider(provider)
    CeleryInstrumentor().instrument()
