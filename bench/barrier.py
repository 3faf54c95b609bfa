"""Start one job per host, wait until all are ready, release them together, collect results.

Jobs speak the protocol of :mod:`bench.hostrun`: ``ready`` on stdout, then ``go`` on
stdin, then one JSON line. A job may keep running after it reported (a BitTorrent
client keeps seeding for the others); closing its stdin tells it to stop.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import selectors
import signal
import subprocess
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

log = logging.getLogger(__name__)


@dataclass
class Job:
    """One host's job: its process and what it said."""

    label: str
    argv: list[str]
    log_path: Path
    popen: subprocess.Popen[str] | None = None
    ready: bool = False
    result: dict[str, Any] | None = None
    buffer: str = ""
    extra: dict[str, Any] = field(default_factory=dict)


class BarrierError(RuntimeError):
    """A job failed to get ready, or the run timed out."""


class Barrier:
    """A set of jobs released at the same instant; a context manager that kills leftovers."""

    def __init__(self, env: Mapping[str, str] | None = None, cwd: Path | None = None) -> None:
        self.jobs: list[Job] = []
        self.env = dict(env) if env is not None else None
        self.cwd = cwd
        self.go_time = 0.0
        self.go_wall = 0.0  # the same instant on the wall clock, to read log timestamps

    def add(self, label: str, argv: Sequence[str], log_path: Path, **extra: Any) -> Job:
        """A job to run ``argv`` (already wrapped for its namespace), logging stderr to a file."""
        job = Job(label, list(argv), log_path, extra=dict(extra))
        self.jobs.append(job)
        return job

    def start(self, ready_timeout: float = 60.0) -> None:
        """Start every job and wait until each has printed ``ready``."""
        for job in self.jobs:
            job.log_path.parent.mkdir(parents=True, exist_ok=True)
            with job.log_path.open("ab") as stderr:
                job.popen = subprocess.Popen(
                    job.argv,
                    stdin=subprocess.PIPE,
                    stdout=subprocess.PIPE,
                    stderr=stderr,
                    text=True,
                    env=self.env,
                    cwd=self.cwd,
                    start_new_session=True,
                )
        self._read_until(lambda j: j.ready, ready_timeout, "ready")

    def go(self) -> float:
        """Release every job; return the monotonic time of the release."""
        self.go_time = time.monotonic()
        self.go_wall = time.time()
        for job in self.jobs:
            stdin = self._stdin(job)
            stdin.write("go\n")
            stdin.flush()
        log.info("barrier released jobs=%d", len(self.jobs))
        return self.go_time

    def wait(self, timeout: float) -> list[Job]:
        """Wait for every job's result line (at most ``timeout`` seconds); return the jobs."""
        try:
            self._read_until(lambda j: j.result is not None, timeout, "a result")
        except BarrierError as exc:
            log.warning("%s", exc)
            for job in self.jobs:
                if job.result is None:
                    job.result = {"ok": False, "error": f"no result within {timeout:.0f}s"}
        return self.jobs

    def stop(self, timeout: float = 10.0) -> None:
        """Close every job's stdin (asking it to stop), then kill what is left."""
        for job in self.jobs:
            if job.popen is not None and job.popen.stdin is not None:
                with contextlib.suppress(OSError):
                    job.popen.stdin.close()
        deadline = time.monotonic() + timeout
        for job in self.jobs:
            if job.popen is None:
                continue
            try:
                job.popen.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                log.warning("job did not stop, killing label=%s", job.label)
            with contextlib.suppress(ProcessLookupError):
                os.killpg(job.popen.pid, signal.SIGKILL)
            job.popen.wait()
            if job.popen.stdout is not None:
                job.popen.stdout.close()

    def __enter__(self) -> Barrier:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- internals -------------------------------------------------------------------------

    @staticmethod
    def _stdin(job: Job) -> IO[str]:
        assert job.popen is not None and job.popen.stdin is not None
        return job.popen.stdin

    def _read_until(self, done: Any, timeout: float, what: str) -> None:
        deadline = time.monotonic() + timeout
        with selectors.DefaultSelector() as selector:
            for job in self.jobs:
                if not done(job):
                    assert job.popen is not None and job.popen.stdout is not None
                    os.set_blocking(job.popen.stdout.fileno(), False)
                    selector.register(job.popen.stdout, selectors.EVENT_READ, job)
            while any(not done(j) for j in self.jobs):
                left = deadline - time.monotonic()
                if left <= 0:
                    missing = [j.label for j in self.jobs if not done(j)]
                    raise BarrierError(f"no {what} from {missing} within {timeout:.0f}s")
                for key, _ in selector.select(min(left, 1.0)):
                    job = key.data
                    chunk = key.fileobj.read()  # type: ignore[union-attr]
                    if not chunk:
                        selector.unregister(key.fileobj)
                        if not done(job):
                            message = f"job {job.label} exited before {what}; see {job.log_path}"
                            if job.ready:
                                job.result = {"ok": False, "error": message}
                            else:
                                raise BarrierError(message)
                        continue
                    self._take(job, chunk)
                    if done(job):
                        selector.unregister(key.fileobj)

    @staticmethod
    def _take(job: Job, chunk: str) -> None:
        job.buffer += chunk
        *lines, job.buffer = job.buffer.split("\n")
        for line in lines:
            line = line.strip()
            if line == "ready":
                job.ready = True
            elif line.startswith("{"):
                job.result = json.loads(line)
