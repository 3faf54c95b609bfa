"""Storage backends by name, imported only when chosen (like uvicorn's ``"module:Class"``).

A location names its backend: ``fs:/path`` (or a bare ``/path``), ``s3://bucket/prefix``,
or ``NAME:rest`` for a backend added with :func:`register_backend`. The backend class
must subclass :class:`~eagle.storage.base.BlobStorage` and provide
``from_config(location_rest, StorageConfig)``.
"""

from __future__ import annotations

import importlib
from typing import Protocol

from eagle.core.errors import ConfigError
from eagle.storage.base import BlobStorage
from eagle.storage.config import StorageConfig

BACKENDS: dict[str, str] = {
    "fs": "eagle.storage.fs:FsStorage",
    "s3": "eagle.storage.s3:S3Storage",
}


class BackendFactory(Protocol):
    """What a registered backend class offers besides the :class:`BlobStorage` methods."""

    def from_config(self, location: str, config: StorageConfig) -> BlobStorage: ...


def register_backend(name: str, target: str) -> None:
    """Make ``NAME:...`` locations use ``target``, a ``"package.module:Class"`` string."""
    if ":" not in target:
        raise ConfigError(f"storage backend {name!r}: expected 'module:Class', got {target!r}")
    BACKENDS[name] = target


def split_location(location: str) -> tuple[str, str]:
    """``fs:/data`` → ``("fs", "/data")``; ``s3://b/p`` → ``("s3", "b/p")``; ``/data`` → fs."""
    if location.startswith(("/", ".", "~")):
        return "fs", location
    name, sep, rest = location.partition(":")
    if not sep or not name:
        raise ConfigError(
            f"config key 'storage': expected fs:/path or s3://bucket/prefix, got {location!r}"
        )
    return name, rest.removeprefix("//")


def load_backend(name: str) -> BackendFactory:
    """Import the class registered as ``name``."""
    target = BACKENDS.get(name)
    if target is None:
        known = ", ".join(sorted(BACKENDS))
        raise ConfigError(f"config key 'storage': unknown backend {name!r} (known: {known})")
    module_name, _, attr = target.partition(":")
    try:
        module = importlib.import_module(module_name)
        cls = getattr(module, attr)
    except ImportError as exc:
        raise ConfigError(
            f"storage backend {name!r} needs a module that is not installed: {exc}"
        ) from exc
    except AttributeError as exc:
        raise ConfigError(f"storage backend {name!r}: {target} does not exist") from exc
    if not (isinstance(cls, type) and issubclass(cls, BlobStorage)):
        raise ConfigError(f"storage backend {name!r}: {target} is not a BlobStorage")
    factory: BackendFactory = cls  # type: ignore[assignment]
    return factory


def open_storage(config: StorageConfig) -> BlobStorage:
    """Build (not yet start) the backend ``config.location`` names."""
    name, rest = split_location(config.location)
    return load_backend(name).from_config(rest, config)
