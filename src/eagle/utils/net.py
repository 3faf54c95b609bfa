"""Addresses and URLs."""

from __future__ import annotations

import socket
from typing import NamedTuple


class HostPort(NamedTuple):
    host: str
    port: int

    def __str__(self) -> str:
        return f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"


def parse_hostport(text: str) -> HostPort:
    """Parse ``HOST:PORT`` or ``[V6]:PORT``; raise ValueError with a readable message otherwise."""
    host, sep, port = text.rpartition(":")
    if not sep or not (port.isascii() and port.isdigit()) or not 0 <= int(port) <= 65535:
        raise ValueError(f"expected HOST:PORT, got {text!r}")
    if host.startswith("[") != host.endswith("]") or (":" in host and not host.startswith("[")):
        raise ValueError(f"an IPv6 host needs brackets: [ADDR]:PORT, got {text!r}")
    host = host[1:-1] if host.startswith("[") else host
    return HostPort(host or "0.0.0.0", int(port))


_UNITS = {"": 1, "K": 1024, "M": 1024**2, "G": 1024**3, "T": 1024**4}


def parse_size(value: object) -> int:
    """``"50M"`` → 52428800. Units K, M, G, T are powers of 1024; a bare number is bytes."""
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    text = str(value).strip().upper().removesuffix("B").removesuffix("I")
    number, unit = (text[:-1], text[-1]) if text and text[-1] in _UNITS else (text, "")
    try:
        amount = float(number)
    except ValueError:
        raise ValueError(f"expected a size like 100M or 2G, got {value!r}") from None
    if amount < 0:
        raise ValueError(f"size must not be negative, got {value!r}")
    return int(amount * _UNITS[unit])


# Ports this process handed out: the kernel may offer a just-closed port again, and two
# servers started from one process (an HTTP and a BitTorrent port) must not share one.
_handed_out: set[int] = set()


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port nobody listens on right now and this process has not handed out before."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    for _ in range(100):
        with socket.socket(family, socket.SOCK_STREAM) as sock:
            sock.bind((host, 0))
            port = int(sock.getsockname()[1])
        if port not in _handed_out:
            _handed_out.add(port)
            return port
    raise OSError("no unused TCP port found after 100 tries")
