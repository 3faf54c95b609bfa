"""Typed configuration merged from a YAML file, ``EAGLE_*`` environment variables and flags.

Precedence, lowest first: model defaults, the YAML file, the environment, flags.
The result is validated once; errors name the offending key.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any, TypeVar, get_origin

import yaml
from pydantic import AfterValidator, BaseModel, BeforeValidator, ValidationError

from eagle.core.errors import ConfigError
from eagle.utils.net import parse_hostport, parse_size

M = TypeVar("M", bound=BaseModel)
ENV_PREFIX = "EAGLE_"


def _normalise_keys(raw: Mapping[str, Any]) -> dict[str, Any]:
    return {str(k).replace("-", "_"): v for k, v in raw.items()}


def _from_env(model: type[BaseModel], environ: Mapping[str, str]) -> dict[str, Any]:
    values: dict[str, Any] = {}
    for name, field in model.model_fields.items():
        raw = environ.get(ENV_PREFIX + name.upper())
        if raw is None:
            continue
        is_list = get_origin(field.annotation) in (list, tuple)
        values[name] = [part for part in raw.split(",") if part] if is_list else raw
    return values


def load_config(
    model: type[M],
    config_file: Path | None = None,
    flags: Mapping[str, Any] | None = None,
    environ: Mapping[str, str] | None = None,
) -> M:
    """Build ``model`` from defaults < YAML file < environment < flags (``None`` = unset)."""
    merged: dict[str, Any] = {}
    if config_file is not None:
        try:
            loaded = yaml.safe_load(config_file.read_text()) or {}
        except (OSError, UnicodeDecodeError, yaml.YAMLError) as exc:
            raise ConfigError(f"cannot read config file {config_file}: {exc}") from exc
        if not isinstance(loaded, dict):
            raise ConfigError(f"config file {config_file} must hold a mapping of keys to values")
        merged.update(_normalise_keys(loaded))
    merged.update(_from_env(model, os.environ if environ is None else environ))
    merged.update({k: v for k, v in (flags or {}).items() if v is not None and v != []})
    unknown = sorted(set(merged) - set(model.model_fields))
    if unknown:
        raise ConfigError(f"unknown config key {unknown[0].replace('_', '-')!r}")
    try:
        return model.model_validate(merged)
    except ValidationError as exc:
        first = exc.errors()[0]
        key = ".".join(str(p) for p in first["loc"]).replace("_", "-")
        raise ConfigError(f"config key {key!r}: {first['msg']}") from exc


def _check_listen(value: str) -> str:
    parse_hostport(value)
    return value


def _check_announce_url(value: str) -> str:
    if not value.startswith(("http://", "https://")) or not value.rstrip("/").endswith("/announce"):
        # libtorrent refuses other paths to localhost trackers (SSRF mitigation).
        raise ValueError(f"tracker URL must be http(s)://host:port/announce, got {value!r}")
    return value


def _check_http_url(value: str) -> str:
    if not value.startswith(("http://", "https://")):
        raise ValueError(f"expected an http(s):// URL, got {value!r}")
    return value.rstrip("/")


ListenAddress = Annotated[str, AfterValidator(_check_listen)]
"""``HOST:PORT`` a server binds to."""

AnnounceURL = Annotated[str, AfterValidator(_check_announce_url)]
"""A tracker's announce URL."""

HttpURL = Annotated[str, AfterValidator(_check_http_url)]
"""An ``http(s)://`` base URL, without a trailing slash."""

ByteSize = Annotated[int, BeforeValidator(parse_size)]
"""Bytes, written as ``100G``, ``50M``, ``512K`` or a plain number."""
