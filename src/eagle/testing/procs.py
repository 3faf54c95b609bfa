"""Child processes owned by a test, a demo or a benchmark, and waiting for them to serve HTTP."""

from __future__ import annotations

import atexit
import contextlib
import ipaddress
import logging
import os
import signal
import ssl
import subprocess
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Mapping, Sequence
from pathlib import Path
from types import TracebackType
from typing import Self

log = logging.getLogger(__name__)

# Safety net for processes whose owner forgot (or never got) to stop them: stopped when the
# interpreter exits normally. Strong references, so that dropping a running ManagedProcess
# does not let its child escape; stop() removes it.
_live: set[ManagedProcess] = set()


@atexit.register
def _stop_leftovers() -> None:
    for proc in list(_live):
        proc.stop(timeout=2.0)


def log_tail(path: Path | None, lines: int = 40) -> str:
    """The last ``lines`` lines of a log file, or a note saying why there are none."""
    if path is None:
        return "(no log file)"
    try:
        with path.open("rb") as fh:
            fh.seek(0, os.SEEK_END)
            # A few KiB per line is plenty for the logs of the programs we run.
            fh.seek(max(0, fh.tell() - 4096 * lines))
            text = fh.read().decode("utf-8", errors="replace")
    except OSError as exc:
        return f"(cannot read {path}: {exc})"
    return "\n".join(text.splitlines()[-lines:])


class StartStopContext:
    """Mixin: a ``with`` block calls :meth:`start` on entry and :meth:`stop` on exit.

    For the helpers here that own a server or process; the class supplies both methods.
    """

    def start(self) -> object:
        """Start whatever this object owns."""
        raise NotImplementedError

    def stop(self) -> None:
        """Stop it again, leaving nothing running."""
        raise NotImplementedError

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


class ManagedProcess(StartStopContext):
    """One child process in its own session, owned by whoever started it.

    The child (and anything it forks) gets a new process group, so :meth:`stop` can
    signal the whole group and leave nothing behind. Output goes to ``log_path``.
    Use as a context manager, or call :meth:`start` and :meth:`stop` yourself.
    """

    def __init__(
        self,
        argv: Sequence[str],
        log_path: Path,
        *,
        env: Mapping[str, str] | None = None,
        cwd: Path | None = None,
        name: str | None = None,
    ) -> None:
        self.argv = list(argv)
        self.log_path = log_path
        self.env = dict(env) if env is not None else None
        self.cwd = cwd
        self.name = name or Path(self.argv[0]).name
        self._popen: subprocess.Popen[bytes] | None = None

    @property
    def pid(self) -> int:
        """The child's process id (also its process group id); only valid once started."""
        if self._popen is None:
            raise RuntimeError(f"{self.name} was never started")
        return self._popen.pid

    @property
    def alive(self) -> bool:
        """True while the child runs."""
        return self._popen is not None and self._popen.poll() is None

    @property
    def returncode(self) -> int | None:
        """The exit status once the child has ended, else None."""
        return None if self._popen is None else self._popen.poll()

    def start(self) -> None:
        """Start the child; raise RuntimeError if this object already started one."""
        if self._popen is not None:
            raise RuntimeError(f"{self.name} already started (pid {self._popen.pid})")
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with self.log_path.open("ab") as logfile:
            self._popen = subprocess.Popen(
                self.argv,
                stdin=subprocess.DEVNULL,
                stdout=logfile,
                stderr=subprocess.STDOUT,
                env=self.env,
                cwd=self.cwd,
                start_new_session=True,
            )
        _live.add(self)
        log.info("started name=%s pid=%d log=%s", self.name, self._popen.pid, self.log_path)

    def stop(self, timeout: float = 10.0) -> None:
        """SIGTERM the process group, SIGKILL it after ``timeout`` seconds, and reap the child.

        Safe to call more than once and on a child that already exited.
        """
        popen = self._popen
        if popen is None:
            return
        pgid = popen.pid
        if popen.poll() is None:
            _signal_group(pgid, signal.SIGTERM)
            try:
                popen.wait(timeout)
            except subprocess.TimeoutExpired:
                log.warning("no exit after SIGTERM, killing name=%s pid=%d", self.name, pgid)
                _signal_group(pgid, signal.SIGKILL)
                popen.wait()
        # Grandchildren may outlive the leader; Linux keeps a group id from being reused as
        # a pid while any member lives, so signalling it after the reap is still safe.
        _signal_group(pgid, signal.SIGKILL)
        _live.discard(self)
        log.info("stopped name=%s pid=%d status=%s", self.name, pgid, popen.returncode)

    def __repr__(self) -> str:
        pid = self._popen.pid if self._popen is not None else None
        return f"ManagedProcess(name={self.name!r}, pid={pid}, alive={self.alive})"


def _signal_group(pgid: int, sig: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pgid, sig)


# Addresses that live only inside network namespaces a test created (see
# eagle.testing.vethns): as safe to talk to as loopback, no packet to them leaves the machine.
_namespace_addresses: set[str] = set()


def allow_namespace_address(address: str) -> None:
    """Let the helpers here talk to ``address``, which only exists in a test's namespace."""
    _namespace_addresses.add(address)


def forget_namespace_address(address: str) -> None:
    """Undo :func:`allow_namespace_address` (the namespace is gone)."""
    _namespace_addresses.discard(address)


def _check_loopback(url: str) -> None:
    host = urllib.parse.urlsplit(url).hostname or ""
    if host in _namespace_addresses:
        return
    try:
        loopback = ipaddress.ip_address(host).is_loopback
    except ValueError:
        loopback = host == "localhost"
    if not loopback:
        raise ValueError(f"test helpers only talk to loopback addresses, not {url!r}")


def _insecure_tls() -> ssl.SSLContext:
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    return context


def http_get_status(
    url: str, timeout: float = 5.0, headers: Mapping[str, str] | None = None
) -> int:
    """GET a loopback ``url`` and return the HTTP status (errors included), reading the body.

    Ignores proxy settings from the environment and does not verify TLS certificates:
    the peer is a test server on this machine.
    """
    _check_loopback(url)
    opener = urllib.request.build_opener(
        urllib.request.ProxyHandler({}),
        urllib.request.HTTPSHandler(context=_insecure_tls()),
    )
    request = urllib.request.Request(url, headers=dict(headers or {}))
    try:
        with opener.open(request, timeout=timeout) as response:
            response.read()
            return int(response.status)
    except urllib.error.HTTPError as exc:
        exc.read()
        return int(exc.code)


def wait_http(
    url: str,
    timeout: float = 15.0,
    *,
    process: ManagedProcess | None = None,
    log_path: Path | None = None,
) -> int:
    """Poll ``url`` until a GET answers with a status below 500; return that status.

    If ``process`` is given and exits meanwhile, fail at once instead of waiting out the
    timeout. Raise :class:`TimeoutError` carrying the tail of the log file (``log_path``,
    else the process's) when the server never answers.
    """
    _check_loopback(url)
    if log_path is None and process is not None:
        log_path = process.log_path
    deadline = time.monotonic() + timeout
    last_error = "no attempt"
    delay = 0.02
    while True:
        if process is not None and not process.alive:
            raise TimeoutError(
                f"{process.name} exited with status {process.returncode} before {url} answered;"
                f" log tail:\n{log_tail(log_path)}"
            )
        try:
            status = http_get_status(url, timeout=max(0.1, min(2.0, deadline - time.monotonic())))
        except (OSError, urllib.error.URLError) as exc:
            last_error = repr(exc)
        else:
            if status < 500:
                return status
            last_error = f"HTTP {status}"
        if time.monotonic() >= deadline:
            raise TimeoutError(
                f"{url} did not answer within {timeout:.1f}s (last: {last_error}); log tail:\n"
                f"{log_tail(log_path)}"
            )
        time.sleep(delay)
        delay = min(delay * 2, 0.25)
