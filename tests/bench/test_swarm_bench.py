"""The namespace testbed and a small run of the swarm benchmark, all three modes.

The full benchmark (12 hosts, 100 MiB) is ``make bench``; this proves the harness:
links are shaped, hosts start together, every mode completes, the counters add up,
results are written, and nothing is left behind, whatever happens.
"""

from __future__ import annotations

import json
import os
import socket
import threading
import time
from pathlib import Path

import pytest
from bench.modes import swarm_done
from bench.swarm import build_parser, parse_rate, run

from eagle.testing.netns import NetnsError, Shape, Testbed, list_namespaces, remove_stale

MB = 1_000_000


def leftovers(prefix: str) -> list[str]:
    return [n for n in list_namespaces() if n.startswith(prefix)]


def transfer_rate(tb: Testbed, nbytes: int) -> float:
    """Bytes/s of one TCP stream from the first host to the second."""
    a, b = tb.hosts[0], tb.hosts[1]
    received = 0
    ready = threading.Event()

    def serve() -> None:
        nonlocal received
        with b.entered():
            server = socket.create_server((b.ip, 9000))
        ready.set()
        conn, _ = server.accept()
        while chunk := conn.recv(1 << 20):
            received += len(chunk)
        conn.close()
        server.close()

    thread = threading.Thread(target=serve)
    thread.start()
    ready.wait(5)
    with a.entered():
        client = socket.create_connection((b.ip, 9000), timeout=10)
    started = time.monotonic()
    client.sendall(b"\0" * nbytes)
    client.close()
    thread.join(30)
    assert received == nbytes
    return nbytes / (time.monotonic() - started)


def test_links_are_shaped_both_ways_and_across_the_wan(tmp_path: Path) -> None:
    prefix = f"eglt-{os.getpid()}-"
    with Testbed(prefix, idcs=2, wan=Shape(4 * MB)) as tb:
        tb.add_host("a", idc=0, up=Shape(8 * MB), down=Shape(8 * MB))
        tb.add_host("b", idc=1, up=Shape(8 * MB), down=Shape(8 * MB))
        # The WAN (4 MB/s) is the narrowest link on the path.
        rate = transfer_rate(tb, 6 * MB)
        assert 2.8 * MB < rate < 4.6 * MB, f"{rate / MB:.2f} MB/s"
        into_b, _ = tb.wan_stats(1)
        assert into_b.bytes >= 6 * MB and into_b.payload >= 5.9 * MB
        tb.shape(tb.hosts[1], up=Shape(2 * MB), down=Shape(2 * MB))
        rate = transfer_rate(tb, 3 * MB)
        assert 1.4 * MB < rate < 2.3 * MB, f"{rate / MB:.2f} MB/s"
    assert leftovers(prefix) == []


def test_testbed_refuses_a_prefix_in_use_and_cleans_up_after_an_error() -> None:
    prefix = f"eglt-{os.getpid()}-"
    with pytest.raises(RuntimeError, match="boom"), Testbed(prefix) as tb:
        tb.add_host("a", up=Shape(MB), down=Shape(MB))
        with pytest.raises(NetnsError, match="in use"):
            Testbed(prefix).start()
        proc = tb.process(tb.hosts[0], ["sleep", "600"], Path(os.devnull))
        proc.start()
        raise RuntimeError("boom")
    assert leftovers(prefix) == []
    assert not proc.alive


def test_stale_namespaces_of_dead_runs_are_removed() -> None:
    # A pid that cannot be alive: above the kernel's pid_max.
    dead = int(Path("/proc/sys/kernel/pid_max").read_text()) + 1
    prefix = f"eglb-{dead}-"
    tb = Testbed(prefix).start()
    tb.add_host("a", up=Shape(MB), down=Shape(MB))
    tb._closed = True  # as if the process that made it had been killed
    removed = remove_stale()
    assert {f"{prefix}sw", f"{prefix}a"} <= set(removed)
    assert leftovers(prefix) == []


def test_rates_parse_like_link_speeds() -> None:
    assert parse_rate("10MB/s") == 10 * MB
    assert parse_rate("80mbit") == 10 * MB
    assert parse_rate("1MiB/s") == 1 << 20
    assert parse_rate("500KB") == 500_000


@pytest.mark.timeout(150)
def test_swarm_time_comes_from_this_runs_log_line_not_an_earlier_repeats(
    tmp_path: Path,
) -> None:
    log = tmp_path / "h0.log"
    line = "{} INFO eagle.agent.fetch blob fetched source=p2p digest=sha256:ab bytes={} seconds=1"
    log.write_text(
        "\n".join(
            [
                line.format("2026-11-27 10:00:05,000", 1000),  # the first repeat
                line.format("2026-11-27 10:01:02,500", 10),  # another blob
                line.format("2026-11-27 10:01:03,250", 1000),  # this repeat
            ]
        )
    )
    go = time.mktime(time.strptime("2026-11-27 10:01:00", "%Y-%m-%d %H:%M:%S"))

    assert swarm_done(log, 1000, go) == pytest.approx(3.25)
    assert swarm_done(log, 99, go) is None


def test_small_benchmark_runs_every_mode_and_leaves_nothing(tmp_path: Path) -> None:
    prefix = f"eglt-{os.getpid()}-"
    out = tmp_path / "out"
    args = build_parser().parse_args(
        [
            "--hosts",
            "3",
            "--layer-size",
            "3M",
            "--small-layers",
            "1",
            "--host-bandwidth",
            "20MB/s",
            "--modes",
            "direct,plain,eagle",
            "--no-single",
            "--out",
            str(out),
            "--workdir",
            str(tmp_path),
            "--prefix",
            prefix,
        ]
    )
    started = time.monotonic()
    document = run(args)
    elapsed = time.monotonic() - started

    size = document["image"]["bytes"]
    summaries = {s["mode"]: s for s in document["summaries"]}
    assert set(summaries) == {"direct", "plain", "eagle"}
    for mode, summary in summaries.items():
        assert summary["failed"] == 0, (mode, summary)
        # Generous: a loaded 2-core machine; the real figures come from `make bench`.
        assert summary["max_ratio"] < 30, (mode, summary)
    # The origin served every host in direct mode, and the seeder alone otherwise.
    assert summaries["direct"]["origin_bytes"] >= 3 * size
    assert summaries["eagle"]["origin_bytes"] == size
    assert summaries["plain"]["origin_bytes"] == 0
    assert summaries["eagle"]["seeder_upload_bytes"] > 0.5 * size

    saved = json.loads((out / "swarm.json").read_text())
    assert len(saved["results"]) == 3 and all(len(r["hosts"]) == 3 for r in saved["results"])
    assert (out / "swarm.png").read_bytes().startswith(b"\x89PNG")
    assert (out / "table.txt").read_text().startswith("mode")
    assert leftovers(prefix) == []
    assert elapsed < 120
