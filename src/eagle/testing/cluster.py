"""An Eagle cluster of real processes on loopback: trackers, seeders and agents.

Used by the integration tests, ``make demo`` and benchmarks. Every component is
an ``eagle`` subprocess started with the same command line a user would type.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import signal
import sys
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from eagle.testing.procs import ManagedProcess, StartStopContext, wait_http
from eagle.utils.net import free_port

log = logging.getLogger(__name__)

HOST = "127.0.0.1"
_SAMPLE = re.compile(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{[^}]*\})?\s+(\S+)$")


@dataclass
class Node:
    """One running component."""

    kind: str
    name: str
    url: str
    process: ManagedProcess
    data_dir: Path | None = None

    @property
    def hostport(self) -> str:
        return self.url.removeprefix("http://")

    def metrics(self) -> dict[str, float]:
        """The node's Prometheus samples: ``name{labels}`` → value."""
        with urllib.request.urlopen(f"{self.url}/metrics", timeout=5) as resp:
            text = resp.read().decode()
        samples: dict[str, float] = {}
        for line in text.splitlines():
            match = _SAMPLE.match(line)
            if match:
                samples[match.group(1) + (match.group(2) or "")] = float(match.group(3))
        return samples

    def served(self, source: str) -> float:
        """Blob bytes this agent sent to clients, by where they were: ``cache``, ``p2p``
        (a download the request joined), ``seeder`` or ``origin`` (streamed in)."""
        return self.metrics().get(f'eagle_agent_blob_bytes_served_total{{source="{source}"}}', 0.0)

    def fetched(self, source: str) -> float:
        """Blob bytes this agent brought in from ``p2p``, a ``seeder`` stream or the ``origin``,
        whether a client's request or a prefetch asked for them."""
        return self.metrics().get(f'eagle_agent_blob_bytes_fetched_total{{source="{source}"}}', 0.0)


@contextlib.contextmanager
def frozen(nodes: list[Node]) -> Iterator[None]:
    """SIGSTOP the nodes' process groups for the block; always SIGCONT them after.

    A frozen process keeps its sockets: connections are accepted by the kernel but
    never answered, the hardest kind of dead peer to notice.
    """
    try:
        for node in nodes:
            os.killpg(node.process.pid, signal.SIGSTOP)
        yield
    finally:
        for node in nodes:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(node.process.pid, signal.SIGCONT)


@dataclass
class EagleCluster(StartStopContext):
    """Start trackers, then seeders, then agents; stop them all in reverse order."""

    workdir: Path
    origins: list[str]
    agents: int = 3
    seeders: int = 1
    trackers: int = 1
    agent_args: list[str] = field(default_factory=list)
    # Where agents listen (e.g. the outer end of a VethNamespace, for runtimes inside it).
    agent_host: str = HOST
    # A YAML file given to seeders and agents with --config (origins with CAs, credentials).
    config_file: Path | None = None
    seeder_args: list[str] = field(default_factory=list)
    tracker_args: list[str] = field(default_factory=list)
    """Extra flags of every tracker, e.g. ``--peer-store redis://…`` to share one view."""
    env: dict[str, str] | None = None
    """The components' environment (default: ours), e.g. without ``AWS_*`` variables."""
    nodes: list[Node] = field(default_factory=list)

    def _start(self, kind: str, index: int, args: list[str]) -> Node:
        host = self.agent_host if kind == "agent" else HOST
        port = free_port(host)
        name = f"{kind}{index}"
        data_dir = self.workdir / name
        argv = [sys.executable, "-m", "eagle", kind, "--listen", f"{host}:{port}", *args]
        if kind != "tracker":
            argv += ["--data-dir", str(data_dir), "--p2p-port", str(free_port(HOST))]
            argv += [a for o in self.origins for a in ("--origin", o)]
        if kind != "tracker" and self.config_file is not None:
            argv += ["--config", str(self.config_file)]
        proc = ManagedProcess(argv, self.workdir / "logs" / f"{name}.log", name=name, env=self.env)
        node = Node(kind, name, f"http://{host}:{port}", proc, data_dir)
        self.nodes.append(node)
        proc.start()
        wait_http(f"{node.url}/healthz", timeout=30, process=proc)
        return node

    def start(self) -> EagleCluster:
        try:
            for i in range(self.trackers):
                self._start("tracker", i, list(self.tracker_args))
            tracker_args = [a for t in self.tracker_urls for a in ("--tracker", t)]
            for i in range(self.seeders):
                self._start("seeder", i, tracker_args + self.seeder_args)
            seeder_args = [a for s in self.of("seeder") for a in ("--seeder", s.url)]
            for i in range(self.agents):
                self._start("agent", i, tracker_args + seeder_args + self.agent_args)
        except BaseException:
            self.stop()
            raise
        log.info("cluster up nodes=%s", [n.name for n in self.nodes])
        return self

    def stop(self) -> None:
        for node in reversed(self.nodes):
            node.process.stop()

    def of(self, kind: str) -> list[Node]:
        return [n for n in self.nodes if n.kind == kind]

    @property
    def tracker_urls(self) -> list[str]:
        return [f"{n.url}/announce" for n in self.of("tracker")]
