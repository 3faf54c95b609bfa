"""The benchmark's modes, each run on the same testbed, image, links and barrier start.

* ``direct``: every host pulls the image from the origin with skopeo.
* ``plain``: stock libtorrent on every host (and as the seeder), the same torrents,
  our tracker (with ``--policy random`` when the tracker has it).
* ``eagle``: an Eagle tracker, seeder and one agent per host; every host pulls the
  image with skopeo through its own agent.

Every mode starts its services, waits until they are ready, releases all hosts at
once, and stops its services again; the origin and the namespaces stay.
"""

from __future__ import annotations

import contextlib
import datetime
import functools
import itertools
import logging
import os
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
import urllib.parse
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench.barrier import Barrier
from bench.testbed import (
    AGENT_PORT,
    ORIGIN_PORT,
    P2P_PORT,
    REPO_ROOT,
    SEEDER_PORT,
    TRACKER_PORT,
    SwarmTestbed,
    diff,
)
from eagle.core.digest import Digest
from eagle.core.metainfo import Metainfo, PieceHasher
from eagle.testing import ImageInfo, ManagedProcess, http_get_status
from eagle.testing.netns import QdiscStats

log = logging.getLogger(__name__)

REPO, TAG = "bench/image", "latest"


@dataclass
class HostResult:
    """One host's pull: seconds from the common start to a complete image."""

    host: str
    idc: int
    seconds: float | None
    ok: bool
    error: str | None = None
    swarm_seconds: float | None = None  # eagle: when the agent had the largest blob


@dataclass
class ModeResult:
    """What a mode measured."""

    mode: str
    hosts: list[HostResult]
    counters: dict[str, QdiscStats]
    origin_bytes: int
    seeder_upload_app: int | None = None  # the seeder's own count, where it has one
    notes: list[str] = field(default_factory=list)
    cpu: float = 0.0
    series: dict[str, Any] = field(default_factory=dict)
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        """Every host completed its pull."""
        return all(h.ok for h in self.hosts)


@dataclass
class Bench:
    """Everything the modes share."""

    tb: SwarmTestbed
    image: ImageInfo
    workdir: Path
    logdir: Path
    timeout: float
    seeder_warm: bool = True
    tracker_args: list[str] = field(default_factory=list)
    last_cpu: float = 0.0  # % of all CPUs busy between the start and the last result
    last_series: dict[str, Any] = field(default_factory=dict)  # LinkSampler.series

    @property
    def env(self) -> dict[str, str]:
        """Child environment: ``bench`` importable, no proxies."""
        env = {k: v for k, v in os.environ.items() if "proxy" not in k.lower()}
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO_ROOT), env.get("PYTHONPATH")]))
        return env


@functools.cache
def cli_supports(command: str, flag: str) -> bool:
    """Whether ``eagle COMMAND --help`` lists ``flag`` (features land in parallel)."""
    done = subprocess.run(
        [sys.executable, "-m", "eagle", command, "--help"],
        capture_output=True,
        text=True,
        check=False,
        env={**os.environ, "COLUMNS": "200"},
    )
    return flag in done.stdout


def _stop_all(procs: Sequence[ManagedProcess]) -> None:
    """SIGTERM every process at once, then wait for each (agents take seconds to stop)."""
    for proc in procs:
        if proc.alive:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGTERM)
    for proc in procs:
        proc.stop(timeout=10.0)


def _results(barrier: Barrier, bench: Bench) -> list[HostResult]:
    out = []
    for job in barrier.jobs:
        result = job.result or {}
        ok = bool(result.get("ok"))
        end = result.get("end")
        seconds = float(end) - barrier.go_time if ok and isinstance(end, int | float) else None
        out.append(
            HostResult(job.label, job.extra["idc"], seconds, ok, result.get("error") or None)
        )
        if not ok:
            log.warning("host failed host=%s error=%s", job.label, result.get("error"))
    return out


def cpu_times() -> tuple[float, float]:
    """(busy, total) jiffies of the whole machine, from /proc/stat."""
    with open("/proc/stat") as f:
        fields = [float(x) for x in f.readline().split()[1:]]
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0.0)
    return sum(fields) - idle, sum(fields)


class LinkSampler:
    """Samples every host's link byte counters a few times a second, in a thread."""

    def __init__(self, tb: SwarmTestbed, period: float = 0.5) -> None:
        self.tb = tb
        self.period = period
        self.samples: list[tuple[float, dict[str, tuple[int, int]]]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="link-sampler", daemon=True)

    def __enter__(self) -> LinkSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(5)

    def _run(self) -> None:
        while not self._stop.is_set():
            with contextlib.suppress(Exception):
                self.samples.append((time.monotonic(), self.tb.link_bytes()))
            self._stop.wait(self.period)

    def series(self, since: float) -> dict[str, Any]:
        """Per host, MB/s received and sent in each interval after ``since``."""
        points = [(t, s) for t, s in self.samples if t >= since - self.period]
        out: dict[str, Any] = {"t": [], "down": {}, "up": {}}
        for (t0, a), (t1, b) in itertools.pairwise(points):
            out["t"].append(round(t1 - since, 3))
            for host, (down, up) in b.items():
                d0, u0 = a.get(host, (down, up))
                out["down"].setdefault(host, []).append(round((down - d0) / (t1 - t0) / 1e6, 3))
                out["up"].setdefault(host, []).append(round((up - u0) / (t1 - t0) / 1e6, 3))
        return out


def _run_barrier(bench: Bench, barrier: Barrier) -> tuple[list[HostResult], dict[str, QdiscStats]]:
    before = bench.tb.counters()
    barrier.start(ready_timeout=120)
    busy0, total0 = cpu_times()
    with LinkSampler(bench.tb) as sampler:
        barrier.go()
        barrier.wait(bench.timeout)
    busy1, total1 = cpu_times()
    after = bench.tb.counters()
    bench.last_cpu = 100 * (busy1 - busy0) / max(1.0, total1 - total0)
    bench.last_series = sampler.series(barrier.go_time)
    return _results(barrier, bench), diff(after, before)


def _origin_bytes(bench: Bench) -> int:
    with bench.tb.infra.entered():
        return bench.tb.origin.blob_bytes()


def _reset_origin(bench: Bench) -> None:
    with bench.tb.infra.entered():
        bench.tb.origin.reset_counts()


# -- direct ----------------------------------------------------------------------------------


def _pull_argv(bench: Bench, source: str, dest: Path) -> list[str]:
    """A host's skopeo pull of the image from ``source`` (see bench.hostrun)."""
    return [
        sys.executable,
        "-m",
        "bench.hostrun",
        "pull",
        "--source",
        source,
        "--repo",
        REPO,
        "--tag",
        TAG,
        "--dest",
        str(dest),
        "--timeout",
        str(bench.timeout),
    ]


def run_direct(bench: Bench) -> ModeResult:
    """Every host pulls the image straight from the origin."""
    _reset_origin(bench)
    source = f"{bench.tb.infra.ip}:{ORIGIN_PORT}"
    with Barrier(env=bench.env, cwd=REPO_ROOT) as barrier:
        for host in bench.tb.hosts:
            argv = _pull_argv(bench, source, bench.workdir / "direct" / host.label)
            barrier.add(
                host.label,
                host.ns.argv(argv),
                bench.logdir / "direct" / f"{host.label}.log",
                idc=host.idc,
            )
        hosts, counters = _run_barrier(bench, barrier)
    return ModeResult(
        "direct",
        hosts,
        counters,
        _origin_bytes(bench),
        cpu=bench.last_cpu,
        series=bench.last_series,
    )


# -- plain libtorrent ------------------------------------------------------------------------


def write_torrents(image: ImageInfo, directory: Path, tracker: str) -> list[Path]:
    """The torrent of every blob of ``image``, exactly as an Eagle seeder builds it."""
    directory.mkdir(parents=True, exist_ok=True)
    paths = []
    for blob in image.blobs:
        hasher = PieceHasher(blob.size)
        with image.blob_path(blob.digest).open("rb") as f:
            while chunk := f.read(1 << 20):
                hasher.update(chunk)
        meta = Metainfo(Digest(blob.hex), blob.size, hasher.piece_length, hasher.pieces())
        path = directory / f"{blob.hex}.torrent"
        path.write_bytes(meta.with_trackers([tracker]).to_bytes())
        paths.append(path)
    return paths


def write_locations(tb: SwarmTestbed, path: Path) -> Path:
    """The tracker's CIDR map: one /24 a testbed IDC, so stock clients get labels too."""
    network = tb.testbed.network.network_address
    lines = [f"{network + (idc << 8)}/24: {{idc: idc{idc}}}" for idc in range(tb.spec.idcs)]
    path.write_text("\n".join(lines) + "\n")
    return path


def _start_tracker(bench: Bench, mode: str, extra: Sequence[str] = ()) -> ManagedProcess:
    argv = ["tracker", "--listen", f"0.0.0.0:{TRACKER_PORT}", *bench.tracker_args, *extra]
    if bench.tb.spec.idcs > 1 and cli_supports("tracker", "--locations"):
        locations = write_locations(bench.tb, bench.workdir / "locations.yaml")
        argv += ["--locations", str(locations)]
    return bench.tb.eagle(
        bench.tb.infra, argv, bench.logdir / mode / "tracker.log", health_port=TRACKER_PORT
    )


def run_plain(bench: Bench, profile: str = "stock") -> ModeResult:
    """Stock libtorrent everywhere, the same torrents, a tracker handing out random peers."""
    mode = "plain" if profile == "stock" else f"lt-{profile}"
    tb = bench.tb
    _reset_origin(bench)
    torrents = write_torrents(bench.image, bench.workdir / "torrents", tb.tracker_url)
    policy = ["--policy", "random"] if cli_supports("tracker", "--policy") else []
    notes = [] if policy else ["tracker has no --policy yet: its default order was used"]
    procs: list[ManagedProcess] = []
    try:
        procs.append(_start_tracker(bench, mode, policy))
        stats = bench.workdir / mode / "seeder-stats.json"
        stats.parent.mkdir(parents=True, exist_ok=True)
        with Barrier(env=bench.env, cwd=REPO_ROOT) as seeders:
            seeders.add(
                "seeder",
                tb.infra.ns.argv(
                    [
                        sys.executable,
                        "-m",
                        "bench.ltpeer",
                        "seed",
                        "--listen",
                        f"{tb.infra.ip}:{P2P_PORT}",
                        "--profile",
                        profile,
                        "--data",
                        str(bench.image.layout_dir / "blobs" / "sha256"),
                        "--stats",
                        str(stats),
                        *map(str, torrents),
                    ]
                ),
                bench.logdir / mode / "seeder.log",
                idc=0,
            )
            seeders.start(ready_timeout=120)
            with Barrier(env=bench.env, cwd=REPO_ROOT) as barrier:
                for host in tb.hosts:
                    argv = [
                        sys.executable,
                        "-m",
                        "bench.ltpeer",
                        "get",
                        "--listen",
                        f"{host.ip}:{P2P_PORT}",
                        "--profile",
                        profile,
                        "--save",
                        str(bench.workdir / mode / host.label),
                        "--timeout",
                        str(bench.timeout),
                        *map(str, torrents),
                    ]
                    if os.environ.get("EAGLE_BENCH_TRACE"):
                        argv += ["--trace", str(bench.logdir / mode / f"{host.label}.trace.json")]
                    barrier.add(
                        host.label,
                        host.ns.argv(argv),
                        bench.logdir / mode / f"{host.label}.log",
                        idc=host.idc,
                    )
                hosts, counters = _run_barrier(bench, barrier)
            seeders.stop()
        import json

        seeded = json.loads(stats.read_text()) if stats.exists() else {}
        uploaded = sum(int(v["uploaded"]) for v in seeded.values())
    finally:
        _stop_all(procs)
        shutil.rmtree(bench.workdir / mode, ignore_errors=True)
    return ModeResult(
        mode,
        hosts,
        counters,
        _origin_bytes(bench),
        uploaded,
        notes,
        cpu=bench.last_cpu,
        series=bench.last_series,
    )


# -- eagle -----------------------------------------------------------------------------------


def _preheat(bench: Bench, timeout: float = 120.0) -> None:
    """Have the seeder fetch every blob from the origin before the start (as in ``plain``)."""
    origin = urllib.parse.quote(bench.tb.origin_url, safe="")
    deadline = time.monotonic() + timeout
    with bench.tb.infra.entered():
        for blob in bench.image.blobs:
            url = (
                f"http://127.0.0.1:{SEEDER_PORT}/v1/metainfo?origin={origin}"
                f"&repo={urllib.parse.quote(REPO, safe='')}&digest={blob.digest}"
            )
            while (status := http_get_status(url, timeout=10)) != 200:
                if status != 202 or time.monotonic() > deadline:
                    raise RuntimeError(f"seeder preheat of {blob.digest} answered {status}")
                time.sleep(0.1)
    # Seeding starts with an announce; give it a moment so that the first agents'
    # announces already get the seeder back.
    time.sleep(1.0)


def run_eagle(bench: Bench, mode: str = "eagle", tracker_extra: Sequence[str] = ()) -> ModeResult:
    """A tracker, a seeder and an agent per host; skopeo on each host pulls via its agent."""
    tb = bench.tb
    _reset_origin(bench)
    logs = bench.logdir / mode
    data = bench.workdir / mode
    procs: list[ManagedProcess] = []
    notes: list[str] = []
    try:
        procs.append(_start_tracker(bench, mode, tracker_extra))
        idc_flag = cli_supports("agent", "--idc")
        if bench.tb.spec.idcs > 1 and not idc_flag:
            notes.append("agents have no --idc yet: the tracker cannot tell IDCs apart")
        seeder_argv = [
            "seeder",
            "--listen",
            f"0.0.0.0:{SEEDER_PORT}",
            "--p2p-host",
            tb.infra.ip,
            "--p2p-port",
            str(P2P_PORT),
            "--tracker",
            tb.tracker_url,
            "--origin",
            tb.origin_url,
            "--data-dir",
            str(data / "seeder"),
        ]
        if idc_flag and cli_supports("seeder", "--idc"):
            seeder_argv += ["--idc", "idc0"]
        procs.append(tb.eagle(tb.infra, seeder_argv, logs / "seeder.log", health_port=SEEDER_PORT))
        agents = []
        for host in tb.hosts:
            argv = [
                "agent",
                "--listen",
                f"127.0.0.1:{AGENT_PORT}",
                "--p2p-host",
                host.ip,
                "--p2p-port",
                str(P2P_PORT),
                "--tracker",
                tb.tracker_url,
                "--seeder",
                tb.seeder_url,
                "--origin",
                tb.origin_url,
                "--data-dir",
                str(data / host.label),
            ]
            if idc_flag:
                argv += ["--idc", f"idc{host.idc}"]
            if os.environ.get("EAGLE_BENCH_TRACE"):
                argv += ["--log-level", "debug"]
            agents.append((host, tb.eagle(host, argv, logs / f"{host.label}.log")))
        procs += [p for _, p in agents]
        for host, proc in agents:
            tb.wait_healthy(host, AGENT_PORT, proc)
        if bench.seeder_warm:
            _preheat(bench)
        with Barrier(env=bench.env, cwd=REPO_ROOT) as barrier:
            for host in tb.hosts:
                argv = _pull_argv(bench, f"127.0.0.1:{AGENT_PORT}", data / "pulls" / host.label)
                barrier.add(
                    host.label, host.ns.argv(argv), logs / f"{host.label}.pull.log", idc=host.idc
                )
            hosts, counters = _run_barrier(bench, barrier)
            largest = max(blob.size for blob in bench.image.blobs)
            for result in hosts:
                result.swarm_seconds = swarm_done(
                    logs / f"{result.host}.log", largest, barrier.go_wall
                )
    finally:
        _stop_all(procs)
        shutil.rmtree(data, ignore_errors=True)
    return ModeResult(
        mode,
        hosts,
        counters,
        _origin_bytes(bench),
        None,
        notes,
        cpu=bench.last_cpu,
        series=bench.last_series,
    )


_FETCHED = re.compile(
    r"^(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3}) .*blob fetched source=p2p .*bytes=(\d+)"
)


def swarm_done(agent_log: Path, size: int, go_wall: float) -> float | None:
    """Seconds from the start until the agent had the blob of ``size`` bytes from the
    swarm (its "blob fetched" log line), before serving it to the client."""
    try:
        lines = agent_log.read_text(errors="replace").splitlines()
    except OSError:
        return None
    for line in lines:
        match = _FETCHED.match(line)
        if match and int(match.group(2)) == size:
            stamp = datetime.datetime.strptime(match.group(1), "%Y-%m-%d %H:%M:%S,%f")
            # With --repeat the log holds earlier runs too: only this run's line counts.
            if stamp.timestamp() >= go_wall:
                return stamp.timestamp() - go_wall
    return None
