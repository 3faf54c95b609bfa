"""Hosts as Linux network namespaces joined by shaped links, all on one machine.

A :class:`Testbed` owns every namespace whose name starts with its prefix
(``eglb-<pid>-`` by default): one *switch* namespace holding the bridges, and one
namespace per host, each with an ``eth0`` veth whose other end is a port of its
data centre's (IDC's) bridge. Nothing is added to the root namespace, and the
addresses (a private range, ``10.77.0.0/16`` by default) exist only inside the
namespaces, so no packet can leave them.

Links are shaped with ``tc`` (``sch_netem`` is not available on this kernel, so
there is no added latency):

* upload: a ``tbf`` on the host's ``eth0`` (or an ``htb`` with one class per
  source port, when several servers on one host get separate rates);
* download: a ``tbf`` on the switch port's egress, which is where a real switch
  queues frames for that host. This is what ``ifb`` + ``tbf`` on the host's
  ingress emulates, without redirecting every packet through a second device;
* WAN: with several IDCs, each IDC bridge reaches a core bridge over a veth
  pair shaped both ways.

Processes run inside a namespace with ``ip netns exec``; the caller's own thread
can enter a namespace with :meth:`Namespace.entered` to talk to servers on that
namespace's loopback. :meth:`Testbed.close` (also run from ``atexit`` and on
SIGTERM/SIGHUP while the testbed is open) stops every process left in its
namespaces and deletes them.
"""

from __future__ import annotations

import atexit
import contextlib
import ctypes
import ipaddress
import json
import logging
import os
import re
import signal
import subprocess
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType, TracebackType

from eagle.testing.procs import ManagedProcess

log = logging.getLogger(__name__)

DEFAULT_PREFIX_BASE = "eglb"
DEFAULT_SUBNET = "10.77.0.0/16"
NETNS_DIR = Path("/run/netns")
_CLONE_NEWNET = 0x40000000
# Ethernet (14) + IPv4 (20) + TCP with timestamps (32): what a full-size segment carries on
# top of its payload. Subtracting it per packet turns link byte counters into TCP payload.
HEADER_BYTES_PER_PACKET = 66
_CLASS_STATS = re.compile(r"class htb (\S+) .*?\n\s*Sent (\d+) bytes (\d+) pkt \(dropped (\d+)")


class NetnsError(RuntimeError):
    """A namespace, link or qdisc could not be set up; the message holds the command's stderr."""


def _run(argv: Sequence[str], *, timeout: float = 30.0, check: bool = True) -> str:
    try:
        done = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, check=False)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise NetnsError(f"{' '.join(argv)}: {exc}") from exc
    if check and done.returncode != 0:
        raise NetnsError(f"{' '.join(argv)} failed ({done.returncode}): {done.stderr.strip()}")
    return done.stdout


def list_namespaces() -> list[str]:
    """Names of the named network namespaces (``ip netns list``)."""
    out = _run(["ip", "netns", "list"])
    return [line.split()[0] for line in out.splitlines() if line.strip()]


_libc = ctypes.CDLL(None, use_errno=True)


def _setns(fd: int) -> None:
    if _libc.setns(fd, _CLONE_NEWNET) != 0:
        errno = ctypes.get_errno()
        raise OSError(errno, f"setns: {os.strerror(errno)}")


# -- link shapes -----------------------------------------------------------------------------


@dataclass(frozen=True)
class Shape:
    """A token-bucket link: ``rate`` bytes/s (0 = unshaped), ``burst`` bytes, and a queue
    holding ``queue_ms`` milliseconds of traffic at that rate (plus one burst)."""

    rate: int
    burst: int = 32 * 1024
    queue_ms: float = 50.0

    def __post_init__(self) -> None:
        if self.rate < 0 or self.burst <= 0 or self.queue_ms <= 0:
            raise ValueError(f"invalid link shape {self}")

    @property
    def shaped(self) -> bool:
        """False for an unlimited link."""
        return self.rate > 0

    @property
    def limit(self) -> int:
        """Queue length in bytes."""
        return int(self.rate * self.queue_ms / 1000) + self.burst

    def tbf_args(self) -> list[str]:
        """``tc`` arguments of a ``tbf`` qdisc with this shape."""
        return [
            "tbf", "rate", f"{self.rate * 8}bit", "burst", str(self.burst),
            "limit", str(self.limit),
        ]  # fmt: skip


@dataclass(frozen=True)
class QdiscStats:
    """Counters of one qdisc or class: bytes and packets sent, packets dropped."""

    bytes: int = 0
    packets: int = 0
    drops: int = 0

    @property
    def payload(self) -> int:
        """Estimated TCP payload: bytes minus one header per packet."""
        return max(0, self.bytes - HEADER_BYTES_PER_PACKET * self.packets)

    def __sub__(self, other: QdiscStats) -> QdiscStats:
        return QdiscStats(
            self.bytes - other.bytes, self.packets - other.packets, self.drops - other.drops
        )

    def __add__(self, other: QdiscStats) -> QdiscStats:
        return QdiscStats(
            self.bytes + other.bytes, self.packets + other.packets, self.drops + other.drops
        )


# -- namespaces ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Namespace:
    """One named network namespace."""

    name: str

    def argv(self, argv: Sequence[str]) -> list[str]:
        """``argv`` wrapped to run inside this namespace."""
        return ["ip", "netns", "exec", self.name, *argv]

    def run(self, argv: Sequence[str], *, timeout: float = 30.0, check: bool = True) -> str:
        """Run a command inside the namespace and return its stdout."""
        return _run(self.argv(argv), timeout=timeout, check=check)

    def ip(self, *args: str, check: bool = True) -> str:
        """``ip -n NAME ARGS``."""
        return _run(["ip", "-n", self.name, *args], check=check)

    def tc(self, *args: str, check: bool = True) -> str:
        """``tc -n NAME ARGS``."""
        return _run(["tc", "-n", self.name, *args], check=check)

    @contextlib.contextmanager
    def entered(self) -> Iterator[None]:
        """Move the calling thread (only it) into this namespace for the ``with`` block.

        Sockets opened and processes started meanwhile belong to the namespace, so
        ``127.0.0.1`` is its own loopback. Needs CAP_SYS_ADMIN.
        """
        with (
            open(NETNS_DIR / self.name, "rb") as target,
            open("/proc/thread-self/ns/net", "rb") as home,
        ):
            _setns(target.fileno())
            try:
                yield
            finally:
                _setns(home.fileno())

    def pids(self) -> list[int]:
        """Processes living in this namespace."""
        out = _run(["ip", "netns", "pids", self.name], check=False)
        return [int(p) for p in out.split() if p.isdigit()]

    def qdisc_stats(self, dev: str) -> QdiscStats:
        """Counters of the root qdisc of ``dev``."""
        data = json.loads(self.tc("-s", "-j", "qdisc", "show", "dev", dev) or "[]")
        for qdisc in data:
            if qdisc.get("root"):
                return QdiscStats(
                    int(qdisc.get("bytes", 0)),
                    int(qdisc.get("packets", 0)),
                    int(qdisc.get("drops", 0)),
                )
        return QdiscStats()

    def class_stats(self, dev: str) -> dict[str, QdiscStats]:
        """Counters of the htb classes of ``dev``, by class id (``1:10``)."""
        text = self.tc("-s", "class", "show", "dev", dev)
        return {
            m.group(1): QdiscStats(int(m.group(2)), int(m.group(3)), int(m.group(4)))
            for m in _CLASS_STATS.finditer(text)
        }

    def link_stats(self, dev: str) -> tuple[QdiscStats, QdiscStats]:
        """``(tx, rx)`` counters of a device (drops are the device's own)."""
        (data,) = json.loads(self.ip("-s", "-j", "link", "show", "dev", dev))
        stats = data["stats64"]
        tx, rx = stats["tx"], stats["rx"]
        return (
            QdiscStats(int(tx["bytes"]), int(tx["packets"]), int(tx["dropped"])),
            QdiscStats(int(rx["bytes"]), int(rx["packets"]), int(rx["dropped"])),
        )


def _shape(ns: Namespace, dev: str, shape: Shape) -> None:
    ns.tc("qdisc", "del", "dev", dev, "root", check=False)
    if shape.shaped:
        ns.tc("qdisc", "add", "dev", dev, "root", "handle", "1:", *shape.tbf_args())


def _shape_by_port(ns: Namespace, dev: str, default: Shape, by_port: Mapping[int, Shape]) -> None:
    """An htb root with one class per source port (1:11, 1:12, ...) and a default (1:10).

    Each class gets its rate as both rate and ceiling: separate links that share a wire.
    """
    ns.tc("qdisc", "del", "dev", dev, "root", check=False)
    ns.tc("qdisc", "add", "dev", dev, "root", "handle", "1:", "htb", "default", "10", "r2q", "100")
    classes = [("1:10", default, None), *((f"1:{11 + i}", s, p) for i, (p, s) in
               enumerate(sorted(by_port.items())))]  # fmt: skip
    for classid, shape, port in classes:
        rate = f"{shape.rate * 8}bit" if shape.shaped else "100gbit"
        ns.tc(
            "class", "add", "dev", dev, "parent", "1:", "classid", classid, "htb",
            "rate", rate, "ceil", rate, "burst", str(shape.burst), "cburst", str(shape.burst),
        )  # fmt: skip
        ns.tc("qdisc", "add", "dev", dev, "parent", classid, "bfifo", "limit", str(shape.limit))
        if port is not None:
            ns.tc(
                "filter", "add", "dev", dev, "parent", "1:", "protocol", "ip", "prio", "1",
                "u32", "match", "ip", "sport", str(port), "0xffff", "flowid", classid,
            )  # fmt: skip


# -- hosts and the testbed -------------------------------------------------------------------


@dataclass
class Host:
    """A host: its namespace, its address on the testbed and its IDC."""

    label: str
    ns: Namespace
    ip: str
    idc: int
    port_dev: str  # the switch-side end of its link
    up: Shape
    down: Shape
    up_by_port: dict[int, Shape] = field(default_factory=dict)

    IFACE = "eth0"

    @property
    def name(self) -> str:
        """The namespace's name."""
        return self.ns.name

    def entered(self) -> contextlib.AbstractContextManager[None]:
        """Move the calling thread into this host's namespace (see :meth:`Namespace.entered`)."""
        return self.ns.entered()

    def upload_stats(self) -> dict[str, QdiscStats]:
        """Upload counters: ``{"total": ...}``, plus one entry per source port shaped apart."""
        if not self.up_by_port:
            return {"total": self.ns.link_stats(self.IFACE)[0]}
        classes = self.ns.class_stats(self.IFACE)
        out = {"default": classes.get("1:10", QdiscStats())}
        for i, port in enumerate(sorted(self.up_by_port)):
            out[str(port)] = classes.get(f"1:{11 + i}", QdiscStats())
        total = QdiscStats()
        for stats in out.values():
            total = total + stats
        out["total"] = total
        return out

    def drops(self, switch: Namespace) -> int:
        """Packets the shapers of this host's link dropped, both directions."""
        if self.up_by_port:
            up = self.upload_stats()["total"].drops
        else:
            up = self.ns.qdisc_stats(self.IFACE).drops
        return up + switch.qdisc_stats(self.port_dev).drops


class Testbed:
    """Namespaces for a switch and hosts, shaped links between them, and their cleanup.

    ``prefix`` must be unused: :meth:`start` refuses to run when any namespace already
    starts with it. Use as a context manager, or call :meth:`start` and :meth:`close`.
    """

    __test__ = False  # a name pytest would otherwise try to collect

    def __init__(
        self,
        prefix: str | None = None,
        *,
        subnet: str = DEFAULT_SUBNET,
        idcs: int = 1,
        wan: Shape | None = None,
    ) -> None:
        if idcs < 1:
            raise ValueError("a testbed needs at least one IDC")
        self.prefix = prefix or f"{DEFAULT_PREFIX_BASE}-{os.getpid()}-"
        if not re.fullmatch(r"[A-Za-z0-9_.-]{1,32}", self.prefix):
            raise ValueError(f"namespace prefix {self.prefix!r} must be short and plain")
        self.network = ipaddress.ip_network(subnet)
        if not self.network.is_private or self.network.prefixlen > 16:
            raise ValueError(f"subnet must be a private /16 or larger, got {subnet}")
        self.idcs = idcs
        self.wan = wan or Shape(0)
        self.switch = Namespace(self.prefix + "sw")
        self.hosts: list[Host] = []
        self._namespaces: list[Namespace] = []
        self._processes: list[ManagedProcess] = []
        self._per_idc: list[int] = [0] * idcs
        self._started = False
        self._closed = False
        self._old_handlers: dict[int, object] = {}

    # -- lifecycle ---------------------------------------------------------------------------

    def start(self) -> Testbed:
        """Create the switch namespace, its bridges and, with several IDCs, the WAN links."""
        taken = [n for n in list_namespaces() if n.startswith(self.prefix)]
        if taken:
            raise NetnsError(
                f"namespace prefix {self.prefix!r} is in use ({', '.join(taken)}); another "
                "testbed runs, or a killed one left them (see remove_stale())"
            )
        self._started = True
        atexit.register(self.close)
        try:
            self._add_namespace(self.switch)
            for idc in range(self.idcs):
                self._bridge(f"br{idc}")
            if self.idcs > 1:
                self._bridge("core")
                for idc in range(self.idcs):
                    self._wan_link(idc)
        except BaseException:
            self.close()
            raise
        log.info("testbed up prefix=%s idcs=%d subnet=%s", self.prefix, self.idcs, self.network)
        return self

    def close(self) -> None:
        """Stop every process, kill whatever still lives in the namespaces, delete them."""
        if self._closed or not self._started:
            return
        self._closed = True
        for proc in reversed(self._processes):
            with contextlib.suppress(Exception):
                proc.stop(timeout=5.0)
        for ns in self._namespaces:
            _kill_all(ns)
        for ns in reversed(self._namespaces):
            _run(["ip", "netns", "del", ns.name], check=False)
        left = [n for n in list_namespaces() if n.startswith(self.prefix)]
        if left:
            log.warning("namespaces left behind prefix=%s names=%s", self.prefix, left)
        with contextlib.suppress(Exception):
            atexit.unregister(self.close)
        log.info("testbed down prefix=%s", self.prefix)

    def __enter__(self) -> Testbed:
        self._install_signal_handlers()
        try:
            return self.start()
        except BaseException:
            self._restore_signal_handlers()
            raise

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        try:
            self.close()
        finally:
            self._restore_signal_handlers()

    def _install_signal_handlers(self) -> None:
        # SIGTERM and SIGHUP would end the interpreter without unwinding; turn them into
        # SystemExit so that `with` blocks and finally clauses clean up. (SIGINT already
        # raises KeyboardInterrupt.) Only the main thread may set handlers.
        import threading

        if threading.current_thread() is not threading.main_thread():
            return

        def _exit(signum: int, frame: FrameType | None) -> None:
            raise SystemExit(128 + signum)

        for sig in (signal.SIGTERM, signal.SIGHUP):
            self._old_handlers[sig] = signal.signal(sig, _exit)

    def _restore_signal_handlers(self) -> None:
        for sig, handler in self._old_handlers.items():
            signal.signal(sig, handler)  # type: ignore[arg-type]
        self._old_handlers.clear()

    # -- building ----------------------------------------------------------------------------

    def _add_namespace(self, ns: Namespace) -> None:
        _run(["ip", "netns", "add", ns.name])
        self._namespaces.append(ns)
        ns.ip("link", "set", "lo", "up")

    def _bridge(self, name: str) -> None:
        self.switch.ip("link", "add", name, "type", "bridge")
        # Forward at once: STP's listening/learning delay would eat the first seconds.
        self.switch.ip(
            "link", "set", name, "type", "bridge", "forward_delay", "0", "stp_state", "0"
        )
        self.switch.ip("link", "set", name, "up")

    def _wan_link(self, idc: int) -> None:
        near, far = f"wan{idc}", f"wan{idc}c"  # near: port of the IDC bridge; far: of core
        self.switch.ip("link", "add", near, "type", "veth", "peer", "name", far)
        self.switch.ip("link", "set", near, "master", f"br{idc}")
        self.switch.ip("link", "set", far, "master", "core")
        for dev in (near, far):
            self.switch.ip("link", "set", dev, "up")
            _shape(self.switch, dev, self.wan)

    def add_host(
        self,
        label: str,
        *,
        idc: int = 0,
        up: Shape,
        down: Shape,
        up_by_port: Mapping[int, Shape] | None = None,
    ) -> Host:
        """A new host namespace ``<prefix><label>`` in ``idc``, linked to that IDC's bridge.

        Its address is ``<subnet>.<idc>.<n>``, n counting from 1 within the IDC.
        ``up_by_port`` gives traffic from some source ports its own upload shape.
        """
        if not self._started or self._closed:
            raise NetnsError("testbed is not running")
        if not 0 <= idc < self.idcs:
            raise ValueError(f"idc {idc} out of range 0..{self.idcs - 1}")
        if not re.fullmatch(r"[a-z0-9]{1,12}", label):
            raise ValueError(f"host label {label!r}: up to 12 lowercase letters or digits")
        self._per_idc[idc] += 1
        number = self._per_idc[idc]
        if number > 254:
            raise ValueError(f"IDC {idc} is full")
        address = self.network.network_address + (idc << 8) + number
        ns = Namespace(self.prefix + label)
        port_dev = f"p{len(self.hosts)}"
        host = Host(label, ns, str(address), idc, port_dev, up, down, dict(up_by_port or {}))
        self._add_namespace(ns)
        self.switch.ip(
            "link", "add", port_dev, "type", "veth", "peer", "name", Host.IFACE, "netns", ns.name
        )
        self.switch.ip("link", "set", port_dev, "master", f"br{idc}")
        self.switch.ip("link", "set", port_dev, "up")
        ns.ip("addr", "add", f"{address}/{self.network.prefixlen}", "dev", Host.IFACE)
        ns.ip("link", "set", Host.IFACE, "up")
        self.shape(host, up, down, up_by_port)
        self.hosts.append(host)
        log.info("host up name=%s ip=%s idc=%d", ns.name, address, idc)
        return host

    def shape(
        self,
        host: Host,
        up: Shape,
        down: Shape,
        up_by_port: Mapping[int, Shape] | None = None,
    ) -> None:
        """(Re)shape a host's link; counters of the link's qdiscs start again from zero."""
        if up_by_port:
            _shape_by_port(host.ns, Host.IFACE, up, up_by_port)
        else:
            _shape(host.ns, Host.IFACE, up)
        _shape(self.switch, host.port_dev, down)
        host.up, host.down, host.up_by_port = up, down, dict(up_by_port or {})

    # -- processes and counters --------------------------------------------------------------

    def process(
        self,
        host: Host,
        argv: Sequence[str],
        log_path: Path,
        *,
        env: Mapping[str, str] | None = None,
        name: str | None = None,
    ) -> ManagedProcess:
        """A process (not yet started) that runs ``argv`` in ``host``; :meth:`close` stops it."""
        proc = ManagedProcess(
            host.ns.argv(argv), log_path, env=env, name=name or f"{host.label}:{Path(argv[0]).name}"
        )
        self._processes.append(proc)
        return proc

    def wan_stats(self, idc: int) -> tuple[QdiscStats, QdiscStats]:
        """``(into, out of)`` IDC ``idc`` over its WAN link (zero with a single IDC)."""
        if self.idcs == 1:
            return QdiscStats(), QdiscStats()
        tx, rx = self.switch.link_stats(f"wan{idc}")
        # The near end transmits into the core (traffic leaving the IDC) and receives what
        # the core sends into the IDC.
        return rx, tx

    def wan_drops(self) -> int:
        """Packets dropped by the WAN shapers, all IDCs and both directions."""
        if self.idcs == 1:
            return 0
        return sum(
            self.switch.qdisc_stats(dev).drops
            for idc in range(self.idcs)
            for dev in (f"wan{idc}", f"wan{idc}c")
        )


def _kill_all(ns: Namespace, grace: float = 3.0) -> None:
    """SIGTERM, then SIGKILL, whatever still runs in ``ns`` (only our processes can)."""
    pids = ns.pids()
    if not pids:
        return
    log.warning("killing leftover processes ns=%s pids=%s", ns.name, pids)
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + grace
    while time.monotonic() < deadline and ns.pids():
        time.sleep(0.05)
    for pid in ns.pids():
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)


def remove_stale(prefix_base: str = DEFAULT_PREFIX_BASE) -> list[str]:
    """Delete namespaces ``<prefix_base>-<pid>-*`` whose creating process is gone.

    A testbed killed with SIGKILL cannot clean up; this does it later. Namespaces of
    live testbeds are left alone. Returns the names removed.
    """
    pattern = re.compile(rf"^{re.escape(prefix_base)}-(\d+)-")
    removed: list[str] = []
    for name in list_namespaces():
        match = pattern.match(name)
        if match is None or _alive(int(match.group(1))):
            continue
        ns = Namespace(name)
        _kill_all(ns)
        _run(["ip", "netns", "del", name], check=False)
        removed.append(name)
    if removed:
        log.info("removed stale namespaces names=%s", removed)
    return removed


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
