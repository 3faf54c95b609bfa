"""Configuration of the tracker."""

from __future__ import annotations

import ipaddress
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from eagle.tracker.handout import POLICIES
from eagle.utils.net import HostPort, parse_hostport

_STORE_SCHEMES = ("redis://", "rediss://", "unix://")


class TrackerConfig(BaseModel):
    """What a tracker listens on, what it tells clients, whom it hands out, and its bounds."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    listen: str = "127.0.0.1:7070"
    """``HOST:PORT`` (or ``[V6]:PORT``) the HTTP server binds."""
    interval: int = Field(default=30, ge=1)
    """Seconds between announces that clients are told to keep."""
    min_interval: int | None = Field(default=None, ge=1)
    """Seconds clients must wait before re-announcing early (``min interval``); unset: not sent."""
    peer_ttl: int | None = Field(default=None, ge=1)
    """Seconds a silent peer stays in its swarm; unset: three announce intervals."""
    numwant_default: int = Field(default=50, ge=0)
    """Peers handed out when the client does not say how many it wants."""
    numwant_max: int = Field(default=200, ge=0)
    """Most peers handed out in one answer, whatever the client asks for."""
    peer_store: str = "memory"
    """``memory`` (this process only) or ``redis://HOST:PORT/DB`` (shared by trackers: HA)."""
    redis_prefix: str = Field(default="eagle:tracker:", min_length=1, max_length=64)
    """Prefix of every Redis key, so several tracker clusters can share one Redis."""
    policy: str = "default"
    """Peer handout policy: ``default`` (locality, completeness, load) or ``random``."""
    bridge_peers: int = Field(default=2, ge=1)
    """Most peers from other IDCs handed to a gateway in one answer (default policy)."""
    gateways_per_idc: int = Field(default=1, ge=1)
    """In-progress peers of each IDC per swarm that fetch across IDCs (default policy)."""
    locations: Path | None = None
    """YAML file mapping CIDR blocks to ``region``/``idc``/``rack`` labels, for clients
    that do not put labels on their announce URL."""
    trusted_proxies: list[str] = Field(default_factory=list)
    """CIDR blocks of reverse proxies whose ``real_ip_header`` names the real client."""
    real_ip_header: str = "X-Forwarded-For"
    """Header a trusted proxy puts the client's address in (its last entry is used)."""
    max_swarm_peers: int = Field(default=50000, ge=1)
    """Memory bound: peers kept in one swarm before the oldest-expiring is evicted."""
    max_swarms: int = Field(default=100000, ge=1)
    """Memory bound: swarms kept before the least recently announced one is evicted."""
    max_locations: int = Field(default=256, ge=1)
    """Bound on distinct locations per swarm; peers of further ones count as unlabelled."""
    keepalive_timeout: float = Field(default=15.0, gt=0)
    """Seconds an idle HTTP connection is kept open (and a request head may take)."""

    @field_validator("listen")
    @classmethod
    def _check_listen(cls, value: str) -> str:
        parse_hostport(value)
        return value

    @field_validator("peer_store")
    @classmethod
    def _check_store(cls, value: str) -> str:
        if value != "memory" and not value.startswith(_STORE_SCHEMES):
            raise ValueError(f"expected 'memory' or redis://HOST:PORT/DB, got {value!r}")
        return value

    @field_validator("policy")
    @classmethod
    def _check_policy(cls, value: str) -> str:
        if value not in POLICIES:
            raise ValueError(f"unknown policy {value!r}; known: {', '.join(sorted(POLICIES))}")
        return value

    @field_validator("trusted_proxies")
    @classmethod
    def _check_proxies(cls, value: list[str]) -> list[str]:
        for cidr in value:
            ipaddress.ip_network(cidr, strict=False)  # ValueError names the bad block
        return value

    @model_validator(mode="after")
    def _check_numwant(self) -> TrackerConfig:
        if self.numwant_default > self.numwant_max:
            raise ValueError("numwant_default must not exceed numwant_max")
        return self

    @property
    def listen_address(self) -> HostPort:
        """``listen`` parsed."""
        return parse_hostport(self.listen)

    @property
    def effective_ttl(self) -> int:
        """Seconds a silent peer lives: ``peer_ttl``, or three intervals so that two
        lost announces in a row do not drop a healthy peer."""
        return self.peer_ttl if self.peer_ttl is not None else 3 * self.interval
