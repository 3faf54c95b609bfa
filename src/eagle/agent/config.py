"""Agent configuration."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Annotated

from pydantic import AfterValidator, BaseModel, ConfigDict, Field

from eagle.p2p.labels import Label
from eagle.registry.client import OriginList
from eagle.utils.config import AnnounceURL, ByteSize, HttpURL, ListenAddress


def _check_regex(value: str) -> str:
    try:
        re.compile(value)
    except re.error as exc:
        raise ValueError(f"not a regular expression: {value!r} ({exc})") from exc
    return value


ProxyRule = Annotated[str, AfterValidator(_check_regex)]
"""A regular expression matched in full against a proxied ``host`` and ``host:port``."""


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
    seeder_replicas: int = Field(
        2, ge=1, description="seeders asked to seed each blob (rendezvous order); 1 = only one"
    )
    stall_timeout: float = Field(20.0, gt=0, description="p2p without progress → origin")
    origin_connect_timeout: float = Field(5.0, gt=0)
    origin_read_timeout: float = Field(60.0, gt=0)
    download_rate: ByteSize = Field(0, ge=0, description="bytes/s, 0 = unlimited")
    upload_rate: ByteSize = Field(0, ge=0, description="bytes/s, 0 = unlimited")
    cache_size: ByteSize = Field(
        0, ge=0, description="bytes of blobs kept in data-dir, LRU; 0 = unlimited"
    )
    fallback_timeout: float = Field(
        2.0, gt=0, description="seconds without any p2p progress before using the origin"
    )
    prefetch: bool = Field(
        True, description="fetch all blobs of an image as soon as its manifest is served"
    )
    seeder_stream: bool = Field(
        True, description="stream a cold blob from the seeder while it fetches it from the origin"
    )
    admin_token: str | None = Field(
        None, description="if set, /v1 requests need 'Authorization: Bearer <token>'"
    )
    # Proxy mode and private registries (HTTP(S)_PROXY clients, the Eagle CA, access checks).
    proxy: bool = Field(False, description="also act as an HTTP(S) forward proxy")
    proxy_rule: list[ProxyRule] = Field(
        default_factory=list,
        description="regex of host or host:port to intercept; none = the configured origins",
    )
    ca_cert: Path = Field(Path("/etc/eagle/ca/ca.crt"), description="Eagle CA certificate")
    ca_key: Path = Field(Path("/etc/eagle/ca/ca.key"), description="Eagle CA private key")
    access_check_ttl: float = Field(
        60.0, ge=0, description="seconds an origin's yes to a client's blob read is reused"
    )
    # Location labels the tracker's handout policy uses (added to announce URLs).
    region: Label | None = Field(None, description="region label of this host")
    idc: Label | None = Field(None, description="data centre (IDC) label of this host")
    rack: Label | None = Field(None, description="rack label of this host")

    @property
    def proxy_enabled(self) -> bool:
        """Proxy mode is on with ``proxy: true`` or any ``proxy-rule``."""
        return self.proxy or bool(self.proxy_rule)
