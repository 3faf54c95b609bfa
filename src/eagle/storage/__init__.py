"""Seeder storage: the interface every backend implements, and the backends by name."""

from eagle.storage.base import (
    BlobReader,
    BlobStat,
    BlobStorage,
    NotFound,
    RangeNotSatisfiable,
    StorageUnavailable,
)
from eagle.storage.config import S3Options, StorageConfig
from eagle.storage.registry import open_storage, register_backend

__all__ = [
    "BlobReader",
    "BlobStat",
    "BlobStorage",
    "NotFound",
    "RangeNotSatisfiable",
    "S3Options",
    "StorageConfig",
    "StorageUnavailable",
    "open_storage",
    "register_backend",
]
