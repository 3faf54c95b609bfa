"""The ``eagle`` command line: one subcommand a component, plus ``up`` for all of them.

Every flag can also be set in the YAML file given with ``--config`` (same name,
dashes or underscores) or as an ``EAGLE_<NAME>`` environment variable; flags win.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import sys
from pathlib import Path
from typing import Annotated, Any, Protocol

import typer
from pydantic import BaseModel

from eagle.core.errors import EagleError
from eagle.utils.config import load_config

app = typer.Typer(
    help="Eagle: peer-to-peer container image distribution.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
log = logging.getLogger("eagle")


class Component(Protocol):
    async def start(self) -> None: ...
    async def stop(self) -> None: ...


ConfigOpt = Annotated[
    Path | None, typer.Option("--config", "-c", help="YAML file with any of the flags below.")
]
ListenOpt = Annotated[str | None, typer.Option(help="HOST:PORT to serve HTTP on.")]
P2PPortOpt = Annotated[int | None, typer.Option(help="BitTorrent listen port (0 = any).")]
P2PHostOpt = Annotated[str | None, typer.Option(help="BitTorrent listen host [listen host].")]
TrackerOpt = Annotated[
    list[str] | None, typer.Option("--tracker", help="Tracker announce URL (repeatable).")
]
OriginOpt = Annotated[
    list[str] | None, typer.Option("--origin", help="Origin registry URL (repeatable).")
]
DataDirOpt = Annotated[Path | None, typer.Option(help="Where blobs and torrents are kept.")]
LogLevelOpt = Annotated[str, typer.Option(help="debug, info, warning or error.")]


def _setup_logging(level: str) -> None:
    logging.basicConfig(
        level=level.upper(),
        format="%(asctime)s %(levelname)s %(name)s %(message)s",
        stream=sys.stderr,
    )


def _load(model: type[BaseModel], config: Path | None, flags: dict[str, Any]) -> Any:
    try:
        return load_config(model, config, flags)
    except EagleError as exc:
        _fail(str(exc))


def _fail(message: str) -> None:
    typer.echo(f"eagle: {message}", err=True)
    raise typer.Exit(2)


async def _serve(components: list[Component]) -> None:
    """Start in order, run until SIGINT/SIGTERM, stop in reverse order."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    started: list[Component] = []
    try:
        for component in components:
            await component.start()
            started.append(component)
        await stop.wait()
    finally:
        for component in reversed(started):
            with contextlib.suppress(Exception):
                await component.stop()


def _run(components: list[Component]) -> None:
    try:
        asyncio.run(_serve(components))
    except (EagleError, OSError) as exc:
        _fail(str(exc))


@app.command()
def tracker(
    config: ConfigOpt = None,
    listen: ListenOpt = None,
    interval: Annotated[int | None, typer.Option(help="Announce interval, seconds.")] = None,
    log_level: LogLevelOpt = "info",
) -> None:
    """Run a BitTorrent tracker (announce, scrape) that hands out peers."""
    from eagle.tracker.config import TrackerConfig
    from eagle.tracker.server import TrackerServer

    _setup_logging(log_level)
    cfg = _load(TrackerConfig, config, {"listen": listen, "interval": interval})
    _run([TrackerServer(cfg)])


@app.command()
def seeder(
    config: ConfigOpt = None,
    listen: ListenOpt = None,
    p2p_port: P2PPortOpt = None,
    p2p_host: P2PHostOpt = None,
    tracker: TrackerOpt = None,
    origin: OriginOpt = None,
    data_dir: DataDirOpt = None,
    upload_rate: Annotated[
        str | None, typer.Option(help="Upload cap, e.g. 50M (0 = none).")
    ] = None,
    log_level: LogLevelOpt = "info",
) -> None:
    """Run a seeder: fetch each blob from the origin once and seed it."""
    from eagle.seeder.config import SeederConfig
    from eagle.seeder.server import SeederServer

    _setup_logging(log_level)
    cfg = _load(
        SeederConfig,
        config,
        {
            "listen": listen,
            "p2p_port": p2p_port,
            "p2p_host": p2p_host,
            "tracker": tracker,
            "origin": origin,
            "data_dir": data_dir,
            "upload_rate": upload_rate,
        },
    )
    _run([SeederServer(cfg)])


@app.command()
def agent(
    config: ConfigOpt = None,
    listen: ListenOpt = None,
    p2p_port: P2PPortOpt = None,
    p2p_host: P2PHostOpt = None,
    tracker: TrackerOpt = None,
    seeder: Annotated[
        list[str] | None, typer.Option("--seeder", help="Seeder URL (repeatable).")
    ] = None,
    origin: OriginOpt = None,
    data_dir: DataDirOpt = None,
    download_rate: Annotated[
        str | None, typer.Option(help="Host download cap, e.g. 50M (0 = none).")
    ] = None,
    upload_rate: Annotated[
        str | None, typer.Option(help="Host upload cap, e.g. 50M (0 = none).")
    ] = None,
    stall_timeout: Annotated[
        float | None, typer.Option(help="Seconds without p2p progress before using the origin.")
    ] = None,
    log_level: LogLevelOpt = "info",
) -> None:
    """Run a host's agent: a registry mirror that fetches blobs peer-to-peer."""
    from eagle.agent.config import AgentConfig
    from eagle.agent.server import AgentServer

    _setup_logging(log_level)
    cfg = _load(
        AgentConfig,
        config,
        {
            "listen": listen,
            "p2p_port": p2p_port,
            "p2p_host": p2p_host,
            "tracker": tracker,
            "seeder": seeder,
            "origin": origin,
            "data_dir": data_dir,
            "download_rate": download_rate,
            "upload_rate": upload_rate,
            "stall_timeout": stall_timeout,
        },
    )
    _run([AgentServer(cfg)])


@app.command()
def up(
    config: ConfigOpt = None,
    origin: OriginOpt = None,
    listen: Annotated[str | None, typer.Option(help="Agent (registry mirror) HOST:PORT.")] = None,
    data_dir: DataDirOpt = None,
    log_level: LogLevelOpt = "info",
) -> None:
    """Run a tracker, a seeder and an agent in one process, for one host or a first try."""
    from eagle.up import UpConfig, components

    _setup_logging(log_level)
    cfg = _load(UpConfig, config, {"origin": origin, "listen": listen, "data_dir": data_dir})
    _run(components(cfg))


def main() -> None:
    app()
