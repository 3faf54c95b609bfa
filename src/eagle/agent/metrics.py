"""The agent's Prometheus metrics: enough to answer "did p2p work for this pull?" at a glance.

* bytes served to clients by source (``cache``, ``p2p``, ``seeder``, ``origin``);
* bytes this host uploaded to and downloaded from peers;
* origin fallbacks by reason, cache hits, misses and evictions;
* how long bringing a blob in took, by source.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector


class AgentMetrics:
    """Every metric an agent exports, registered on one registry."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.registry = registry
        self.blob_bytes = Counter(
            "eagle_agent_blob_bytes_served",
            "Blob bytes served to clients, by source",
            ["source"],
            registry=registry,
        )
        self.blob_requests = Counter(
            "eagle_agent_blob_requests",
            "Blob GETs served, by source",
            ["source"],
            registry=registry,
        )
        self.fetched_bytes = Counter(
            "eagle_agent_blob_bytes_fetched",
            "Blob bytes brought into the cache, by source",
            ["source"],
            registry=registry,
        )
        self.fallbacks = Counter(
            "eagle_agent_origin_fallbacks",
            "Blob fetches that fell back to the origin, by reason",
            ["reason"],
            registry=registry,
        )
        self.prefetches = Counter(
            "eagle_agent_prefetches",
            "Blobs fetched because their image's manifest was served, by result",
            ["result"],
            registry=registry,
        )
        self.fetch_seconds = Histogram(
            "eagle_agent_blob_fetch_seconds",
            "Time to bring a blob into the cache, by source",
            ["source"],
            registry=registry,
            buckets=(0.1, 0.25, 0.5, 1, 2.5, 5, 10, 20, 40, 80, 160, 320),
        )
        self.cache_hits = Counter(
            "eagle_agent_cache_hits", "Blob GETs answered from the cache", registry=registry
        )
        self.cache_misses = Counter(
            "eagle_agent_cache_misses",
            "Blob GETs that had to fetch (p2p or origin)",
            registry=registry,
        )
        self.cache_evictions = Counter(
            "eagle_agent_cache_evictions",
            "Blobs evicted from the cache (least recently used first)",
            registry=registry,
        )
        self.cache_evicted_bytes = Counter(
            "eagle_agent_cache_evicted_bytes", "Bytes of evicted blobs", registry=registry
        )
        self.cache_bytes = Gauge(
            "eagle_agent_cache_bytes", "Bytes of blobs in the cache", registry=registry
        )
        self.cache_blobs = Gauge(
            "eagle_agent_cache_blobs", "Blobs in the cache (each seeded)", registry=registry
        )
        self.cache_capacity = Gauge(
            "eagle_agent_cache_capacity_bytes", "Configured cache size", registry=registry
        )
        self.uncached = Counter(
            "eagle_agent_uncached_streams",
            "Blob responses streamed from the origin without caching, by reason",
            ["reason"],
            registry=registry,
        )
        self.rate_limit = Gauge(
            "eagle_agent_rate_limit_bytes",
            "Host rate limit in bytes/s (0 = unlimited), by direction",
            ["direction"],
            registry=registry,
        )

    def watch_p2p(self, totals: Callable[[], tuple[int, int]], torrents: Callable[[], int]) -> None:
        """Export the p2p session's (downloaded, uploaded) payload bytes and torrent count."""
        self.registry.register(_P2PSession(totals, torrents))


class _P2PSession(Collector):
    """Reads libtorrent's session counters when Prometheus scrapes, not on a timer."""

    def __init__(self, totals: Callable[[], tuple[int, int]], torrents: Callable[[], int]) -> None:
        self._totals = totals
        self._torrents = torrents

    def collect(self) -> Iterator[CounterMetricFamily | GaugeMetricFamily]:
        yield GaugeMetricFamily(
            "eagle_agent_p2p_torrents",
            "Torrents in the session (downloading or seeding)",
            value=self._torrents(),
        )
        down, up = self._totals()
        yield CounterMetricFamily(
            "eagle_agent_p2p_downloaded_bytes",
            "Payload bytes downloaded from peers",
            value=down,
        )
        yield CounterMetricFamily(
            "eagle_agent_p2p_uploaded_bytes", "Payload bytes uploaded to peers", value=up
        )

    def describe(self) -> Iterator[CounterMetricFamily | GaugeMetricFamily]:
        # Describing without collecting keeps registration from reading the session.
        yield GaugeMetricFamily("eagle_agent_p2p_torrents", "")
        yield CounterMetricFamily("eagle_agent_p2p_downloaded_bytes", "")
        yield CounterMetricFamily("eagle_agent_p2p_uploaded_bytes", "")
