"""Prometheus metrics of background tasks (the ``prometheus`` extra).

`register` exports a middleware's counters, read from its `Stats` when the
registry is scraped (nothing is counted twice, and the hot path pays
nothing for them), and two histograms observed as tasks run: how long each
attempt ran, by task, and how long a task waited from the end of its
response to the start of its first attempt.
"""

import contextvars
import weakref
from collections.abc import Iterator
from typing import Any

try:
    from prometheus_client import REGISTRY, CollectorRegistry, Histogram
    from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
    from prometheus_client.registry import Collector
except ModuleNotFoundError as missing:
    if missing.name != "prometheus_client":
        raise
    raise ModuleNotFoundError(
        "asgi_bgtasks.prometheus needs prometheus_client, which the prometheus "
        "extra installs: pip install 'asgi-bgtasks[prometheus]'",
        name=missing.name,
    ) from missing

from ._find import middleware_in
from ._middleware import BackgroundTasksMiddleware
from ._stats import Stats
from ._types import Ended

OUTCOMES = ("succeeded", "failed", "timed_out", "dropped")


def register(
    middleware: Any,
    registry: CollectorRegistry = REGISTRY,
    *,
    label: str = "default",
) -> None:
    """Export ``middleware``'s task metrics to ``registry``.

    ``middleware`` is the `BackgroundTasksMiddleware` instance, or the app
    that installed it (a Starlette / FastAPI app that called
    ``app.add_middleware(BackgroundTasksMiddleware)``, a Quart app whose
    ``asgi_app`` it wraps). Several middleware instances may share a
    registry: each gets its own value of the ``middleware`` label
    (``label``, keyword-only), which must be new there.
    """
    if not isinstance(registry, CollectorRegistry):
        raise TypeError(
            "register(): registry must be a prometheus_client CollectorRegistry, "
            f"got {registry!r}; the label is keyword-only: "
            f"register(middleware, label={registry!r})"
        )
    if not isinstance(label, str):
        raise TypeError(f"register(): label must be a str, got {label!r}")
    middleware = middleware_in(middleware, "register()")
    exporter = _exporters.get(registry)
    if exporter is None:
        exporter = _exporters[registry] = _Exporter(registry)
    exporter.add(middleware, label)


class _Exporter(Collector):
    """The metrics of every middleware registered with one registry."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self._middlewares: dict[str, BackgroundTasksMiddleware] = {}
        self.duration = Histogram(
            "asgi_bgtasks_task_duration_seconds",
            "How long each attempt of a background task ran.",
            ["middleware", "task"],
            registry=registry,
        )
        self.wait = Histogram(
            "asgi_bgtasks_task_wait_seconds",
            "From the end of a task's response to the start of its first attempt.",
            ["middleware"],
            registry=registry,
        )
        registry.register(self)

    def add(self, middleware: BackgroundTasksMiddleware, label: str) -> None:
        if label in self._middlewares:
            raise ValueError(
                f"a middleware labelled {label!r} is registered already: "
                "give each middleware its own label=..."
            )
        self._middlewares[label] = middleware
        middleware._runner.observers.append(_Timing(self, label))

    def describe(self) -> Iterator[Any]:
        return self._families({})

    def collect(self) -> Iterator[Any]:
        stats = {label: m.stats for label, m in self._middlewares.items()}
        return self._families(stats)

    def _families(self, stats: dict[str, Stats]) -> Iterator[Any]:
        labels = ["middleware"]
        scheduled = CounterMetricFamily(
            "asgi_bgtasks_tasks_scheduled",
            "Background tasks scheduled with add_task.",
            labels=labels,
        )
        ended = CounterMetricFamily(
            "asgi_bgtasks_tasks",
            "Background tasks ended, by outcome (a Stats field name).",
            labels=[*labels, "outcome"],
        )
        retries = CounterMetricFamily(
            "asgi_bgtasks_task_retries",
            "Retries of background tasks (attempts after the first).",
            labels=labels,
        )
        running = GaugeMetricFamily(
            "asgi_bgtasks_tasks_running",
            "Background tasks running now.",
            labels=labels,
        )
        pending = GaugeMetricFamily(
            "asgi_bgtasks_tasks_pending",
            "Background tasks waiting to start (or to be retried).",
            labels=labels,
        )
        for label, snapshot in stats.items():
            scheduled.add_metric([label], snapshot.scheduled)
            for outcome in OUTCOMES:
                ended.add_metric([label, outcome], getattr(snapshot, outcome))
            retries.add_metric([label], snapshot.retried)
            running.add_metric([label], snapshot.running)
            pending.add_metric([label], snapshot.pending)
        yield from (scheduled, ended, retries, running, pending)


class _Timing:
    """The observer that feeds one middleware's histograms."""

    def __init__(self, exporter: _Exporter, label: str) -> None:
        self._exporter = exporter
        self._label = label

    def __repr__(self) -> str:
        return f"<asgi_bgtasks.prometheus timing {self._label!r}>"

    def active(self) -> bool:
        return True

    def started(
        self,
        name: str,
        attempt: int,
        context: contextvars.Context,
        waited: float | None,
    ) -> Ended:
        if waited is not None:
            self._exporter.wait.labels(self._label).observe(waited)
        duration = self._exporter.duration.labels(self._label, name)
        return lambda outcome, error, seconds: duration.observe(seconds)


_exporters: "weakref.WeakKeyDictionary[CollectorRegistry, _Exporter]" = (
    weakref.WeakKeyDictionary()
)
