"""Prometheus exposition through ``prometheus_client``: our histograms as metric families, one response.

Node and router build their metrics at scrape time from the counters they keep anyway
(a custom collector per server), so nothing is counted twice and the library does the
format, including label escaping.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from prometheus_client.core import HistogramMetricFamily, Metric

from ..histogram import Histogram


class FunctionCollector:
    """A collector whose metric families come from a function called at every scrape."""

    def __init__(self, collect: Callable[[], Iterable[Metric]]) -> None:
        self._collect = collect

    def collect(self) -> Iterator[Metric]:
        yield from self._collect()


def histogram_family(name: str, documentation: str, labels: list[str]) -> HistogramMetricFamily:
    return HistogramMetricFamily(name, documentation, labels=labels)


def add_histogram(family: HistogramMetricFamily, labels: list[str], histogram: Histogram) -> None:
    """Add one labelled ``Histogram`` (seconds) to ``family``."""
    family.add_metric(labels, buckets=[(bound, count) for bound, count in histogram.cumulative()],
                      sum_value=histogram.total)  # fmt: skip


def registry_of(*collectors: object) -> CollectorRegistry:
    """A private registry (never the process-global one) holding ``collectors``."""
    registry = CollectorRegistry(auto_describe=False)
    for collector in collectors:
        registry.register(collector)  # type: ignore[arg-type]
    return registry


def metrics_response(registry: CollectorRegistry) -> web.Response:
    body = generate_latest(registry)
    response = web.Response(body=body)
    response.headers["Content-Type"] = CONTENT_TYPE_LATEST
    return response
