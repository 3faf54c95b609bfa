"""Agent configuration."""

from __future__ import annotations

from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field

from eagle.registry.client import OriginList
from eagle.utils.config import AnnounceURL, ByteSize, HttpURL, ListenAddress


class AgentConfig(BaseModel):
    """``eagle agent``: flags, YAML keys (dashes or underscores) and EAGLE_* variables."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    listen: ListenAddress = "127.0.0.1:5000"
    p2p_port: int = Field(6881, ge=0, le=65535)
    p2p_host: str | None = None
    tracker: list[AnnounceURL] = Field(default_factory=list)
    seeder: list[HttpURL] = Field(default_factory=list)
    origin: OriginList
    data_dir: Path = Path("/var/lib/eagle/agent")
    seeder_timeout: float = Field(2.0, gt=0, description="per request to a seeder")
    metainfo_timeout: float = Field(300.0, gt=0, description="for a seeder's origin fetch")
    stall_timeout: float = Field(20.0, gt=0, description="p2p without progress → origin")
    origin_connect_timeout: float = Field(5.0, gt=0)
    origin_read_timeout: float = Field(60.0, gt=0)
    download_rate: ByteSize = Field(0, ge=0, description="bytes/s, 0 = unlimited")
    upload_rate: ByteSize = Field(0, ge=0, description="bytes/s, 0 = unlimited")
