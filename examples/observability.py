"""Tracing and metrics of tasks. Run: ``hypercorn examples.observability:app``.

``POST /orders`` answers 201, then two tasks run: one sends the receipt (and
traces its own SMTP call), the other syncs the CRM, which is down: it fails.
The request and its tasks are one trace (OpenTelemetry's ASGI
instrumentation makes the request's span; each task's span is its child).
``GET /spans`` lists the finished spans (kept in memory here; send them to
your collector with an OTLP exporter instead); ``GET /metrics`` is what
Prometheus scrapes.
"""

import itertools
import logging

from opentelemetry import trace
from opentelemetry.instrumentation.asgi import OpenTelemetryMiddleware
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import (
    InMemorySpanExporter,
)
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

import asgi_bgtasks.prometheus
from asgi_bgtasks import BackgroundTasksMiddleware, add_task
from examples.span_json import as_dict

logging.basicConfig(level=logging.INFO)
order_numbers = itertools.count(1)

# Tracing: a provider once, at start-up (in production, with
# BatchSpanProcessor(OTLPSpanExporter()) from opentelemetry-exporter-otlp).
exporter = InMemorySpanExporter()
provider = TracerProvider()
provider.add_span_processor(SimpleSpanProcessor(exporter))
trace.set_tracer_provider(provider)
tracer = trace.get_tracer(__name__)


async def send_receipt(address: str, order: int) -> None:
    with tracer.start_as_current_span("smtp send"):  # nests under the task's span
        pass  # a real task talks to the SMTP server here


async def sync_crm(order: int) -> None:
    raise ConnectionError("CRM unreachable")


async def place_order(request: Request) -> JSONResponse:
    order = next(order_numbers)
    add_task(send_receipt, request.query_params["email"], order)
    add_task(sync_crm, order)
    return JSONResponse({"order": order}, status_code=201)


async def finished_spans(request: Request) -> JSONResponse:
    return JSONResponse([as_dict(span) for span in exporter.get_finished_spans()])


async def metrics(request: Request) -> Response:
    return Response(generate_latest(), media_type=CONTENT_TYPE_LATEST)


routes = [
    Route("/orders", place_order, methods=["POST"]),
    Route("/spans", finished_spans),
    Route("/metrics", metrics),
]
traced = OpenTelemetryMiddleware(
    Starlette(routes=routes), excluded_urls="/spans,/metrics"
)
# Outermost, as always: the request's span ends with its response, and the
# tasks' spans follow it in the same trace.
app = BackgroundTasksMiddleware(traced)
asgi_bgtasks.prometheus.register(app)  # into prometheus_client's REGISTRY
