"""Seeder configuration."""

from __future__ import annotations

from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field

from eagle.registry.client import OriginList
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
