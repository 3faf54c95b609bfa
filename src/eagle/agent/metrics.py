"""The agent's Prometheus metrics: enough to answer "did p2p work for this pull?" at a glance."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Histogram


class AgentMetrics:
    def __init__(self, registry: CollectorRegistry) -> None:
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
        self.fetch_seconds = Histogram(
            "eagle_agent_blob_fetch_seconds",
            "Time to bring a blob into the cache, by source",
            ["source"],
            registry=registry,
            buckets=(0.1, 0.25, 0.5, 1, 2.5, 5, 10, 20, 40, 80, 160, 320),
        )
