"""The container runtimes Eagle slips under, started for a test with temporary everything.

* :class:`Containerd`: Debian's ``containerd`` with its root, state, socket and config
  in one directory, the CRI plugin off; :meth:`Containerd.pull` runs ``ctr images pull``.
* :class:`Dockerd`: Debian's ``dockerd`` with temporary ``--data-root``, ``--exec-root``
  and socket, no iptables, no bridge, using a :class:`Containerd`. It runs in a private
  mount namespace where ``/etc/docker`` is a directory of the test's (``daemon.json``
  and ``certs.d`` are read from there and nowhere else), and optionally inside a
  :class:`~eagle.testing.vethns.VethNamespace`.
* :func:`podman_pull`: ``podman pull`` with temporary ``--root``/``--runroot``, the
  ``cgroupfs`` manager and file events (``podman run`` cannot work here; pulls do).

Each child gets the caller's environment minus proxy variables, plus what the test
passes: a runtime talks to a proxy only when the test says so.
"""

from __future__ import annotations

import json
import logging
import os
import shlex
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Mapping, Sequence
from pathlib import Path

from eagle.testing.procs import ManagedProcess, StartStopContext, log_tail
from eagle.testing.vethns import VethNamespace

log = logging.getLogger(__name__)

_PROXY_VARS = {"http_proxy", "https_proxy", "no_proxy", "all_proxy"}


class RuntimeCommandError(RuntimeError):
    """A runtime command failed; the message carries its output."""


def clean_env(extra: Mapping[str, str] | None = None) -> dict[str, str]:
    """This process's environment without proxy variables, plus ``extra``."""
    env = {k: v for k, v in os.environ.items() if k.lower() not in _PROXY_VARS}
    env.update(extra or {})
    return env


def _run(argv: Sequence[str], env: Mapping[str, str] | None, timeout: float) -> str:
    try:
        done = subprocess.run(
            list(argv), capture_output=True, text=True, env=dict(env or clean_env()),
            timeout=timeout, check=False,
        )  # fmt: skip
    except subprocess.TimeoutExpired as exc:
        raise RuntimeCommandError(f"{' '.join(argv[:4])} timed out after {timeout:.0f}s") from exc
    if done.returncode != 0:
        raise RuntimeCommandError(
            f"{' '.join(argv)} failed ({done.returncode}):\n{done.stdout[-2000:]}"
            f"{done.stderr[-3000:]}"
        )
    return done.stdout


def _wait_unix(path: Path, probe: bytes, process: ManagedProcess, timeout: float) -> None:
    """Wait until ``path`` accepts a connection and answers ``probe`` (if any) with HTTP."""
    deadline = time.monotonic() + timeout
    while True:
        if not process.alive:
            raise RuntimeCommandError(
                f"{process.name} exited ({process.returncode}):\n{log_tail(process.log_path)}"
            )
        try:
            with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
                sock.settimeout(2)
                sock.connect(str(path))
                if not probe:
                    return
                sock.sendall(probe)
                if sock.recv(64).startswith(b"HTTP/1.1 200"):
                    return
        except OSError:
            pass
        if time.monotonic() > deadline:
            raise RuntimeCommandError(
                f"{process.name} not ready within {timeout:.0f}s:\n{log_tail(process.log_path)}"
            )
        time.sleep(0.1)


class Containerd(StartStopContext):
    """containerd in ``directory`` (CRI disabled); socket ``directory/containerd.sock``."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.socket = directory / "containerd.sock"
        self.process: ManagedProcess | None = None

    def start(self, timeout: float = 20.0) -> Containerd:
        self.directory.mkdir(parents=True, exist_ok=True)
        d = self.directory
        config = d / "config.toml"
        config.write_text(
            "version = 2\n"
            f'root = "{d / "root"}"\n'
            f'state = "{d / "state"}"\n'
            'disabled_plugins = ["io.containerd.grpc.v1.cri"]\n'
            f'[grpc]\n  address = "{self.socket}"\n'
            f'[ttrpc]\n  address = "{d / "containerd.sock.ttrpc"}"\n'
            '[debug]\n  address = ""\n'
            '[metrics]\n  address = ""\n'
            '[plugins."io.containerd.internal.v1.opt"]\n'
            f'  path = "{d / "opt"}"\n'
        )
        self.process = ManagedProcess(
            ["containerd", "--config", str(config)], d / "containerd.log", env=clean_env()
        )
        self.process.start()
        try:
            _wait_unix(self.socket, b"", self.process, timeout)
            self.ctr(["version"])
        except BaseException:
            self.stop()
            raise
        return self

    def ctr(
        self, args: Sequence[str], env: Mapping[str, str] | None = None, timeout: float = 120.0
    ) -> str:
        """Run ``ctr --address SOCKET ARGS``; ``env`` is added to a proxy-free environment."""
        return _run(["ctr", "--address", str(self.socket), *args], clean_env(env), timeout)

    def pull(
        self,
        reference: str,
        hosts_dir: Path,
        env: Mapping[str, str] | None = None,
        timeout: float = 120.0,
    ) -> str:
        """``ctr images pull --hosts-dir DIR REFERENCE`` (content fetched by ctr itself)."""
        return self.ctr(["images", "pull", "--hosts-dir", str(hosts_dir), reference], env, timeout)

    def stop(self) -> None:
        if self.process is not None:
            self.process.stop()


class Dockerd(StartStopContext):
    """dockerd with temporary roots, using ``containerd``; ``/etc/docker`` is ``etc_docker``.

    ``etc_docker`` holds ``daemon.json`` (created empty when missing) and ``certs.d``,
    as ``eagle configure docker --write --root ROOT`` leaves them in ``ROOT/etc/docker``.
    """

    def __init__(
        self,
        directory: Path,
        containerd: Containerd,
        etc_docker: Path,
        *,
        netns: VethNamespace | None = None,
        env: Mapping[str, str] | None = None,
    ) -> None:
        self.directory = directory
        self.containerd = containerd
        self.etc_docker = etc_docker
        self.netns = netns
        self.env = dict(env or {})
        # Unix socket paths are limited to 107 bytes: keep the runtime's under /tmp.
        self._short = Path(tempfile.mkdtemp(prefix="e7d-", dir="/tmp"))
        self.socket = self._short / "docker.sock"
        self.process: ManagedProcess | None = None

    @property
    def host(self) -> str:
        """``unix://SOCKET`` for ``docker -H``."""
        return f"unix://{self.socket}"

    def start(self, timeout: float = 30.0) -> Dockerd:
        self.directory.mkdir(parents=True, exist_ok=True)
        self.etc_docker.mkdir(parents=True, exist_ok=True)
        daemon_json = self.etc_docker / "daemon.json"
        if not daemon_json.exists():
            daemon_json.write_text("{}\n")
        Path("/etc/docker").mkdir(exist_ok=True)  # the mount point; docker.io ships it
        dockerd = [
            "dockerd",
            "--config-file", str(daemon_json),
            "--data-root", str(self.directory / "data"),
            "--exec-root", str(self._short / "exec"),
            "--pidfile", str(self._short / "docker.pid"),
            "-H", self.host,
            "--containerd", str(self.containerd.socket),
            "--iptables=false", "--ip6tables=false", "--bridge=none",
            "--storage-driver=vfs",
        ]  # fmt: skip
        if self.netns is not None:
            dockerd = self.netns.wrap(dockerd)
        # A private mount namespace in which /etc/docker is the test's directory: certs.d
        # has no flag, and the machine's /etc/docker stays untouched.
        argv = [
            "unshare", "--mount", "--propagation", "private", "sh", "-c",
            'mount --bind "$0" /etc/docker && exec "$@"', str(self.etc_docker), *dockerd,
        ]  # fmt: skip
        self.process = ManagedProcess(
            argv, self.directory / "dockerd.log", env=clean_env(self.env), name="dockerd"
        )
        self.process.start()
        try:
            _wait_unix(
                self.socket, b"GET /_ping HTTP/1.1\r\nHost: d\r\n\r\n", self.process, timeout
            )
        except BaseException:
            self.stop()
            raise
        return self

    def docker(self, args: Sequence[str], timeout: float = 120.0) -> str:
        """Run the docker CLI against this daemon."""
        return _run(["docker", "-H", self.host, *args], clean_env(), timeout)

    def pull(self, reference: str, timeout: float = 120.0) -> str:
        """``docker pull REFERENCE``."""
        return self.docker(["pull", reference], timeout)

    def image_inspect(self, reference: str) -> dict[str, object]:
        """``docker image inspect`` of one image."""
        data = json.loads(self.docker(["image", "inspect", reference]))
        return dict(data[0])

    def stop(self) -> None:
        if self.process is not None:
            self.process.stop(timeout=20)
        shutil.rmtree(self._short, ignore_errors=True)


def podman_pull(
    reference: str,
    directory: Path,
    registries_conf: Path,
    *,
    env: Mapping[str, str] | None = None,
    timeout: float = 120.0,
) -> str:
    """``podman pull`` with all of podman's state in ``directory``; returns the image id.

    ``registries_conf`` becomes the only registries.conf podman reads (mirrors live there).
    """
    directory.mkdir(parents=True, exist_ok=True)
    # podman refuses a run root longer than 50 characters.
    runroot = Path(tempfile.mkdtemp(prefix="e7p-", dir="/tmp"))
    try:
        return _podman_pull(reference, directory, runroot, registries_conf, env, timeout)
    finally:
        shutil.rmtree(runroot, ignore_errors=True)


def _podman_pull(
    reference: str,
    directory: Path,
    runroot: Path,
    registries_conf: Path,
    env: Mapping[str, str] | None,
    timeout: float,
) -> str:
    policy = directory / "policy.json"
    policy.write_text(json.dumps({"default": [{"type": "insecureAcceptAnything"}]}))
    storage_conf = directory / "storage.conf"
    storage_conf.write_text(
        f'[storage]\ndriver = "vfs"\nrunroot = "{runroot}"\ngraphroot = "{directory / "root"}"\n'
    )
    containers_conf = directory / "containers.conf"
    if not containers_conf.exists():
        containers_conf.write_text("")
    auth = directory / "auth.json"
    if not auth.exists():
        auth.write_text('{"auths": {}}\n')
    for sub in ("home", "tmp", "xdg"):
        (directory / sub).mkdir(exist_ok=True)
    child_env = clean_env(
        {
            "HOME": str(directory / "home"),
            "XDG_RUNTIME_DIR": str(directory / "xdg"),
            "TMPDIR": str(directory / "tmp"),
            "CONTAINERS_REGISTRIES_CONF": str(registries_conf),
            "CONTAINERS_STORAGE_CONF": str(storage_conf),
            "CONTAINERS_CONF": str(containers_conf),
            "REGISTRY_AUTH_FILE": str(directory / "auth.json"),
            **(env or {}),
        }
    )
    argv = [
        "podman",
        "--root", str(directory / "root"),
        "--runroot", str(runroot),
        "--storage-driver", "vfs",
        "--cgroup-manager", "cgroupfs",
        "--events-backend", "file",
        "--tmpdir", str(directory / "tmp"),
        "pull", "--quiet", "--signature-policy", str(policy), reference,
    ]  # fmt: skip
    return _run(argv, child_env, timeout).strip()


def eagle_configure(runtime: str, *args: str) -> str:
    """Run ``eagle configure RUNTIME ARGS`` as a user would; return its output."""
    return _run([sys.executable, "-m", "eagle", "configure", runtime, *args], clean_env(), 60)


def systemd_environment(dropin: Path) -> dict[str, str]:
    """The ``Environment=`` assignments of a systemd drop-in (as systemd would set them)."""
    env: dict[str, str] = {}
    for line in dropin.read_text().splitlines():
        if line.startswith("Environment="):
            for word in shlex.split(line.removeprefix("Environment=")):
                key, _, value = word.partition("=")
                env[key] = value
    return env
