"""A real Redis for tests and benchmarks: Debian's ``redis-server`` on a free loopback port."""

from __future__ import annotations

import socket
import time
from pathlib import Path

from eagle.testing.procs import ManagedProcess, StartStopContext, log_tail
from eagle.utils.net import free_port

REDIS_BINARY = "redis-server"


def _ping(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5) as sock:
            sock.sendall(b"PING\r\n")
            return sock.recv(16).startswith(b"+PONG")
    except OSError:
        return False


class RedisServer(StartStopContext):
    """``redis-server`` bound to 127.0.0.1, no persistence, its log in ``workdir``.

    Use as a context manager; :meth:`stop` leaves nothing running. :meth:`start`
    again after :meth:`stop` brings it back on the same port, empty.
    """

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.port = free_port()
        self._process: ManagedProcess | None = None

    @property
    def url(self) -> str:
        """``redis://127.0.0.1:PORT/0``, as the tracker's ``--peer-store`` takes it."""
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self, timeout: float = 10.0) -> RedisServer:
        """Start and wait until it answers PING."""
        self.workdir.mkdir(parents=True, exist_ok=True)
        argv = [
            REDIS_BINARY,
            "--bind", "127.0.0.1",
            "--port", str(self.port),
            "--save", "",
            "--appendonly", "no",
            "--dir", str(self.workdir),
            "--protected-mode", "yes",
        ]  # fmt: skip
        self._process = ManagedProcess(argv, self.workdir / "redis.log", name="redis-server")
        self._process.start()
        deadline = time.monotonic() + timeout
        while not _ping(self.port):
            if not self._process.alive or time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(
                    f"redis-server did not answer on port {self.port}; log tail:\n"
                    f"{log_tail(self.workdir / 'redis.log')}"
                )
            time.sleep(0.02)
        return self

    def stop(self) -> None:
        """Stop the server (its data goes with it)."""
        if self._process is not None:
            self._process.stop()
            self._process = None
