"""The Prometheus exposition of :mod:`.collect` (``prometheus-client``): a custom collector that reads live
values on every scrape, and the small HTTP server behind ``qt metrics serve``."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterator
from typing import Any

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector, CollectorRegistry

from qt_pipeline.monitoring.collect import METRICS, MetricsSnapshot

log = logging.getLogger(__name__)


class SnapshotCollector(Collector):
    """Calls ``snapshot()`` on every scrape and turns it into metric families (names from ``METRICS``).
    Counter names end in ``_total`` in ``METRICS``; prometheus-client adds that suffix itself."""

    def __init__(self, snapshot: Callable[[], MetricsSnapshot]):
        self._snapshot = snapshot
        self._lock = threading.Lock()  # one collection at a time (it queries the central store)

    def describe(self) -> list[Metric]:
        return []  # unchecked collector: families are produced at scrape time

    def collect(self) -> Iterator[Metric]:
        with self._lock:
            snap = self._snapshot()
        for error in snap.errors:
            log.warning("metrics collection: %s", error)
        for name, samples in snap.by_name():
            kind, help_text = METRICS[name]
            label_names = [k for k, _ in samples[0].labels]
            family: Any
            if kind == "counter":
                family = CounterMetricFamily(name.removesuffix("_total"), help_text, labels=label_names)
            else:
                family = GaugeMetricFamily(name, help_text, labels=label_names)
            for s in samples:
                family.add_metric([v for _, v in s.labels], s.value)
            yield family
        errors = GaugeMetricFamily("qt_collect_errors", "sources that failed in this collection")
        errors.add_metric([], len(snap.errors))
        yield errors


def make_registry(snapshot: Callable[[], MetricsSnapshot]) -> CollectorRegistry:
    """A registry holding only the qt metrics (no process/platform collectors of the default one)."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(SnapshotCollector(snapshot))
    return registry


def serve(snapshot: Callable[[], MetricsSnapshot], port: int, addr: str = "127.0.0.1") -> tuple[Any, Any]:
    """Serve ``/metrics`` on ``addr:port`` in a background thread; returns ``(server, thread)`` (call
    ``server.shutdown()`` to stop)."""
    from prometheus_client import start_http_server

    return start_http_server(port, addr=addr, registry=make_registry(snapshot))


__all__ = ["SnapshotCollector", "make_registry", "serve"]
