"""`eagle configure`: the files each runtime gets, parsed back the way the runtime would."""

from __future__ import annotations

import json
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from eagle.configure import (
    agent_address,
    containerd_setup,
    docker_setup,
    podman_setup,
    render,
    write_setup,
)
from eagle.core.errors import ConfigError
from eagle.registry.client import OriginConfig, OriginSet

AGENT = "127.0.0.1:5000"


def origins(ca_bundle: Path | None = None) -> OriginSet:
    return OriginSet(
        [
            OriginConfig(url="https://registry-1.docker.io"),
            OriginConfig(url="https://harbor.example.com", ca_bundle=ca_bundle),
            OriginConfig(url="http://10.0.0.5:5000"),
        ]
    )


def test_agent_address() -> None:
    assert agent_address("0.0.0.0:5000") == "127.0.0.1:5000"
    assert agent_address("10.1.2.3:5000") == "10.1.2.3:5000"


def test_containerd_mirror_hosts_toml(tmp_path: Path) -> None:
    setup = containerd_setup(origins(tmp_path / "harbor-ca.pem").origins, AGENT)
    files = {str(f.path): tomllib.loads(f.content) for f in setup.files}
    hub = files["/etc/containerd/certs.d/docker.io/hosts.toml"]
    assert hub["server"] == "https://registry-1.docker.io"
    assert hub["host"]["http://127.0.0.1:5000"]["capabilities"] == ["pull", "resolve"]
    harbor = files["/etc/containerd/certs.d/harbor.example.com/hosts.toml"]
    assert harbor["ca"] == str(tmp_path / "harbor-ca.pem")
    assert files["/etc/containerd/certs.d/10.0.0.5:5000/hosts.toml"]["server"] == (
        "http://10.0.0.5:5000"
    )
    assert "config_path" in render(setup)


def test_containerd_proxy_trusts_the_eagle_ca(tmp_path: Path) -> None:
    setup = containerd_setup(origins().origins, AGENT, "proxy", tmp_path / "ca.crt")
    paths = [str(f.path) for f in setup.files]
    assert "/etc/systemd/system/containerd.service.d/eagle-proxy.conf" in paths
    harbor = next(f for f in setup.files if "harbor" in str(f.path))
    assert tomllib.loads(harbor.content)["ca"] == str(tmp_path / "ca.crt")
    assert not any("10.0.0.5" in p for p in paths)  # plain http needs no trust


def test_docker_mirror_merges_into_an_existing_daemon_json(tmp_path: Path) -> None:
    daemon = tmp_path / "etc/docker/daemon.json"
    daemon.parent.mkdir(parents=True)
    daemon.write_text(json.dumps({"log-driver": "journald", "registry-mirrors": ["http://m"]}))
    written = write_setup(docker_setup(origins().origins, AGENT), tmp_path)
    assert written == [daemon]
    merged = json.loads(daemon.read_text())
    assert merged == {
        "log-driver": "journald",
        "registry-mirrors": ["http://m", "http://127.0.0.1:5000"],
    }
    write_setup(docker_setup(origins().origins, AGENT), tmp_path)  # idempotent
    assert json.loads(daemon.read_text()) == merged


def test_docker_mirror_warns_when_the_default_origin_is_not_docker_hub() -> None:
    setup = docker_setup(OriginSet(["http://10.0.0.5:5000"]).origins, AGENT)
    assert any("Docker Hub images only" in note for note in setup.notes)


def test_docker_proxy_writes_ca_per_registry_and_refuses_without_ca(tmp_path: Path) -> None:
    ca = tmp_path / "ca.crt"
    with pytest.raises(ConfigError, match="eagle ca init"):
        docker_setup(origins().origins, AGENT, "proxy", ca)
    ca.write_text("PEM")
    root = tmp_path / "root"
    write_setup(docker_setup(origins().origins, AGENT, "proxy", ca), root)
    assert (root / "etc/docker/certs.d/harbor.example.com/ca.crt").read_text() == "PEM"
    assert (root / "etc/docker/certs.d/registry-1.docker.io/ca.crt").is_file()
    dropin = (root / "etc/systemd/system/docker.service.d/eagle-proxy.conf").read_text()
    assert '"HTTPS_PROXY=http://127.0.0.1:5000"' in dropin
    daemon = json.loads((root / "etc/docker/daemon.json").read_text())
    assert daemon == {"insecure-registries": ["10.0.0.5:5000"]}


def test_podman_mirror_entries() -> None:
    (file,) = podman_setup(origins().origins, AGENT).files
    registries = tomllib.loads(file.content)["registry"]
    by_prefix = {r["prefix"]: r for r in registries}
    # The default origin gets the bare agent (logins and token scopes stay the origin's);
    # the others an eagle-ns/ path the agent maps back to them.
    assert by_prefix["docker.io"]["mirror"] == [{"location": AGENT, "insecure": True}]
    assert by_prefix["harbor.example.com"]["mirror"][0]["location"] == (
        f"{AGENT}/eagle-ns/harbor.example.com"
    )
    assert by_prefix["10.0.0.5:5000"]["insecure"] is True
    assert by_prefix["10.0.0.5:5000"]["mirror"][0]["location"] == f"{AGENT}/eagle-ns/10.0.0.5-5000"


def test_cli_prints_and_rejects_a_bad_mode() -> None:
    base = [sys.executable, "-m", "eagle", "configure", "podman", "--origin", "http://r:5000"]
    done = subprocess.run(base, capture_output=True, text=True, check=False)
    assert done.returncode == 0 and "[[registry.mirror]]" in done.stdout
    done = subprocess.run([*base, "--mode", "sideways"], capture_output=True, text=True)
    assert done.returncode == 2 and "mirror or proxy" in done.stderr
