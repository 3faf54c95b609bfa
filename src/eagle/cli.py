"""The ``eagle`` command line: one subcommand a component, plus ``up`` for all of them.

Every flag can also be set in the YAML file given with ``--config`` (same name,
dashes or underscores) or as an ``EAGLE_<NAME>`` environment variable; flags win.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
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
P2PHostOpt = Annotated[
    str | None, typer.Option(help="BitTorrent listen host (default: the listen host).")
]
TrackerOpt = Annotated[
    list[str] | None, typer.Option("--tracker", help="Tracker announce URL (repeatable).")
]
OriginOpt = Annotated[
    list[str] | None, typer.Option("--origin", help="Origin registry URL (repeatable).")
]
DataDirOpt = Annotated[Path | None, typer.Option(help="Where blobs and torrents are kept.")]
LogLevelOpt = Annotated[str, typer.Option(help="debug, info, warning or error.")]
RegionOpt = Annotated[str | None, typer.Option(help="Region label, sent to the tracker.")]
IdcOpt = Annotated[str | None, typer.Option(help="Data centre (IDC) label, sent to the tracker.")]
RackOpt = Annotated[str | None, typer.Option(help="Rack label, sent to the tracker.")]
HostDownloadRateOpt = Annotated[
    str | None, typer.Option(help="Host download cap, e.g. 50M (0 = none).")
]
HostUploadRateOpt = Annotated[
    str | None, typer.Option(help="Host upload cap, e.g. 50M (0 = none).")
]


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
    peer_ttl: Annotated[
        int | None, typer.Option(help="Seconds a silent peer is kept (default 3 intervals).")
    ] = None,
    peer_store: Annotated[
        str | None,
        typer.Option(help="memory, or redis://HOST:PORT/DB shared by several trackers (HA)."),
    ] = None,
    policy: Annotated[
        str | None, typer.Option(help="Peer handout policy: default or random.")
    ] = None,
    locations: Annotated[
        Path | None,
        typer.Option(help="YAML file mapping CIDR blocks to region/idc/rack labels."),
    ] = None,
    bridge_peers: Annotated[
        int | None, typer.Option(help="Peers from other IDCs handed to a gateway [2].")
    ] = None,
    gateways_per_idc: Annotated[
        int | None, typer.Option(help="Peers per IDC and swarm that fetch across IDCs [1].")
    ] = None,
    trusted_proxy: Annotated[
        list[str] | None,
        typer.Option(
            "--trusted-proxy",
            help="CIDR of a reverse proxy whose X-Forwarded-For is believed (repeatable).",
        ),
    ] = None,
    log_level: LogLevelOpt = "info",
) -> None:
    """Run a BitTorrent tracker (announce, scrape) that hands out peers."""
    import uvloop

    from eagle.tracker.config import TrackerConfig
    from eagle.tracker.server import TrackerServer

    _setup_logging(log_level)
    cfg = _load(
        TrackerConfig,
        config,
        {
            "listen": listen,
            "interval": interval,
            "peer_ttl": peer_ttl,
            "peer_store": peer_store,
            "policy": policy,
            "locations": locations,
            "bridge_peers": bridge_peers,
            "gateways_per_idc": gateways_per_idc,
            "trusted_proxies": trusted_proxy,
        },
    )
    try:
        server = TrackerServer(cfg)
    except EagleError as exc:
        _fail(str(exc))
    # uvloop: the tracker's cost per announce is mostly event-loop and socket work.
    asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())
    # Each announce allocates a few dozen short-lived objects: with the default
    # thresholds the collector ran every ~20 announces, and its pauses showed in
    # p99. Measured: ~10% less CPU per announce and half the p99 with these.
    gc.freeze()
    gc.set_threshold(100_000, 50, 100)
    _run([server])


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
    storage: Annotated[
        str | None,
        typer.Option(
            help="Where blobs live for good: fs:/path or s3://bucket/prefix"
            " (default: fs:DATA_DIR/storage); S3 settings go under 's3:' in --config."
        ),
    ] = None,
    cache_size: Annotated[
        str | None,
        typer.Option(help="Bytes of local copies to seed from, e.g. 100G (0 = no limit)."),
    ] = None,
    region: RegionOpt = None,
    idc: IdcOpt = None,
    rack: RackOpt = None,
    announce_seeder: Annotated[
        bool | None,
        typer.Option(
            "--announce-seeder/--no-announce-seeder",
            help="Announce as a dedicated seeder, spared once peers have copies [on].",
        ),
    ] = None,
    stream_slots: Annotated[
        int | None,
        typer.Option(
            help="Agents per blob that may stream it over HTTP while it is fetched from the"
            " origin (1; 0 = off: everyone waits for the torrent)."
        ),
    ] = None,
    log_level: LogLevelOpt = "info",
) -> None:
    """Run a seeder: fetch each blob from the origin once, store it, and seed it."""
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
            "storage": storage,
            "cache_size": cache_size,
            "region": region,
            "idc": idc,
            "rack": rack,
            "announce_seeder": announce_seeder,
            "stream_slots": stream_slots,
        },
    )
    _run([SeederServer(cfg)])


# ``agent`` is a group so that ``eagle agent set-rate`` lives beside the agent; run
# without a subcommand (``eagle agent --listen ...``) it starts the agent as before.
agent_app = typer.Typer()
app.add_typer(agent_app, name="agent")


@agent_app.callback(invoke_without_command=True)
def agent(
    ctx: typer.Context,
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
    download_rate: HostDownloadRateOpt = None,
    upload_rate: HostUploadRateOpt = None,
    stall_timeout: Annotated[
        float | None, typer.Option(help="Seconds without p2p progress before using the origin.")
    ] = None,
    cache_size: Annotated[
        str | None,
        typer.Option(help="Bytes of blobs kept in --data-dir, e.g. 100G; LRU (0 = no limit)."),
    ] = None,
    fallback_timeout: Annotated[
        float | None,
        typer.Option(help="Seconds without any p2p progress before streaming from the origin (2)."),
    ] = None,
    seeder_stream: Annotated[
        bool | None,
        typer.Option(
            "--seeder-stream/--no-seeder-stream",
            help="Stream a cold blob from the seeder while it fetches it from the origin [on].",
        ),
    ] = None,
    prefetch: Annotated[
        bool | None,
        typer.Option(
            "--prefetch/--no-prefetch",
            help="Fetch all blobs of an image as soon as a client gets its manifest (on).",
        ),
    ] = None,
    proxy: Annotated[
        bool | None,
        typer.Option(
            "--proxy/--no-proxy",
            help="Also serve as an HTTP(S) forward proxy (HTTP_PROXY/HTTPS_PROXY of runtimes).",
        ),
    ] = None,
    proxy_rule: Annotated[
        list[str] | None,
        typer.Option(
            "--proxy-rule",
            help="Regex of registry host or host:port whose TLS the proxy intercepts"
            " (repeatable; implies --proxy; default: the configured origins).",
        ),
    ] = None,
    ca_cert: Annotated[
        Path | None, typer.Option(help="Eagle CA certificate (default /etc/eagle/ca/ca.crt).")
    ] = None,
    ca_key: Annotated[
        Path | None, typer.Option(help="Eagle CA private key (default /etc/eagle/ca/ca.key).")
    ] = None,
    access_check_ttl: Annotated[
        float | None,
        typer.Option(help="Seconds an origin's yes to a client's blob read is reused (60)."),
    ] = None,
    region: RegionOpt = None,
    idc: IdcOpt = None,
    rack: RackOpt = None,
    log_level: LogLevelOpt = "info",
) -> None:
    """Run a host's agent: a registry mirror (and optional proxy) that fetches blobs p2p."""
    if ctx.invoked_subcommand is not None:
        return
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
            "cache_size": cache_size,
            "fallback_timeout": fallback_timeout,
            "seeder_stream": seeder_stream,
            "prefetch": prefetch,
            "proxy": proxy,
            "proxy_rule": proxy_rule,
            "ca_cert": ca_cert,
            "ca_key": ca_key,
            "access_check_ttl": access_check_ttl,
            "region": region,
            "idc": idc,
            "rack": rack,
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


# -- eagle ca / eagle configure (proxy mode and runtime set-up) --------------------------------

ca_app = typer.Typer(help="The Eagle CA that signs registry certificates in proxy mode.")
app.add_typer(ca_app, name="ca")
configure_app = typer.Typer(
    help="Print (or --write) a runtime's settings for using this host's agent."
)
app.add_typer(configure_app, name="configure")


@ca_app.command("init")
def ca_init(
    directory: Annotated[
        Path, typer.Option("--dir", help="Where to write ca.crt and ca.key (0600).")
    ] = Path("/etc/eagle/ca"),
    days: Annotated[int, typer.Option(help="Validity of the CA certificate.")] = 3650,
    name: Annotated[str, typer.Option(help="The CA's common name.")] = "Eagle CA",
    force: Annotated[bool, typer.Option(help="Replace an existing CA.")] = False,
) -> None:
    """Create the Eagle CA; runtimes trust its certificate, agents sign with its key."""
    from eagle.ca import init_ca

    try:
        files = init_ca(directory, common_name=name, days=days, force=force)
    except EagleError as exc:
        _fail(str(exc))
        return
    typer.echo(f"wrote {files.cert}\nwrote {files.key} (keep it private: it signs for any host)")


ModeOpt = Annotated[
    str, typer.Option("--mode", help="mirror (registry mirror) or proxy (HTTP(S)_PROXY).")
]
WriteOpt = Annotated[bool, typer.Option("--write", help="Write the files instead of printing.")]
RootOpt = Annotated[
    Path, typer.Option("--root", help="Write below this directory instead of / (--write).")
]
AgentUrlOpt = Annotated[
    str | None,
    typer.Option(
        "--agent",
        help="HOST:PORT the runtime reaches the agent at (default: its listen address).",
    ),
]


def _configure(
    runtime: str,
    config: Path | None,
    origin: list[str] | None,
    listen: str | None,
    agent_addr: str | None,
    mode: str,
    ca_cert: Path | None,
    write: bool,
    root: Path,
    **extra: Any,
) -> None:
    from eagle.agent.config import AgentConfig
    from eagle.configure import SETUPS, agent_address, render, write_setup
    from eagle.registry.client import OriginSet

    if mode not in ("mirror", "proxy"):
        _fail(f"--mode must be mirror or proxy, got {mode!r}")
    cfg = _load(AgentConfig, config, {"origin": origin, "listen": listen, "ca_cert": ca_cert})
    address = agent_addr or agent_address(cfg.listen)
    try:
        origins = OriginSet(cfg.origin).origins
        setup = SETUPS[runtime](origins, address, mode, cfg.ca_cert, **extra)
        if not write:
            typer.echo(render(setup), nl=False)
            return
        for path in write_setup(setup, root):
            typer.echo(f"wrote {path}")
    except EagleError as exc:
        _fail(str(exc))
    for note in setup.notes:
        typer.echo(f"next: {note}")


ConfigureListenOpt = Annotated[str | None, typer.Option(help="The agent's listen HOST:PORT.")]
CaCertOpt = Annotated[Path | None, typer.Option(help="Eagle CA certificate (proxy mode).")]


@configure_app.command("containerd")
def configure_containerd(
    config: ConfigOpt = None,
    origin: OriginOpt = None,
    listen: ConfigureListenOpt = None,
    agent: AgentUrlOpt = None,
    mode: ModeOpt = "mirror",
    ca_cert: CaCertOpt = None,
    hosts_dir: Annotated[
        Path, typer.Option(help="containerd's registry hosts directory (config_path).")
    ] = Path("/etc/containerd/certs.d"),
    write: WriteOpt = False,
    root: RootOpt = Path("/"),
) -> None:
    """containerd: hosts.toml per origin (mirror), or proxy drop-in and CA (proxy)."""
    _configure(
        "containerd", config, origin, listen, agent, mode, ca_cert, write, root,
        hosts_dir=hosts_dir,
    )  # fmt: skip


@configure_app.command("docker")
def configure_docker(
    config: ConfigOpt = None,
    origin: OriginOpt = None,
    listen: ConfigureListenOpt = None,
    agent: AgentUrlOpt = None,
    mode: ModeOpt = "mirror",
    ca_cert: CaCertOpt = None,
    write: WriteOpt = False,
    root: RootOpt = Path("/"),
) -> None:
    """docker: daemon.json registry-mirrors (mirror), or systemd proxy drop-in and CA (proxy)."""
    _configure("docker", config, origin, listen, agent, mode, ca_cert, write, root)


@configure_app.command("podman")
def configure_podman(
    config: ConfigOpt = None,
    origin: OriginOpt = None,
    listen: ConfigureListenOpt = None,
    agent: AgentUrlOpt = None,
    mode: ModeOpt = "mirror",
    ca_cert: CaCertOpt = None,
    write: WriteOpt = False,
    root: RootOpt = Path("/"),
) -> None:
    """podman: registries.conf mirror entries (mirror), or containers.conf proxy env and CA."""
    _configure("podman", config, origin, listen, agent, mode, ca_cert, write, root)


# -- operating running agents: eagle preheat / eagle agent set-rate ----------------------------

AgentUrlsOpt = Annotated[
    list[str],
    typer.Option("--agent", help="Agent URL, e.g. http://host:5000 (repeatable: all at once)."),
]
AdminTokenOpt = Annotated[
    str | None,
    typer.Option(envvar="EAGLE_ADMIN_TOKEN", help="The agents' admin-token, if they have one."),
]


@app.command()
def preheat(
    image: Annotated[str, typer.Argument(help="[REGISTRY/]REPO[:TAG|@DIGEST]")],
    agent: AgentUrlsOpt,
    platform: Annotated[
        str | None,
        typer.Option(
            help="os/arch or os/arch/variant of a multi-arch image, or 'all'"
            " (default: the agent's own)."
        ),
    ] = None,
    token: AdminTokenOpt = None,
) -> None:
    """Fetch every layer of an image into agents' caches (p2p first) before anyone pulls it."""
    from rich.console import Console

    from eagle.agent import ops

    raise typer.Exit(ops.preheat(image, agent, platform, token, Console(stderr=True)))


@agent_app.command("set-rate")
def agent_set_rate(
    agent: AgentUrlsOpt,
    download: HostDownloadRateOpt = None,
    upload: HostUploadRateOpt = None,
    token: AdminTokenOpt = None,
) -> None:
    """Change running agents' rate limits now (no restart); without a limit, show them."""
    from rich.console import Console

    from eagle.agent import ops

    raise typer.Exit(ops.set_rate(agent, download, upload, token, Console()))


def main() -> None:
    app()
