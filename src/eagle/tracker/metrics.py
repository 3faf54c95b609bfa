"""The tracker's Prometheus metrics, counted in plain integers.

A ``prometheus_client`` Counter costs a lock and a label lookup per increment,
which at tens of thousands of announces a second is a measurable share of the
budget. Here the hot path bumps dictionary entries and a collector turns them
into metric families only when ``/metrics`` is scraped.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator

from prometheus_client import CollectorRegistry
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector


class TrackerMetrics(Collector):
    """Counts of one tracker, exposed through its own registry (``self.registry``)."""

    def __init__(self) -> None:
        self.announces: Counter[tuple[str, str]] = Counter()
        """``(event, result)`` → announces answered; result is ok, invalid or error."""
        self.scrapes: Counter[str] = Counter()
        """result → scrapes answered."""
        self.handed_out = 0
        """Peers handed out in all answers."""
        self.swarms = 0
        self.peers = 0
        self.connections = 0
        self.registry = CollectorRegistry()
        self.registry.register(self)

    def collect(self) -> Iterator[Metric]:
        """Metric families built from the current counts."""
        announces = CounterMetricFamily(
            "eagle_tracker_announces",
            "Announces answered, by event and result.",
            labels=["event", "result"],
        )
        for (event, result), count in sorted(self.announces.items()):
            announces.add_metric([event, result], count)
        yield announces
        scrapes = CounterMetricFamily(
            "eagle_tracker_scrapes", "Scrapes answered, by result.", labels=["result"]
        )
        for result, count in sorted(self.scrapes.items()):
            scrapes.add_metric([result], count)
        yield scrapes
        yield CounterMetricFamily(
            "eagle_tracker_peers_handed_out",
            "Peers handed out in announce answers.",
            value=self.handed_out,
        )
        yield GaugeMetricFamily("eagle_tracker_swarms", "Swarms with peers.", value=self.swarms)
        yield GaugeMetricFamily("eagle_tracker_peers", "Peers across all swarms.", value=self.peers)
        yield GaugeMetricFamily(
            "eagle_tracker_connections", "Open HTTP connections.", value=self.connections
        )
