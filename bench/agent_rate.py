"""How close an agent's host-level rate limits come to what was configured.

Four scenarios, each measured over a 20 s window (after a 2 s warm-up) on loopback,
with real processes: Docker Distribution as origin, a tracker, a seeder and agents.

* p2p download: the agent under test pulls a blob from a peer (libtorrent's limiter);
* origin download: the same agent pulls a blob its seeder refuses (token bucket);
* mixed: one blob of each kind at once, which must share one budget;
* p2p upload: a peer pulls from the agent under test, the only fast source.

The seeder is capped at 1 KiB/s so it never serves as a fast source; agent A gets the
blobs from the origin once (falling back after 2 s) and feeds the others.

Run: ``.venv/bin/python -m bench.agent_rate [--rate 5M] [--window 20]``
"""

from __future__ import annotations

import argparse
import json
import signal
import sys
import tempfile
import threading
import time
import urllib.request
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from urllib.parse import urlsplit

from eagle.testing import OriginRegistry, build_oci_layout, push_image
from eagle.testing.cluster import EagleCluster, Node
from eagle.utils.net import parse_size

REPO = "bench/rate"
WARMUP = 2.0


def put_rates(agent: Node, **rates: int) -> None:
    request = urllib.request.Request(
        f"{agent.url}/v1/config/rate", data=json.dumps(rates).encode(), method="PUT"
    )
    urllib.request.urlopen(request, timeout=10).close()


def pull(url: str) -> None:
    with urllib.request.urlopen(url, timeout=600) as resp:
        while resp.read(1 << 20):
            pass


def sample(node: Node, names: list[str]) -> float:
    metrics = node.metrics()
    return sum(metrics.get(name, 0.0) for name in names)


def measure(
    node: Node, names: list[str], start: Callable[[], None], window: float
) -> tuple[float, float]:
    """Start the transfer; return (bytes/s over the window after the warm-up, seconds)."""
    start()
    time.sleep(WARMUP)
    before, t0 = sample(node, names), time.monotonic()
    time.sleep(window)
    after, t1 = sample(node, names), time.monotonic()
    return (after - before) / (t1 - t0), t1 - t0


def wait_cached(agent: Node, *digests: str) -> None:
    """Until the agent has these blobs: a scenario must not overlap the next one."""
    while True:
        with urllib.request.urlopen(f"{agent.url}/v1/cache", timeout=10) as resp:
            have = {b["digest"] for b in json.loads(resp.read())["blobs"]}
        if set(digests) <= have:
            return
        time.sleep(0.2)


def background(*urls: str) -> Callable[[], None]:
    def start() -> None:
        for url in urls:
            threading.Thread(target=pull, args=(url,), daemon=True).start()

    return start


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rate", default="5M", help="limit under test (bytes/s, units K/M/G)")
    parser.add_argument("--window", type=float, default=20.0, help="seconds measured")
    args = parser.parse_args()
    rate = parse_size(args.rate)
    # Long enough to outlast warm-up and window at the full rate.
    big = int(rate * (WARMUP + args.window) * 1.15)
    half = big // 2
    short = int(rate * 4)  # a typical layer: 4 s at the limit

    with tempfile.TemporaryDirectory(prefix="eagle-bench-rate-") as tmp:
        work = Path(tmp)
        print(f"building blobs: 2 x {big >> 20} MiB, 2 x {half >> 20} MiB", file=sys.stderr)
        sizes = [big, big, half, half, short]
        image = build_oci_layout(work / "image", sizes, seed=99, tag="v1")
        with OriginRegistry(work / "origin") as origin:
            push_image(image.layout_dir, origin.host, REPO, "v1")
            host = urlsplit(origin.url).netloc
            alias = host.replace("127.0.0.1", "localhost")
            with EagleCluster(
                work / "cluster",
                [origin.url],
                agents=3,
                seeder_args=["--upload-rate", "1K"],
                agent_args=["--origin", origin.url.replace("127.0.0.1", "localhost")],
            ) as cluster:
                feeder, tested, peer = cluster.of("agent")
                l1, l2, l3, l4, l5 = (layer.digest for layer in image.layers)

                def url(agent: Node, digest: str, ns: str) -> str:
                    return f"{agent.url}/v2/{REPO}/blobs/{digest}?ns={ns}"

                print("agent A fetches every blob once", file=sys.stderr)
                with ThreadPoolExecutor(4) as pool:
                    list(pool.map(pull, [url(feeder, d, host) for d in (l1, l2, l3, l4, l5)]))

                results = []
                put_rates(tested, download_rate=rate, upload_rate=0)
                print("short p2p download", file=sys.stderr)
                started = time.monotonic()
                pull(url(tested, l5, host))
                took = time.monotonic() - started
                short_run = (image.layers[4].size, took)
                p2p_down = ["eagle_agent_p2p_downloaded_bytes_total"]
                origin_down = ['eagle_agent_blob_bytes_served_total{source="origin"}']
                window = args.window
                print("p2p download", file=sys.stderr)
                got, secs = measure(tested, p2p_down, background(url(tested, l1, host)), window)
                results.append(("p2p download (libtorrent)", got, secs))
                wait_cached(tested, l1)
                print("origin download", file=sys.stderr)
                got, secs = measure(tested, origin_down, background(url(tested, l2, alias)), window)
                results.append(("origin download (token bucket)", got, secs))
                wait_cached(tested, l2)
                print("mixed", file=sys.stderr)
                got, secs = measure(
                    tested,
                    p2p_down + origin_down,
                    background(url(tested, l3, host), url(tested, l4, alias)),
                    window,
                )
                results.append(("p2p + origin at once (shared)", got, secs))
                wait_cached(tested, l3, l4)
                print("p2p upload", file=sys.stderr)
                put_rates(tested, download_rate=0, upload_rate=rate)
                feeder.process.stop()  # the tested agent is now the one fast source
                got, secs = measure(
                    tested,
                    ["eagle_agent_p2p_uploaded_bytes_total"],
                    background(url(peer, l1, host)),
                    window,
                )
                results.append(("p2p upload (libtorrent)", got, secs))

    print(f"\nconfigured: {rate / (1 << 20):.2f} MiB/s, window {args.window:.0f} s\n")
    print("| scenario | achieved MiB/s | achieved / configured |")
    print("| --- | --- | --- |")
    for name, got, _ in results:
        print(f"| {name} | {got / (1 << 20):.3f} | {got / rate:.3f} |")
    size, took = short_run
    ideal = size / rate
    print(
        f"\nshort p2p run: {size / (1 << 20):.1f} MiB in {took:.2f} s"
        f" (ideal {ideal:.2f} s, effective {ideal / took:.3f} of the limit)"
    )
    return 0


if __name__ == "__main__":
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(1))
    sys.exit(main())
