"""load_config: defaults < YAML file < EAGLE_* environment < flags, validated once."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import BaseModel

from eagle.core.errors import ConfigError
from eagle.utils.config import load_config
from eagle.utils.net import HostPort, parse_hostport


class Settings(BaseModel):
    listen: str = "0.0.0.0:5000"
    max_peers: int = 50
    trackers: list[str] = []
    debug: bool = False


NO_ENV: dict[str, str] = {}


def write_yaml(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "eagle.yaml"
    path.write_text(text)
    return path


# --- precedence ---------------------------------------------------------------------------


def test_defaults_when_nothing_given() -> None:
    assert load_config(Settings, environ=NO_ENV) == Settings()


def test_yaml_overrides_defaults(tmp_path: Path) -> None:
    path = write_yaml(tmp_path, "max_peers: 7\n")
    assert load_config(Settings, path, environ=NO_ENV).max_peers == 7


def test_env_overrides_yaml(tmp_path: Path) -> None:
    path = write_yaml(tmp_path, "max_peers: 7\nlisten: ':1'\n")
    config = load_config(Settings, path, environ={"EAGLE_MAX_PEERS": "8"})
    assert config.max_peers == 8
    assert config.listen == ":1"


def test_flags_override_env(tmp_path: Path) -> None:
    path = write_yaml(tmp_path, "max_peers: 7\n")
    config = load_config(Settings, path, flags={"max_peers": 9}, environ={"EAGLE_MAX_PEERS": "8"})
    assert config.max_peers == 9


def test_none_flags_are_ignored() -> None:
    config = load_config(
        Settings, flags={"max_peers": None, "listen": None}, environ={"EAGLE_MAX_PEERS": "8"}
    )
    assert config.max_peers == 8
    assert config.listen == Settings().listen


def test_empty_list_flags_are_ignored() -> None:
    config = load_config(Settings, flags={"trackers": []}, environ={"EAGLE_TRACKERS": "http://a"})
    assert config.trackers == ["http://a"]


def test_unrelated_env_vars_are_ignored() -> None:
    environ = {"MAX_PEERS": "1", "EAGLE_": "x", "OTHER_MAX_PEERS": "2"}
    assert load_config(Settings, environ=environ) == Settings()


def test_env_values_are_validated_into_field_types() -> None:
    config = load_config(Settings, environ={"EAGLE_DEBUG": "true", "EAGLE_MAX_PEERS": "3"})
    assert config.debug is True
    assert config.max_peers == 3


def test_list_values_from_env_are_comma_separated() -> None:
    config = load_config(Settings, environ={"EAGLE_TRACKERS": "http://a,http://b,,"})
    assert config.trackers == ["http://a", "http://b"]


def test_list_values_from_yaml_are_lists(tmp_path: Path) -> None:
    path = write_yaml(tmp_path, "trackers:\n  - http://a\n  - http://b\n")
    assert load_config(Settings, path, environ=NO_ENV).trackers == ["http://a", "http://b"]


def test_dashes_in_yaml_keys_are_accepted(tmp_path: Path) -> None:
    path = write_yaml(tmp_path, "max-peers: 11\n")
    assert load_config(Settings, path, environ=NO_ENV).max_peers == 11


def test_empty_yaml_file_means_defaults(tmp_path: Path) -> None:
    path = write_yaml(tmp_path, "")
    assert load_config(Settings, path, environ=NO_ENV) == Settings()


# --- errors -------------------------------------------------------------------------------


def test_unknown_yaml_key_is_named(tmp_path: Path) -> None:
    path = write_yaml(tmp_path, "max_peers: 1\nbogus_key: 2\n")
    with pytest.raises(ConfigError, match="bogus-key"):
        load_config(Settings, path, environ=NO_ENV)


def test_unknown_flag_is_named() -> None:
    with pytest.raises(ConfigError, match="nope"):
        load_config(Settings, flags={"nope": 1}, environ=NO_ENV)


def test_validation_error_names_key(tmp_path: Path) -> None:
    path = write_yaml(tmp_path, "max-peers: many\n")
    with pytest.raises(ConfigError, match="max-peers"):
        load_config(Settings, path, environ=NO_ENV)


def test_validation_error_from_env_names_key() -> None:
    with pytest.raises(ConfigError, match="max-peers"):
        load_config(Settings, environ={"EAGLE_MAX_PEERS": "lots"})


def test_missing_file_is_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read"):
        load_config(Settings, tmp_path / "absent.yaml", environ=NO_ENV)


def test_invalid_yaml_is_config_error(tmp_path: Path) -> None:
    path = write_yaml(tmp_path, "a: b: c\n")
    with pytest.raises(ConfigError, match="cannot read"):
        load_config(Settings, path, environ=NO_ENV)


def test_non_utf8_file_is_config_error(tmp_path: Path) -> None:
    path = tmp_path / "eagle.yaml"
    path.write_bytes(b"max_peers: \xff\xfe\n")
    with pytest.raises(ConfigError, match="cannot read"):
        load_config(Settings, path, environ=NO_ENV)


@pytest.mark.parametrize("text", ["- a\n- b\n", "just a string\n", "42\n"])
def test_non_mapping_yaml_is_config_error(tmp_path: Path, text: str) -> None:
    path = write_yaml(tmp_path, text)
    with pytest.raises(ConfigError, match="mapping"):
        load_config(Settings, path, environ=NO_ENV)


# --- parse_hostport -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("127.0.0.1:80", HostPort("127.0.0.1", 80)),
        ("localhost:5000", HostPort("localhost", 5000)),
        ("[::1]:80", HostPort("::1", 80)),
        ("[::]:6881", HostPort("::", 6881)),
        (":8080", HostPort("0.0.0.0", 8080)),
        ("host:0", HostPort("host", 0)),
        ("host:65535", HostPort("host", 65535)),
    ],
)
def test_parse_hostport_valid(text: str, expected: HostPort) -> None:
    assert parse_hostport(text) == expected


@pytest.mark.parametrize(
    "text", ["", "host", "host:", "host:port", "host:65536", "host:-1", "host:+80", "[::1]"]
)
def test_parse_hostport_invalid(text: str) -> None:
    with pytest.raises(ValueError, match="HOST:PORT"):
        parse_hostport(text)


@pytest.mark.parametrize("text", ["127.0.0.1:80", "[::1]:80", "example.org:443"])
def test_hostport_str_round_trips(text: str) -> None:
    assert str(parse_hostport(text)) == text


def test_free_port_never_hands_out_a_port_twice() -> None:
    from eagle.utils.net import free_port

    ports = [free_port() for _ in range(200)]
    assert len(set(ports)) == len(ports)
