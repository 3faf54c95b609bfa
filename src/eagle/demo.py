"""``make demo``: a real image pulled through three agents, its layers moving peer-to-peer.

Starts Debian's docker-registry as the origin on a free loopback port, builds a
multi-layer OCI image locally (no internet) and pushes it with skopeo, starts a
tracker, a seeder and three agents, pulls the image through each agent with
``skopeo copy``, and prints where every agent's bytes came from. Then stops
everything it started.
"""

from __future__ import annotations

import logging
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from rich.console import Console
from rich.table import Table

from eagle.testing import OriginRegistry, build_oci_layout, pull_image, push_image
from eagle.testing.cluster import EagleCluster, Node

MiB = 1 << 20
LAYER_SIZES = [48 * MiB, 8 * MiB, 1 * MiB, 100 * 1024]
REPO, TAG = "demo/app", "v1"
# Where each agent brought the blobs in from: the swarm, a stream from the seeder while
# it fetched a cold blob (the first agent), or the origin (only if p2p failed).
SOURCES = ("p2p", "seeder", "origin")


def _fetched(node: Node) -> dict[str, float]:
    return {s: node.fetched(s) for s in SOURCES}


def _pull(node: Node, dest: Path) -> float:
    started = time.monotonic()
    pull_image(node.hostport, REPO, TAG, dest)
    return time.monotonic() - started


def run(workdir: Path, console: Console) -> bool:
    with OriginRegistry(workdir / "origin") as origin:
        console.print(f"origin registry (docker-registry) at {origin.url}")
        image = build_oci_layout(workdir / "layout", LAYER_SIZES, seed=7, tag=TAG)
        push_image(image.layout_dir, origin.host, REPO, TAG)
        console.print(
            f"pushed {REPO}:{TAG}: {len(image.layers)} layers, "
            f"{image.total_blob_bytes / MiB:.1f} MiB of blobs"
        )
        origin.reset_counts()
        with EagleCluster(workdir / "eagle", [origin.url], agents=3) as cluster:
            agents = cluster.of("agent")
            console.print("started tracker, seeder and agents " + ", ".join(a.url for a in agents))
            times = {agents[0].name: _pull(agents[0], workdir / "pull-0")}
            with ThreadPoolExecutor(len(agents) - 1) as pool:
                futures = {
                    a.name: pool.submit(_pull, a, workdir / f"pull-{i}")
                    for i, a in enumerate(agents[1:], start=1)
                }
                times.update({name: f.result() for name, f in futures.items()})
            table = Table(title=f"skopeo copy docker://AGENT/{REPO}:{TAG} through each agent")
            table.add_column("agent")
            table.add_column("seconds", justify="right")
            for source in SOURCES:
                table.add_column(f"MiB from {source}", justify="right")
            for agent in agents:
                fetched = _fetched(agent)
                table.add_row(
                    agent.name,
                    f"{times[agent.name]:.2f}",
                    *(f"{fetched[s] / MiB:.1f}" for s in SOURCES),
                )
            console.print(table)
            origin_bytes = origin.blob_bytes()
            console.print(
                f"origin served {origin_bytes / MiB:.1f} MiB of blobs for "
                f"{len(agents)} pulls of {image.total_blob_bytes / MiB:.1f} MiB "
                f"({origin_bytes / image.total_blob_bytes:.2f}x the image)"
            )
            return origin_bytes <= image.total_blob_bytes


def main() -> None:
    logging.basicConfig(level=logging.WARNING)
    console = Console()
    with tempfile.TemporaryDirectory(prefix="eagle-demo-") as tmp:
        ok = run(Path(tmp), console)
    console.print("demo finished: every component stopped")
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
