"""OpenTelemetry tracing of background tasks (the ``otel`` extra).

Nothing to set up: when ``opentelemetry-api`` is importable, every attempt of
a task runs in a span named after the task, a child of the span current at
``add_task`` (so it shows in the request's trace), and current inside the
task (so its own HTTP or database calls nest under it). Until a tracer
provider is configured, nothing is traced.
"""

import contextvars

from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.trace import Span, Status, StatusCode, Tracer, TracerProvider

from ._stats import Outcome
from ._types import Ended
from ._version import __version__


class Tracing:
    """The observer that traces each attempt in a span."""

    _provider: TracerProvider | None = None
    _tracer: Tracer

    def __repr__(self) -> str:
        return "<asgi_bgtasks.otel.Tracing>"

    def __init__(self) -> None:
        # Loads the provider that OTEL_PYTHON_TRACER_PROVIDER names, if any.
        trace.get_tracer_provider()

    def active(self) -> bool:
        """Only once a tracer provider has been configured; its tracer, not
        a proxy's, which would stay bound to the first provider for good."""
        # What trace.get_tracer_provider() returns once a provider is set;
        # until then, that function reads os.environ on every call (0.6 µs,
        # a fifth of a request's cost with one task).
        provider = trace._TRACER_PROVIDER
        if provider is None:
            return False
        if provider is not self._provider:
            self._provider = provider
            self._tracer = provider.get_tracer("asgi_bgtasks", __version__)
        return True

    def started(
        self,
        name: str,
        attempt: int,
        context: contextvars.Context,
        waited: float | None,
    ) -> Ended:
        attributes: dict[str, str | int] = {"code.function.name": name}
        if attempt > 1:
            attributes["asgi_bgtasks.attempt"] = attempt
        # In the task's context: the parent is the span current at add_task,
        # and the new span is current for the task's own code.
        span = context.run(self._tracer.start_span, name, attributes=attributes)
        context.run(otel_context.attach, trace.set_span_in_context(span))
        return lambda outcome, error, duration: _end(span, outcome, error)


def _end(span: Span, outcome: Outcome, error: BaseException | None) -> None:
    span.set_attribute("asgi_bgtasks.outcome", outcome)
    if error is not None:  # it failed, or timed out (a TimeoutError)
        span.set_status(Status(StatusCode.ERROR, type(error).__name__))
        span.record_exception(error)
    span.end()
