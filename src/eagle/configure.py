"""``eagle configure containerd|docker|podman``: a runtime's settings for using this host's agent.

Two ways to put the agent under a runtime without changing the runtime:

* **mirror** (default): the runtime asks the agent first for every configured
  origin. containerd gets a ``hosts.toml`` per registry (it adds ``?ns=HOST`` so
  the agent knows the origin); podman gets ``registries.conf`` mirror entries
  whose location carries ``eagle-ns/<slug>`` for the same reason; docker's
  ``registry-mirrors`` only ever apply to Docker Hub, which the agent maps to its
  default origin.
* **proxy**: the runtime's ``HTTP_PROXY``/``HTTPS_PROXY`` point at the agent, which
  intercepts TLS for the registries its rules name. The runtime must trust the
  Eagle CA for those registries; this writes the CA where each runtime looks.

Everything here builds text; :func:`write_setup` is the only function touching
disk, and only below the ``root`` it is given.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from eagle.agent.routing import DOCKER_HUB, NS_PREFIX, origin_slug, registry_name
from eagle.core.errors import ConfigError
from eagle.registry.client import Origin

Mode = Literal["mirror", "proxy"]
Runtime = Literal["containerd", "docker", "podman"]

CONTAINERD_HOSTS_DIR = Path("/etc/containerd/certs.d")
DOCKER_DAEMON_JSON = Path("/etc/docker/daemon.json")
DOCKER_CERTS_DIR = Path("/etc/docker/certs.d")
PODMAN_REGISTRIES_DROPIN = Path("/etc/containers/registries.conf.d/50-eagle.conf")
PODMAN_CONTAINERS_DROPIN = Path("/etc/containers/containers.conf.d/50-eagle-proxy.conf")
PODMAN_CERTS_DIR = Path("/etc/containers/certs.d")
SYSTEMD_DIR = Path("/etc/systemd/system")
NO_PROXY = "localhost,127.0.0.0/8,::1"
HEADER = "Written by `eagle configure {runtime}`"


@dataclass(frozen=True)
class ConfigFile:
    """A file the runtime reads. ``merge_json``: merged into an existing JSON file."""

    path: Path
    content: str
    merge_json: bool = False


@dataclass
class RuntimeSetup:
    """What to write for one runtime, and what the user must do after."""

    runtime: Runtime
    mode: Mode
    files: list[ConfigFile] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


def agent_address(listen: str) -> str:
    """The ``host:port`` a local runtime reaches the agent at, given its listen address."""
    host, _, port = listen.rpartition(":")
    if host in ("", "0.0.0.0", "[::]", "::"):
        host = "127.0.0.1"
    return f"{host}:{port}"


def _toml_str(value: str) -> str:
    return json.dumps(value)  # a JSON string is a valid TOML basic string


def _proxy_env(agent: str) -> dict[str, str]:
    url = f"http://{agent}"
    return {"HTTP_PROXY": url, "HTTPS_PROXY": url, "NO_PROXY": NO_PROXY}


def _systemd_dropin(service: str, agent: str, runtime: Runtime) -> ConfigFile:
    env = " ".join(f'"{k}={v}"' for k, v in _proxy_env(agent).items())
    text = (
        f"# {HEADER.format(runtime=runtime)}: send registry traffic through the Eagle agent.\n"
        f"[Service]\nEnvironment={env}\n"
    )
    return ConfigFile(SYSTEMD_DIR / f"{service}.service.d" / "eagle-proxy.conf", text)


def _daemon_json(values: dict[str, list[str]]) -> ConfigFile:
    return ConfigFile(DOCKER_DAEMON_JSON, json.dumps(values, indent=2) + "\n", merge_json=True)


def _read_ca(ca_cert: Path) -> str:
    try:
        return ca_cert.read_text()
    except OSError as exc:
        raise ConfigError(
            f"cannot read the Eagle CA certificate {ca_cert}: {exc.strerror or exc}"
            " (create it with `eagle ca init`)"
        ) from exc


def _https(origins: Sequence[Origin]) -> list[Origin]:
    return [o for o in origins if o.url.startswith("https://")]


# -- containerd -------------------------------------------------------------------------------


def containerd_setup(
    origins: Sequence[Origin],
    agent: str,
    mode: Mode = "mirror",
    ca_cert: Path | None = None,
    hosts_dir: Path = CONTAINERD_HOSTS_DIR,
) -> RuntimeSetup:
    """``hosts.toml`` per origin; in proxy mode also a systemd drop-in with the proxy."""
    setup = RuntimeSetup("containerd", mode)
    header = f"# {HEADER.format(runtime='containerd')}"
    for origin in origins:
        name = registry_name(origin)
        server = "https://registry-1.docker.io" if name == DOCKER_HUB else origin.url
        lines = [header, f"server = {_toml_str(server)}"]
        config = origin.config
        if mode == "mirror":
            lines[0] += ": pull through the Eagle agent first, then the origin."
            if config is not None and config.ca_bundle is not None:
                lines.append(f"ca = {_toml_str(str(config.ca_bundle))}")
            if config is not None and config.insecure_skip_verify:
                lines.append("skip_verify = true")
            lines += [
                "",
                f"[host.{_toml_str(f'http://{agent}')}]",
                '  capabilities = ["pull", "resolve"]',
            ]
        elif server.startswith("https://"):
            lines[0] += ": the Eagle agent (HTTPS_PROXY) answers for this registry."
            if ca_cert is None:
                raise ConfigError("proxy mode needs the Eagle CA certificate (--ca-cert)")
            lines.append(f"ca = {_toml_str(str(ca_cert))}")
        else:
            continue  # plain HTTP: the proxy needs no trust settings
        setup.files.append(ConfigFile(hosts_dir / name / "hosts.toml", "\n".join(lines) + "\n"))
    if mode == "proxy":
        setup.files.append(_systemd_dropin("containerd", agent, "containerd"))
        setup.notes.append("systemctl daemon-reload && systemctl restart containerd")
    setup.notes.append(
        f'containerd\'s CRI plugin reads these with config_path = "{hosts_dir}" under'
        ' [plugins."io.containerd.grpc.v1.cri".registry] in /etc/containerd/config.toml;'
        f" ctr needs --hosts-dir {hosts_dir}"
        + (" and HTTPS_PROXY in its environment" if mode == "proxy" else "")
    )
    return setup


# -- docker -----------------------------------------------------------------------------------


def docker_setup(
    origins: Sequence[Origin],
    agent: str,
    mode: Mode = "mirror",
    ca_cert: Path | None = None,
) -> RuntimeSetup:
    """Mirror: ``daemon.json`` ``registry-mirrors``. Proxy: systemd drop-in + CA per registry."""
    setup = RuntimeSetup("docker", mode)
    if mode == "mirror":
        daemon = {"registry-mirrors": [f"http://{agent}"]}
        setup.files.append(_daemon_json(daemon))
        default = origins[0]
        if registry_name(default) != DOCKER_HUB:
            setup.notes.append(
                f"docker's registry-mirrors apply to Docker Hub images only: the agent serves"
                f" them from its default origin {default.url}. For other registries use"
                " --mode proxy."
            )
        setup.notes.append("systemctl reload docker (or restart it)")
        return setup
    if ca_cert is None:
        raise ConfigError("proxy mode needs the Eagle CA certificate (--ca-cert)")
    setup.files.append(_systemd_dropin("docker", agent, "docker"))
    pem = None
    for origin in _https(origins):
        pem = pem or _read_ca(ca_cert)
        host = origin.host.removesuffix(":443")
        setup.files.append(ConfigFile(DOCKER_CERTS_DIR / host / "ca.crt", pem))
    plain = [o.host for o in origins if o.url.startswith("http://")]
    if plain:
        daemon = {"insecure-registries": plain}
        setup.files.append(_daemon_json(daemon))
    setup.notes.append("systemctl daemon-reload && systemctl restart docker")
    return setup


# -- podman -----------------------------------------------------------------------------------


def podman_setup(
    origins: Sequence[Origin],
    agent: str,
    mode: Mode = "mirror",
    ca_cert: Path | None = None,
) -> RuntimeSetup:
    """Mirror: a ``registries.conf.d`` drop-in. Proxy: ``containers.conf.d`` env + CA."""
    setup = RuntimeSetup("podman", mode)
    if mode == "mirror":
        blocks = [f"# {HEADER.format(runtime='podman')}: pull through the Eagle agent first."]
        for index, origin in enumerate(origins):
            name = registry_name(origin)
            registry = [
                "[[registry]]",
                f"prefix = {_toml_str(name)}",
                f"location = {_toml_str(name)}",
            ]
            if origin.url.startswith("http://"):
                registry.append("insecure = true")
            # Clients ask the mirror host's /v2/ whether to log in, and ask token servers
            # for their own repository names: only the default origin gets the bare agent.
            mirror = agent if index == 0 else f"{agent}/{NS_PREFIX}/{origin_slug(origin)}"
            registry += [
                "",
                "[[registry.mirror]]",
                f"location = {_toml_str(mirror)}",
                "insecure = true  # the agent speaks plain HTTP on this host",
            ]
            blocks.append("\n".join(registry))
        setup.files.append(ConfigFile(PODMAN_REGISTRIES_DROPIN, "\n\n".join(blocks) + "\n"))
        return setup
    if ca_cert is None:
        raise ConfigError("proxy mode needs the Eagle CA certificate (--ca-cert)")
    env = ", ".join(_toml_str(f"{k}={v}") for k, v in _proxy_env(agent).items())
    setup.files.append(
        ConfigFile(
            PODMAN_CONTAINERS_DROPIN,
            f"# {HEADER.format(runtime='podman')}: registry traffic through the Eagle agent.\n"
            f"[engine]\nenv = [{env}]\n",
        )
    )
    pem = None
    for origin in _https(origins):
        pem = pem or _read_ca(ca_cert)
        setup.files.append(ConfigFile(PODMAN_CERTS_DIR / origin.host / "ca.crt", pem))
    return setup


SETUPS: dict[str, Callable[..., RuntimeSetup]] = {
    "containerd": containerd_setup,
    "docker": docker_setup,
    "podman": podman_setup,
}
"""Each runtime's setup builder: ``(origins, agent, mode, ca_cert, **runtime options)``."""


# -- output -----------------------------------------------------------------------------------


def render(setup: RuntimeSetup) -> str:
    """The setup as text: each file under a ``# ==> PATH`` line, then the next steps."""
    parts = []
    for file in setup.files:
        how = " (merged into the existing file)" if file.merge_json else ""
        parts.append(f"# ==> {file.path}{how}\n{file.content}")
    if setup.notes:
        parts.append("# next:\n" + "\n".join(f"#   {note}" for note in setup.notes) + "\n")
    return "\n".join(parts)


def write_setup(setup: RuntimeSetup, root: Path = Path("/")) -> list[Path]:
    """Write the files under ``root`` (``/`` for the real thing); return what was written.

    ``daemon.json`` is merged: list values gain the new entries, other keys stay.
    Each file is replaced atomically.
    """
    written = []
    for file in setup.files:
        path = root / file.path.relative_to("/")
        content = _merged_json(path, file.content) if file.merge_json else file.content
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            _atomic_write(path, content)
        except OSError as exc:
            raise ConfigError(f"cannot write {path}: {exc.strerror or exc}") from exc
        written.append(path)
    return written


def _merged_json(path: Path, new_text: str) -> str:
    new = json.loads(new_text)
    try:
        current = json.loads(path.read_text()) if path.exists() else {}
    except (OSError, ValueError) as exc:
        raise ConfigError(f"{path} is not valid JSON, not touching it: {exc}") from exc
    if not isinstance(current, dict):
        raise ConfigError(f"{path} must hold a JSON object")
    for key, value in new.items():
        old = current.get(key)
        if isinstance(value, list) and isinstance(old, list):
            current[key] = old + [v for v in value if v not in old]
        else:
            current[key] = value
    return json.dumps(current, indent=2) + "\n"


def _atomic_write(path: Path, content: str) -> None:
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "w") as fh:
            fh.write(content)
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
