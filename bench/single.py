"""Single-host figures: one agent against a direct pull, on the infra host's loopback.

The origin, a fresh tracker, seeder and agent all run in the infra namespace and
talk over its loopback, unshaped. Each repetition pulls the image straight from
the origin (direct), then through a fresh agent (cold: the seeder fetches from the
origin and streams the blob to the agent meanwhile, as it does for the first agent
asking for a cold blob; the agent prefetches the image's other blobs when skopeo gets
the manifest), then through the same agent again (warm: a cache hit). The same
skopeo command does every pull.
"""

from __future__ import annotations

import logging
import shutil
import statistics
import time
from pathlib import Path
from typing import Any

from bench.modes import REPO, TAG, Bench
from eagle.testing import pull_image
from eagle.testing.cluster import EagleCluster

log = logging.getLogger(__name__)


def _timed_pull(source: str, dest: Path) -> float:
    started = time.monotonic()
    pull_image(source, REPO, TAG, dest)
    seconds = time.monotonic() - started
    shutil.rmtree(dest, ignore_errors=True)
    return seconds


def single_host(bench: Bench, repeats: int = 3) -> dict[str, Any]:
    """Median seconds of direct, cold and warm pulls, and the ratios to direct."""
    runs: dict[str, list[float]] = {"direct": [], "cold": [], "warm": []}
    origin = bench.tb.origin
    with bench.tb.infra.entered():
        for r in range(repeats):
            work = bench.workdir / "single" / str(r)
            runs["direct"].append(_timed_pull(origin.host, work / "direct"))
            with EagleCluster(work / "cluster", [origin.url], agents=1) as cluster:
                (agent,) = cluster.of("agent")
                runs["cold"].append(_timed_pull(agent.hostport, work / "cold"))
                runs["warm"].append(_timed_pull(agent.hostport, work / "warm"))
            shutil.rmtree(work, ignore_errors=True)
            log.info("single host run=%d %s", r, {k: round(v[-1], 2) for k, v in runs.items()})
    direct = statistics.median(runs["direct"])
    cold = statistics.median(runs["cold"])
    warm = statistics.median(runs["warm"])
    return {
        "repeats": repeats,
        "runs": runs,
        "direct_seconds": direct,
        "cold_seconds": cold,
        "warm_seconds": warm,
        "cold_ratio": cold / direct,
        "warm_ratio": warm / direct,
    }
