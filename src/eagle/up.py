"""``eagle up``: tracker, seeder and agent in one process with embedded defaults."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from eagle.agent.config import AgentConfig
from eagle.agent.server import AgentServer
from eagle.registry.client import OriginList
from eagle.seeder.config import SeederConfig
from eagle.seeder.server import SeederServer
from eagle.tracker.config import TrackerConfig
from eagle.tracker.server import TrackerServer
from eagle.utils.config import ListenAddress
from eagle.utils.net import parse_hostport


class UpConfig(BaseModel):
    """All three components on one host; only ``origin`` is required."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    origin: OriginList
    listen: ListenAddress = "127.0.0.1:5000"
    tracker_listen: ListenAddress = "127.0.0.1:7070"
    seeder_listen: ListenAddress = "127.0.0.1:7071"
    agent_p2p_port: int = Field(6881, ge=0, le=65535)
    seeder_p2p_port: int = Field(6882, ge=0, le=65535)
    data_dir: Path = Path("eagle-data")


def components(cfg: UpConfig) -> list[Any]:
    """Tracker first: a seeder's first announce to a tracker not yet listening costs ~13 s."""
    tracker_url = f"http://{parse_hostport(cfg.tracker_listen)}/announce"
    seeder_url = f"http://{parse_hostport(cfg.seeder_listen)}"
    return [
        TrackerServer(TrackerConfig(listen=cfg.tracker_listen)),
        SeederServer(
            SeederConfig(
                listen=cfg.seeder_listen,
                p2p_port=cfg.seeder_p2p_port,
                tracker=[tracker_url],
                origin=cfg.origin,
                data_dir=cfg.data_dir / "seeder",
            )
        ),
        AgentServer(
            AgentConfig(
                listen=cfg.listen,
                p2p_port=cfg.agent_p2p_port,
                tracker=[tracker_url],
                seeder=[seeder_url],
                origin=cfg.origin,
                data_dir=cfg.data_dir / "agent",
            )
        ),
    ]
