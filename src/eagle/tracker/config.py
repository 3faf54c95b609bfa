"""Configuration of the tracker."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from eagle.utils.net import HostPort, parse_hostport


class TrackerConfig(BaseModel):
    """What a tracker listens on, what it tells clients, and how much it may remember."""

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
    max_swarm_peers: int = Field(default=50000, ge=1)
    """Memory bound: peers kept in one swarm before the oldest-expiring is evicted."""
    max_swarms: int = Field(default=100000, ge=1)
    """Memory bound: swarms kept before the least recently announced one is evicted."""

    @field_validator("listen")
    @classmethod
    def _check_listen(cls, value: str) -> str:
        parse_hostport(value)
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
