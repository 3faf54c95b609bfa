"""A real origin registry for tests, the demo and benchmarks: Debian's ``docker-registry``.

:class:`OriginRegistry` runs Docker Distribution 2.8 on a free loopback port with its
storage, config and log in one directory, and reads the registry's own access log to
say how many blob bytes the origin actually served -- the number Eagle exists to shrink.
"""

from __future__ import annotations

import base64
import ctypes
import json
import logging
import os
import re
import secrets
import shutil
import subprocess
import tempfile
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType

import yaml

from eagle.core.digest import Digest
from eagle.testing.procs import ManagedProcess, http_get_status, log_tail, wait_http
from eagle.utils.net import free_port

log = logging.getLogger(__name__)

REGISTRY_BINARY = "docker-registry"
_START_ATTEMPTS = 3  # free_port() can race with another process grabbing the same port
_BLOB_URI = re.compile(
    r"^/v2/(?P<repo>.+)/blobs/(?P<digest>[a-z0-9+._-]+:[a-zA-Z0-9=_-]+)(?:\?.*)?$"
)
# logrus text format: key=value, the value double-quoted (Go %q) when it holds odd characters.
_FIELD = re.compile(r'([\w.]+)=("(?:[^"\\]|\\.)*"|\S*)')


@dataclass(frozen=True)
class BasicAuth:
    """htpasswd credentials the registry demands from every client."""

    username: str
    password: str
    realm: str = "eagle-test"

    @property
    def creds(self) -> str:
        """``USER:PASSWORD``, as skopeo's ``--src-creds``/``--dest-creds`` take it."""
        return f"{self.username}:{self.password}"

    @property
    def header(self) -> str:
        """The ``Authorization`` header value for these credentials."""
        return "Basic " + base64.b64encode(self.creds.encode()).decode("ascii")


@dataclass(frozen=True)
class TlsFiles:
    """PEM certificate and private key paths for a TLS server."""

    certificate: Path
    key: Path


@dataclass(frozen=True)
class BlobRequest:
    """One blob request the registry answered, as its access log recorded it."""

    method: str
    repository: str
    digest: str
    status: int
    written: int

    @property
    def served(self) -> bool:
        """True when the origin sent blob bytes (a 200 or 206 to a GET)."""
        return self.method == "GET" and self.status in (200, 206)


def self_signed_tls(directory: Path, host: str = "127.0.0.1") -> TlsFiles:
    """Write a fresh self-signed certificate for ``host`` (and localhost) with openssl."""
    directory.mkdir(parents=True, exist_ok=True)
    files = TlsFiles(directory / "tls.crt", directory / "tls.key")
    san = f"IP:{host}" if host[:1].isdigit() or ":" in host else f"DNS:{host}"
    _run(
        [
            "openssl", "req", "-x509", "-nodes", "-days", "30",
            "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
            "-subj", f"/CN={host}",
            "-addext", f"subjectAltName={san},DNS:localhost,IP:127.0.0.1",
            "-keyout", str(files.key), "-out", str(files.certificate),
        ]
    )  # fmt: skip
    return files


def htpasswd_line(username: str, password: str) -> str:
    """An htpasswd line with a bcrypt hash, the only scheme Docker Distribution accepts.

    Uses the system's libxcrypt (always present on Debian) so no Python package is
    needed; falls back to ``htpasswd`` from apache2-utils. The lowest bcrypt cost keeps
    the registry fast: it checks the hash on every request.
    """
    try:
        hashed = _bcrypt_libcrypt(password)
    except (OSError, AttributeError, ValueError) as exc:
        if shutil.which("htpasswd") is None:
            raise RuntimeError(
                f"cannot make a bcrypt hash: libcrypt failed ({exc}) and htpasswd"
                " (Debian package apache2-utils) is not installed"
            ) from exc
        out = _run(["htpasswd", "-nbBC", "4", username, password])
        return out.strip()
    return f"{username}:{hashed}"


def _bcrypt_libcrypt(password: str) -> str:
    lib = ctypes.CDLL("libcrypt.so.1")
    gensalt = lib.crypt_gensalt_rn
    gensalt.restype = ctypes.c_char_p
    gensalt.argtypes = [
        ctypes.c_char_p, ctypes.c_ulong, ctypes.c_char_p, ctypes.c_int,
        ctypes.c_char_p, ctypes.c_int,
    ]  # fmt: skip
    crypt_rn = lib.crypt_rn
    crypt_rn.restype = ctypes.c_char_p
    crypt_rn.argtypes = [ctypes.c_char_p, ctypes.c_char_p, ctypes.c_void_p, ctypes.c_int]

    entropy = os.urandom(16)
    salt_buf = ctypes.create_string_buffer(128)
    salt = gensalt(b"$2b$", 4, entropy, len(entropy), salt_buf, len(salt_buf))
    if not salt:
        raise ValueError("libcrypt has no bcrypt")
    data = ctypes.create_string_buffer(32768)  # sizeof(struct crypt_data) in libxcrypt
    hashed = crypt_rn(password.encode(), salt, data, len(data))
    if not hashed or not hashed.startswith(b"$2b$"):
        raise ValueError("libcrypt could not hash with bcrypt")
    return bytes(hashed).decode("ascii")


def _run(argv: list[str]) -> str:
    done = subprocess.run(argv, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"{argv[0]} failed ({done.returncode}): {done.stderr.strip()}")
    return done.stdout


class OriginRegistry:
    """Docker Distribution on ``127.0.0.1:<free port>``, storing under ``directory``.

    Without ``directory`` a temporary one is used and removed when the context exits.
    :meth:`stop` followed by :meth:`start` restarts on the same port with the same
    content (an origin outage in a test). Counting methods read the registry's access
    log, from the start or from the last :meth:`reset_counts`.
    """

    def __init__(
        self,
        directory: Path | None = None,
        *,
        auth: BasicAuth | None = None,
        tls: TlsFiles | None = None,
        port: int | None = None,
        binary: str = REGISTRY_BINARY,
        listen_host: str = "127.0.0.1",
        netns: str | None = None,
        auth_config: dict[str, object] | None = None,
    ) -> None:
        self._tmp: tempfile.TemporaryDirectory[str] | None = None
        if directory is None:
            self._tmp = tempfile.TemporaryDirectory(prefix="eagle-origin-")
            directory = Path(self._tmp.name)
        self.directory = directory
        self.auth = auth
        self.tls = tls
        self.binary = binary
        self._port = port
        self._port_pinned = port is not None
        # Inside a testbed namespace the origin must answer other hosts too ("0.0.0.0");
        # ``host`` and ``url`` still name loopback, which works from the same namespace.
        self.listen_host = listen_host
        # Run inside this named network namespace (so the origin has an address no one
        # outside the test's namespaces can reach); ``host`` then names ``listen_host``.
        self.netns = netns
        # A raw ``auth:`` section (token auth: eagle.testing.tokenauth); wins over ``auth``.
        self.auth_config = auth_config
        self._process: ManagedProcess | None = None
        self._count_from = 0  # log byte offset where counting starts

    # -- addresses -----------------------------------------------------------------------

    @property
    def port(self) -> int:
        """The TCP port; chosen at the first :meth:`start` unless given."""
        if self._port is None:
            raise RuntimeError("the registry has no port until started")
        return self._port

    @property
    def host(self) -> str:
        """``127.0.0.1:PORT`` (or ``LISTEN_HOST:PORT`` when bound to one specific
        address), the registry's name in image references."""
        address = self.listen_host if self.listen_host not in ("0.0.0.0", "::") else "127.0.0.1"
        return f"{address}:{self.port}"

    @property
    def url(self) -> str:
        """``http://127.0.0.1:PORT`` (``https://`` with TLS)."""
        scheme = "https" if self.tls is not None else "http"
        return f"{scheme}://{self.host}"

    @property
    def creds(self) -> str | None:
        """``USER:PASSWORD`` when the registry demands basic auth, else None."""
        return self.auth.creds if self.auth is not None else None

    @property
    def log_path(self) -> Path:
        """The registry's log: its application log and access log, interleaved."""
        return self.directory / "registry.log"

    @property
    def config_path(self) -> Path:
        """The generated configuration file."""
        return self.directory / "config.yml"

    @property
    def pid(self) -> int:
        """The registry's process id; only valid once started."""
        if self._process is None:
            raise RuntimeError("the registry was never started")
        return self._process.pid

    @property
    def alive(self) -> bool:
        """True while the registry process runs."""
        return self._process is not None and self._process.alive

    # -- lifecycle -----------------------------------------------------------------------

    def start(self, timeout: float = 15.0) -> None:
        """Start the registry and return once ``/v2/`` answers; idempotent while running."""
        if self.alive:
            return
        self.directory.mkdir(parents=True, exist_ok=True)
        for attempt in range(1, _START_ATTEMPTS + 1):
            if self._port is None or (not self._port_pinned and attempt > 1):
                self._port = free_port()
            self._write_config()
            env = {k: v for k, v in os.environ.items() if not k.startswith("REGISTRY_")}
            netns = ["ip", "netns", "exec", self.netns] if self.netns else []
            process = ManagedProcess(
                [*netns, self.binary, "serve", str(self.config_path)],
                self.log_path,
                env=env,
                name="docker-registry",
            )
            process.start()
            self._process = process
            try:
                wait_http(f"{self.url}/v2/", timeout, process=process)
            except TimeoutError:
                process.stop()
                in_use = "address already in use" in log_tail(self.log_path, 5)
                if in_use and not self._port_pinned and attempt < _START_ATTEMPTS:
                    log.warning("origin port taken, retrying port=%d", self._port)
                    continue
                raise
            log.info("origin up url=%s dir=%s", self.url, self.directory)
            return

    def stop(self, timeout: float = 10.0) -> None:
        """Stop the registry process (its storage stays); safe to call twice."""
        if self._process is not None:
            self._process.stop(timeout)

    def close(self) -> None:
        """Stop and remove the temporary directory, if this object created one."""
        self.stop()
        if self._tmp is not None:
            self._tmp.cleanup()
            self._tmp = None

    def __enter__(self) -> OriginRegistry:
        try:
            self.start()
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def __repr__(self) -> str:
        port = self._port if self._port is not None else "?"
        return f"OriginRegistry(port={port}, alive={self.alive}, dir={str(self.directory)!r})"

    def _write_config(self) -> None:
        http: dict[str, object] = {
            "addr": f"{self.listen_host}:{self.port}",
            # A fixed secret silences the start-up warning and keeps upload state valid
            # across a stop/start in the middle of a test.
            "secret": self._secret(),
        }
        if self.tls is not None:
            http["tls"] = {"certificate": str(self.tls.certificate), "key": str(self.tls.key)}
        config: dict[str, object] = {
            "version": "0.1",
            "log": {"level": "info", "formatter": "text"},
            "storage": {
                "filesystem": {"rootdirectory": str(self.directory / "data")},
                "delete": {"enabled": True},
                "redirect": {"disable": True},
                "maintenance": {"uploadpurging": {"enabled": False}},
            },
            "http": http,
            "health": {"storagedriver": {"enabled": False}},
        }
        if self.auth is not None:
            htpasswd = self.directory / "htpasswd"
            htpasswd.write_text(htpasswd_line(self.auth.username, self.auth.password) + "\n")
            config["auth"] = {"htpasswd": {"realm": self.auth.realm, "path": str(htpasswd)}}
        if self.auth_config is not None:
            config["auth"] = self.auth_config
        self.config_path.write_text(yaml.safe_dump(config, sort_keys=False))

    def _secret(self) -> str:
        path = self.directory / "http-secret"
        if not path.exists():
            path.write_text(secrets.token_hex(16))
        return path.read_text().strip()

    # -- what the origin served ----------------------------------------------------------

    def blob_requests(self) -> list[BlobRequest]:
        """Every blob request (GET and HEAD, any status) logged since the last reset."""
        self._sync_log()
        return list(self._parse_log(self._count_from))

    def blob_gets(self, digest: str | Digest | None = None) -> int:
        """How many blob GETs the origin answered with bytes (200 or 206), for one digest
        or in total. HEADs, errors and manifest requests do not count."""
        wanted = str(digest) if digest is not None else None
        return sum(1 for r in self.blob_requests() if r.served and wanted in (None, r.digest))

    def blob_bytes(self, digest: str | Digest | None = None) -> int:
        """Blob bytes the origin wrote in answer to GETs, for one digest or in total."""
        wanted = str(digest) if digest is not None else None
        return sum(
            r.written for r in self.blob_requests() if r.served and wanted in (None, r.digest)
        )

    def reset_counts(self) -> None:
        """Make the counting methods forget every request logged so far."""
        self._sync_log()
        self._count_from = self.log_path.stat().st_size if self.log_path.exists() else 0

    def _sync_log(self, timeout: float = 5.0) -> None:
        # The registry logs a request after its handler returns, which can be a moment
        # after the client has read the whole body. Send a marked request and wait for its
        # line: requests that finished before it are then logged too.
        if not self.alive:
            return
        token = uuid.uuid4().hex
        headers = {"Authorization": self.auth.header} if self.auth is not None else {}
        http_get_status(f"{self.url}/v2/?eagle-log-barrier={token}", headers=headers)
        deadline = time.monotonic() + timeout
        needle = token.encode()
        while time.monotonic() < deadline:
            if needle in self.log_path.read_bytes()[self._count_from :]:
                return
            time.sleep(0.01)
        log.warning("origin log barrier not seen within %.1fs; counts may lag", timeout)

    def _parse_log(self, offset: int) -> Iterator[BlobRequest]:
        if not self.log_path.exists():
            return
        with self.log_path.open("rb") as fh:
            fh.seek(offset)
            for raw in fh:
                line = raw.decode("utf-8", errors="replace")
                if 'msg="response completed' not in line:
                    continue
                request = _parse_access_line(line)
                if request is not None:
                    yield request


def _parse_access_line(line: str) -> BlobRequest | None:
    fields = {key: _unquote(value) for key, value in _FIELD.findall(line)}
    match = _BLOB_URI.match(fields.get("http.request.uri", ""))
    if match is None:
        return None
    try:
        status = int(fields.get("http.response.status", "0"))
        written = int(fields.get("http.response.written", "0"))
    except ValueError:
        return None
    return BlobRequest(
        method=fields.get("http.request.method", ""),
        repository=match["repo"],
        digest=match["digest"],
        status=status,
        written=written,
    )


def _unquote(value: str) -> str:
    if len(value) >= 2 and value[0] == value[-1] == '"':
        try:
            return str(json.loads(value))
        except ValueError:
            return value[1:-1]
    return value
