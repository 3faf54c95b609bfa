"""An S3-protocol server on loopback for tests: ``moto_server`` (from ``moto[server]``).

Its environment (and the one :func:`s3_client_env` gives Eagle processes) has no
``AWS_*`` or proxy variables, so nothing configured on the machine -- a CA bundle,
a profile, a proxy, instance metadata -- can send a test anywhere but loopback.
"""

from __future__ import annotations

import logging
import os
import sys
import urllib.request
import uuid
from collections.abc import Mapping
from pathlib import Path

from eagle.storage.config import S3Options
from eagle.testing.procs import ManagedProcess, StartStopContext, wait_http
from eagle.utils.net import free_port

log = logging.getLogger(__name__)

ACCESS_KEY = "eagle-test"
SECRET_KEY = "eagle-test-secret"
REGION = "us-east-1"
_PROXY_VARS = {"http_proxy", "https_proxy", "all_proxy", "no_proxy"}


def s3_client_env(environ: Mapping[str, str] | None = None) -> dict[str, str]:
    """``environ`` (default: ours) without ``AWS_*`` and proxy variables, and with instance
    metadata lookups disabled (they would go to a link-local address)."""
    source = os.environ if environ is None else environ
    env = {
        k: v for k, v in source.items() if not k.startswith("AWS_") and k.lower() not in _PROXY_VARS
    }
    env["AWS_EC2_METADATA_DISABLED"] = "true"
    return env


class MotoS3(StartStopContext):
    """``moto_server`` on ``127.0.0.1:<free port>``; buckets made with :meth:`bucket`."""

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.port = free_port()
        self._process: ManagedProcess | None = None

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def alive(self) -> bool:
        return self._process is not None and self._process.alive

    def options(self, **overrides: object) -> S3Options:
        """Client settings for this server: explicit endpoint, region and keys."""
        values: dict[str, object] = {
            "endpoint": self.endpoint,
            "region": REGION,
            "access_key_id": ACCESS_KEY,
            "secret_access_key": SECRET_KEY,
            "addressing_style": "path",
            "max_attempts": 1,
            "connect_timeout": 2.0,
            "read_timeout": 20.0,
        }
        values.update(overrides)
        return S3Options.model_validate(values)

    def start(self) -> None:
        """Start the server (again, on the same port) and wait until it answers."""
        if self.alive:
            return
        process = ManagedProcess(
            [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(self.port)],
            self.workdir / "moto.log",
            env=s3_client_env(),
            name="moto_server",
        )
        process.start()
        self._process = process
        try:
            wait_http(f"{self.endpoint}/moto-api/", timeout=30, process=process)
        except BaseException:
            process.stop()
            raise
        log.info("moto up endpoint=%s", self.endpoint)

    def stop(self) -> None:
        """Stop the server; moto keeps buckets in memory, so they are gone afterwards."""
        if self._process is not None:
            self._process.stop(timeout=5)

    def bucket(self, name: str | None = None) -> str:
        """Create a bucket (a fresh random name by default) and return its name."""
        name = name or f"eagle-{uuid.uuid4().hex[:12]}"
        request = urllib.request.Request(f"{self.endpoint}/{name}", method="PUT")
        opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
        with opener.open(request, timeout=10) as resp:
            resp.read()
        return name
