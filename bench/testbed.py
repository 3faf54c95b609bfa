"""The benchmark's swarm: an infra host (origin, tracker, seeder) and N agent hosts.

Built on :class:`eagle.testing.netns.Testbed`. The infra host is the first host of
IDC 0 (``10.77.0.1``). Its upload is split in two shaped classes on one wire: the
origin registry's traffic (source port 5000) at ``origin_bandwidth``, everything
else (seeder, tracker) at ``seeder_bandwidth``. The seeder reaches the origin over
the infra host's own loopback, as a seeder next to its registry would.
"""

from __future__ import annotations

import json
import logging
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType

from eagle.testing import ManagedProcess, OriginRegistry, wait_http
from eagle.testing.netns import Host, QdiscStats, Shape, Testbed

log = logging.getLogger(__name__)

ORIGIN_PORT = 5000
TRACKER_PORT = 7070
SEEDER_PORT = 7071
P2P_PORT = 6881
AGENT_PORT = 5000  # on each host's own loopback
REPO_ROOT = Path(__file__).resolve().parent.parent


@dataclass(frozen=True)
class SwarmSpec:
    """What to build: hosts, IDCs and link rates (bytes/s) with the shapers' knobs."""

    hosts: int = 12
    idcs: int = 1
    host_bandwidth: int = 10_000_000
    origin_bandwidth: int = 10_000_000
    seeder_bandwidth: int = 10_000_000
    wan_bandwidth: int = 10_000_000
    burst: int = 32 * 1024
    queue_ms: float = 50.0
    prefix: str | None = None

    def __post_init__(self) -> None:
        if self.hosts < 1:
            raise ValueError("need at least one host")
        if not 1 <= self.idcs <= self.hosts:
            raise ValueError("idcs must be between 1 and the number of hosts")

    def shape(self, rate: int) -> Shape:
        """A link of ``rate`` bytes/s with this spec's burst and queue."""
        return Shape(rate, self.burst, self.queue_ms)


@dataclass
class SwarmTestbed:
    """Namespaces, links and the origin registry; other services start per benchmark mode."""

    spec: SwarmSpec
    workdir: Path
    testbed: Testbed = field(init=False)
    infra: Host = field(init=False)
    hosts: list[Host] = field(init=False, default_factory=list)
    origin: OriginRegistry = field(init=False)

    def __post_init__(self) -> None:
        spec = self.spec
        wan = spec.shape(spec.wan_bandwidth) if spec.idcs > 1 else None
        self.testbed = Testbed(spec.prefix, idcs=spec.idcs, wan=wan)

    # -- lifecycle ---------------------------------------------------------------------------

    def __enter__(self) -> SwarmTestbed:
        self.testbed.__enter__()
        try:
            self._build()
        except BaseException:
            self.testbed.__exit__(*sys.exc_info())
            raise
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        try:
            if hasattr(self, "origin"):
                self.origin.stop()
        finally:
            self.testbed.__exit__(exc_type, exc, tb)

    def _build(self) -> None:
        spec = self.spec
        self.infra = self.testbed.add_host(
            "infra",
            idc=0,
            up=spec.shape(spec.seeder_bandwidth),
            up_by_port={ORIGIN_PORT: spec.shape(spec.origin_bandwidth)},
            down=spec.shape(max(spec.seeder_bandwidth, spec.origin_bandwidth)),
        )
        link = spec.shape(spec.host_bandwidth)
        for i in range(spec.hosts):
            idc = i * spec.idcs // spec.hosts
            self.hosts.append(self.testbed.add_host(f"h{i}", idc=idc, up=link, down=link))
        self.origin = OriginRegistry(
            self.workdir / "origin", port=ORIGIN_PORT, listen_host="0.0.0.0"
        )
        with self.infra.entered():
            self.origin.start()

    # -- addresses ---------------------------------------------------------------------------

    @property
    def origin_url(self) -> str:
        """The origin as every host reaches it."""
        return f"http://{self.infra.ip}:{ORIGIN_PORT}"

    @property
    def tracker_url(self) -> str:
        """The announce URL every host uses."""
        return f"http://{self.infra.ip}:{TRACKER_PORT}/announce"

    @property
    def seeder_url(self) -> str:
        """The seeder's HTTP API as every host reaches it."""
        return f"http://{self.infra.ip}:{SEEDER_PORT}"

    # -- processes ---------------------------------------------------------------------------

    def eagle(
        self,
        host: Host,
        argv: Sequence[str],
        log_path: Path,
        *,
        health_port: int | None = None,
        timeout: float = 60.0,
    ) -> ManagedProcess:
        """Start ``python -m eagle ARGV`` in ``host``; wait for its ``/healthz`` if given."""
        proc = self.testbed.process(
            host, [sys.executable, "-m", "eagle", *argv], log_path, name=f"{host.label}:{argv[0]}"
        )
        proc.start()
        if health_port is not None:
            self.wait_healthy(host, health_port, proc, timeout)
        return proc

    def wait_healthy(
        self, host: Host, port: int, proc: ManagedProcess, timeout: float = 60.0
    ) -> None:
        """Wait until ``127.0.0.1:PORT/healthz`` answers inside ``host``."""
        with host.entered():
            wait_http(f"http://127.0.0.1:{port}/healthz", timeout, process=proc)

    # -- counters ----------------------------------------------------------------------------

    def link_bytes(self) -> dict[str, tuple[int, int]]:
        """Bytes each host has received and sent on its link so far, by host label, read
        from the switch side in one call (cheap enough to sample a few times a second)."""
        data = json.loads(self.testbed.switch.ip("-s", "-j", "link", "show"))
        by_dev = {d["ifname"]: d["stats64"] for d in data}
        out = {}
        for host in [self.infra, *self.hosts]:
            stats = by_dev.get(host.port_dev)
            if stats is not None:
                # The switch port transmits what the host receives, and vice versa.
                out[host.label] = (int(stats["tx"]["bytes"]), int(stats["rx"]["bytes"]))
        return out

    def counters(self) -> dict[str, QdiscStats]:
        """A snapshot of the counters a mode is judged by; subtract two snapshots."""
        infra_up = self.infra.upload_stats()
        out = {
            "origin_up": infra_up[str(ORIGIN_PORT)],
            "seeder_up": infra_up["default"],
            "hosts_up": QdiscStats(),
        }
        drops = 0
        for host in [self.infra, *self.hosts]:
            drops += host.drops(self.testbed.switch)
        for host in self.hosts:
            out["hosts_up"] = out["hosts_up"] + host.upload_stats()["total"]
        out["drops"] = QdiscStats(drops=drops + self.testbed.wan_drops())
        for idc in range(self.spec.idcs):
            into, _ = self.testbed.wan_stats(idc)
            out[f"wan_in_{idc}"] = into
        return out


def diff(after: dict[str, QdiscStats], before: dict[str, QdiscStats]) -> dict[str, QdiscStats]:
    """Per-key ``after - before``."""
    return {k: after[k] - before.get(k, QdiscStats()) for k in after}
