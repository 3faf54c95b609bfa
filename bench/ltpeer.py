"""A plain libtorrent peer for the benchmark's "plain" mode: what BitTorrent alone gives.

Stock libtorrent settings except what this testbed forces: TCP only (as in
../shared/CALIBRATION.md: uTP was several times slower on veth), no DHT, LSD,
UPnP or NAT-PMP (there is nothing to find), and the listen address.

    python -m bench.ltpeer seed --listen IP:PORT --data DIR --stats FILE TORRENT...
    python -m bench.ltpeer get  --listen IP:PORT --save DIR TORRENT...

``seed`` prints ``ready`` once every torrent is checked and announced, then seeds
until stdin closes, writing its upload counters to ``--stats``. ``get`` follows the
:mod:`bench.hostrun` protocol: ``ready``, wait for ``go``, add the torrents, print
one JSON result when all are complete, then keep seeding until stdin closes.
``--profile eagle`` uses Eagle's own session settings and swarm strategy instead,
for experiments without agents (the benchmark's ``lt-eagle`` mode). ``--trace FILE``
writes, for every block received, ``[seconds, infohash, piece, peer address, piece
priority then]`` (the benchmark passes it when ``EAGLE_BENCH_TRACE`` is set, which also
runs agents with debug logging).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import threading
import time
from pathlib import Path
from typing import Any

import libtorrent as lt

from bench.hostrun import report, wait_for_go

POLL = 0.05


def stock_settings(listen: str) -> dict[str, Any]:
    """libtorrent defaults, plus only what the testbed forces."""
    return {
        "listen_interfaces": listen,
        "enable_dht": False,
        "enable_lsd": False,
        "enable_upnp": False,
        "enable_natpmp": False,
        "enable_incoming_utp": False,
        "enable_outgoing_utp": False,
        "alert_mask": lt.alert_category.status
        | lt.alert_category.error
        | lt.alert_category.tracker,
    }


def _session(args: argparse.Namespace, role: str) -> Any:
    if args.profile == "eagle":
        from eagle.p2p.settings import global_peer_class_filter, session_settings
        from eagle.utils.net import parse_hostport

        settings = session_settings(parse_hostport(args.listen), role=role)
        session = _new_session(settings)
        session.set_peer_class_filter(global_peer_class_filter())
        return session
    return _new_session(stock_settings(args.listen))


def _new_session(settings: dict[str, Any]) -> Any:
    params = lt.session_params()
    params.settings = settings  # type: ignore[assignment]  # a dict works
    return lt.session(params)


def _params(torrent: Path, save: Path, seed: bool, steer_as: str | None = None) -> Any:
    params = lt.add_torrent_params()
    params.ti = lt.torrent_info(str(torrent))
    params.save_path = str(save)
    params.flags &= ~lt.torrent_flags.auto_managed
    params.flags &= ~lt.torrent_flags.paused
    if seed:
        params.flags |= lt.torrent_flags.seed_mode
    if steer_as is not None:
        from eagle.p2p.steering import initial_priorities, worth_steering

        params.flags &= ~lt.torrent_flags.apply_ip_filter
        if worth_steering(params.ti.num_pieces()):
            params.piece_priorities = initial_priorities(params.ti.num_pieces(), steer_as)
    return params


def _stdin_closed() -> threading.Event:
    closed = threading.Event()

    def watch() -> None:
        for _ in sys.stdin:
            pass
        closed.set()

    threading.Thread(target=watch, daemon=True).start()
    return closed


def _write_stats(path: Path, handles: list[Any]) -> None:
    stats = {
        h.status().name: {
            "uploaded": h.status().all_time_upload,
            "downloaded": h.status().all_time_download,
        }
        for h in handles
    }
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(stats))
    os.replace(tmp, path)


def seed(args: argparse.Namespace) -> None:
    session = _session(args, "seeder")
    handles = [session.add_torrent(_params(Path(t), Path(args.data), True)) for t in args.torrent]
    announced: set[str] = set()
    deadline = time.monotonic() + 60
    while len(announced) < len(handles):
        for alert in session.pop_alerts():
            if isinstance(alert, lt.tracker_reply_alert):
                announced.add(str(alert.handle.info_hashes().v1))
            elif isinstance(alert, lt.tracker_error_alert):
                alert.handle.force_reannounce(1, -1)
        if time.monotonic() > deadline:
            raise SystemExit("seed: tracker never answered")
        time.sleep(POLL)
    print("ready", flush=True)
    closed = _stdin_closed()
    stats = Path(args.stats)
    while not closed.wait(0.5):
        session.pop_alerts()
        _write_stats(stats, handles)
    _write_stats(stats, handles)


def get(args: argparse.Namespace) -> None:
    session = _session(args, "agent")
    save = Path(args.save)
    save.mkdir(parents=True, exist_ok=True)
    steer_as = args.listen if args.profile == "eagle" else None
    params = [_params(Path(t), save, False, steer_as) for t in args.torrent]
    steering: Any = None
    started = wait_for_go()
    handles = [session.add_torrent(p) for p in params]
    if steer_as is not None:
        from eagle.p2p.steering import SwarmSteering, worth_steering

        steering = SwarmSteering(session, steer_as)
        for handle in handles:
            if worth_steering(handle.torrent_file().num_pieces()):
                steering.add(handle)
    done: dict[int, float] = {}
    next_tick = 0.0
    tick_time, ticks = 0.0, 0
    trace: list[tuple[float, str, int, str, int]] | None = None
    if args.trace:
        # Every block's source, with the piece's priority then: for offline analysis.
        trace = []
        mask = session.get_settings()["alert_mask"] | lt.alert_category.block_progress
        session.apply_settings({"alert_mask": mask})
    while len(done) < len(handles):
        for alert in session.pop_alerts():
            if trace is not None and isinstance(alert, lt.block_finished_alert):
                handle = alert.handle
                prio = handle.piece_priority(alert.piece_index)
                trace.append(
                    (
                        time.monotonic() - started,
                        str(handle.info_hashes().v1),
                        alert.piece_index,
                        alert.endpoint[0],
                        prio,
                    )
                )
        for i, handle in enumerate(handles):
            if i not in done and handle.status().is_seeding:
                done[i] = time.monotonic()
        if steering is not None and time.monotonic() >= next_tick:
            t0 = time.perf_counter()
            steering.tick()
            tick_time += time.perf_counter() - t0
            ticks += 1
            next_tick = time.monotonic() + steering.next_tick()
        if time.monotonic() - started > args.timeout:
            break
        time.sleep(POLL)
    statuses = [h.status() for h in handles]
    if ticks:
        logging.getLogger("bench.ltpeer").info(
            "steering ticks=%d mean_ms=%.2f total_s=%.2f",
            ticks,
            1000 * tick_time / ticks,
            tick_time,
        )
    report(
        {
            "start": started,
            "end": max(done.values()) if len(done) == len(handles) else time.monotonic(),
            "ok": len(done) == len(handles),
            "torrents": [
                {
                    "name": s.name,
                    "seconds": done[i] - started if i in done else None,
                    "downloaded": s.total_payload_download,
                }
                for i, s in enumerate(statuses)
            ],
        }
    )
    if trace is not None:
        Path(args.trace).write_text(json.dumps(trace))
    closed = _stdin_closed()
    while not closed.wait(0.2):
        session.pop_alerts()
        if steering is not None:
            steering.tick()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.ltpeer", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    for name in ("seed", "get"):
        cmd = sub.add_parser(name)
        cmd.add_argument("--listen", required=True, help="IP:PORT to listen on")
        cmd.add_argument("--profile", choices=("stock", "eagle"), default="stock")
        cmd.add_argument("torrent", nargs="+", help=".torrent files")
    sub.choices["seed"].add_argument("--data", required=True, help="directory of the blobs")
    sub.choices["seed"].add_argument("--stats", required=True, help="JSON file of counters")
    sub.choices["get"].add_argument("--save", required=True, help="download directory")
    sub.choices["get"].add_argument("--timeout", type=float, default=600.0)
    sub.choices["get"].add_argument("--trace", help="write every block's source to this JSON")
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if os.environ.get("EAGLE_BENCH_TRACE") else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s %(message)s",
        stream=sys.stderr,
    )
    if args.command == "seed":
        seed(args)
    else:
        get(args)


if __name__ == "__main__":
    main()
