"""Seeder configuration."""

from __future__ import annotations

from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field

from eagle.p2p.labels import Label
from eagle.registry.client import OriginList
from eagle.storage.config import S3Options, StorageConfig
from eagle.utils.config import AnnounceURL, ByteSize, ListenAddress


class SeederConfig(BaseModel):
    """``eagle seeder``: flags, YAML keys (dashes or underscores) and EAGLE_* variables."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    listen: ListenAddress = "127.0.0.1:7071"
    p2p_port: int = Field(6881, ge=0, le=65535)
    p2p_host: str | None = None
    tracker: list[AnnounceURL] = Field(default_factory=list)
    origin: OriginList
    data_dir: Path = Path("/var/lib/eagle/seeder")
    origin_connect_timeout: float = Field(5.0, gt=0)
    origin_read_timeout: float = Field(60.0, gt=0)
    failure_ttl: float = Field(5.0, ge=0, description="seconds a failed fetch is remembered")
    upload_rate: ByteSize = Field(0, ge=0, description="bytes/s, 0 = unlimited")
    storage: str | None = Field(
        None, description="fs:/path (default: fs:<data-dir>/storage) or s3://bucket/prefix"
    )
    s3: S3Options = Field(default_factory=S3Options, description="S3 endpoint, region, keys")
    cache_size: ByteSize = Field(0, ge=0, description="local copies, bytes; 0 = unlimited")
    cache_lease: float = Field(
        60.0, ge=0, description="seconds a handed-out blob is kept from eviction"
    )
    origin_retries: int = Field(3, ge=0, le=10, description="retries of transient origin errors")
    # Location labels the tracker's handout policy uses (added to announce URLs).
    region: Label | None = Field(None, description="region label of this host")
    idc: Label | None = Field(None, description="data centre (IDC) label of this host")
    rack: Label | None = Field(None, description="rack label of this host")
    announce_seeder: bool = Field(
        True, description="announce as a dedicated seeder (seeder=1), spared once peers have copies"
    )
    stream_slots: int = Field(
        1,
        ge=0,
        description="agents per blob that may stream it over HTTP while it is fetched; 0 = off",
    )

    def storage_config(self) -> StorageConfig:
        """Where blobs live for good: ``storage``, or a directory beside the local copies."""
        location = self.storage or f"fs:{self.data_dir / 'storage'}"
        return StorageConfig(location=location, s3=self.s3)
