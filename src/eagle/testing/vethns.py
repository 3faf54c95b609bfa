"""One network namespace joined to this one by a veth pair: non-loopback test addresses.

Go clients (docker, containerd, podman, skopeo) never send requests for loopback
names through ``HTTP(S)_PROXY``, so proxy-mode tests need a registry at an address
that is not loopback, yet reachable by no one but the test. :class:`VethNamespace`
makes one: a namespace ``e7ns-<pid>-<n>`` holding one end of a veth pair, with a
/30 out of 198.18.0.0/15 (reserved for network tests, RFC 2544) split between the
two ends. Both addresses exist only on that pair; the namespace has no other
route out, so a runtime started inside it cannot reach the internet even when it
tries a fallback registry.

Processes go inside with :meth:`VethNamespace.wrap` (``nsenter --net``, which,
unlike ``ip netns exec``, leaves ``/sys`` and its cgroup mounts alone: dockerd
needs them).
"""

from __future__ import annotations

import atexit
import contextlib
import ipaddress
import itertools
import logging
import os
import random
import re
import signal
import subprocess
import time
from collections.abc import Sequence
from types import TracebackType

from eagle.testing.procs import allow_namespace_address, forget_namespace_address

log = logging.getLogger(__name__)

PREFIX = "e7ns"
NETWORK = ipaddress.ip_network("198.18.0.0/15")
_counter = itertools.count()


def _ip(*args: str, check: bool = True) -> str:
    done = subprocess.run(["ip", *args], capture_output=True, text=True, check=False)
    if check and done.returncode != 0:
        raise RuntimeError(f"ip {' '.join(args)} failed: {done.stderr.strip()}")
    return done.stdout


def _namespaces() -> list[str]:
    return [line.split()[0] for line in _ip("netns", "list").splitlines() if line.strip()]


def _used_addresses() -> set[ipaddress.IPv4Address]:
    used = set()
    for match in re.finditer(r"inet (\d+\.\d+\.\d+\.\d+)", _ip("-4", "addr", "show")):
        used.add(ipaddress.IPv4Address(match.group(1)))
    return used


def remove_stale() -> list[str]:
    """Delete namespaces of this module whose creating process has died (SIGKILLed tests)."""
    removed = []
    for name in _namespaces():
        match = re.fullmatch(rf"{PREFIX}-(\d+)-\d+", name)
        if match is None:
            continue
        pid = int(match.group(1))
        try:
            os.kill(pid, 0)
            continue
        except ProcessLookupError:
            pass
        except PermissionError:
            continue
        _kill_inside(name)
        _ip("netns", "del", name, check=False)
        removed.append(name)
    return removed


def _pids_inside(name: str) -> list[int]:
    out = _ip("netns", "pids", name, check=False)
    return [int(p) for p in out.split() if p.isdigit()]


def _kill_inside(name: str, grace: float = 3.0) -> None:
    pids = _pids_inside(name)
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + grace
    while pids and time.monotonic() < deadline:
        time.sleep(0.05)
        pids = _pids_inside(name)
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)


class VethNamespace:
    """A namespace and the veth pair joining it to the caller's namespace.

    ``host_address`` is the outer end (in this namespace), ``address`` the inner end.
    Use as a context manager, or call :meth:`start` and :meth:`close`.
    """

    def __init__(self) -> None:
        index = next(_counter)
        self.name = f"{PREFIX}-{os.getpid()}-{index}"
        token = f"{os.getpid() % 0xFFFF:04x}{index % 0xFF:02x}"
        self.outer_dev = f"e7o{token}"
        self.inner_dev = f"e7i{token}"
        self.host_address = ""
        self.address = ""
        self._started = False

    @property
    def path(self) -> str:
        """The namespace's file, for ``nsenter --net=``."""
        return f"/run/netns/{self.name}"

    def wrap(self, argv: Sequence[str]) -> list[str]:
        """``argv`` made to run inside the namespace (network only)."""
        return ["nsenter", f"--net={self.path}", *argv]

    def start(self) -> VethNamespace:
        """Create the namespace, the pair and their addresses; bring everything up."""
        remove_stale()
        block = self._free_block()
        self.host_address, self.address = str(block[1]), str(block[2])
        self._started = True
        atexit.register(self.close)
        try:
            _ip("netns", "add", self.name)
            _ip("-n", self.name, "link", "set", "lo", "up")
            _ip("link", "add", self.outer_dev, "type", "veth", "peer", "name", self.inner_dev)
            _ip("link", "set", self.inner_dev, "netns", self.name)
            _ip("addr", "add", f"{self.host_address}/30", "dev", self.outer_dev)
            _ip("link", "set", self.outer_dev, "up")
            _ip("-n", self.name, "addr", "add", f"{self.address}/30", "dev", self.inner_dev)
            _ip("-n", self.name, "link", "set", self.inner_dev, "up")
        except BaseException:
            self.close()
            raise
        for address in (self.host_address, self.address):
            allow_namespace_address(address)
        log.info(
            "veth namespace up name=%s outer=%s inner=%s",
            self.name,
            self.host_address,
            self.address,
        )
        return self

    def close(self) -> None:
        """Stop whatever still runs inside, delete the namespace (and with it the pair)."""
        if not self._started:
            return
        self._started = False
        _kill_inside(self.name)
        _ip("netns", "del", self.name, check=False)
        _ip("link", "del", self.outer_dev, check=False)
        for address in (self.host_address, self.address):
            forget_namespace_address(address)
        with contextlib.suppress(Exception):
            atexit.unregister(self.close)
        log.info("veth namespace down name=%s", self.name)

    def _free_block(self) -> ipaddress.IPv4Network:
        used = _used_addresses()
        blocks = NETWORK.num_addresses // 4
        rng = random.Random()
        for _ in range(64):
            block = ipaddress.IPv4Network(
                (int(NETWORK.network_address) + 4 * rng.randrange(blocks), 30)
            )
            if not any(address in block for address in used):
                return block
        raise RuntimeError("no free /30 in 198.18.0.0/15")

    def __enter__(self) -> VethNamespace:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()
