"""libtorrent session settings for Eagle, as a pure function (testable without a session).

Each non-default value is here because it was measured to matter on this kind of
machine (../shared/CALIBRATION.md) or because Eagle's trust model needs it.
"""

from __future__ import annotations

from typing import Any

import libtorrent as lt

from eagle.utils.net import HostPort


def session_settings(
    listen: HostPort,
    *,
    download_rate: int = 0,
    upload_rate: int = 0,
    role: str = "agent",
    site: str = "",
) -> dict[str, Any]:
    """Settings for the one session of a host. Rates are bytes/s; 0 means unlimited.

    ``role`` is ``agent`` or ``seeder``, ``site`` the host's IDC label; see
    :func:`swarm_settings`.
    """
    return swarm_settings(role, site) | {
        "listen_interfaces": str(listen),
        "user_agent": "Eagle/0.1 libtorrent/" + lt.__version__,
        # TCP only: uTP over loopback and veth was several times slower here.
        "enable_incoming_utp": False,
        "enable_outgoing_utp": False,
        # Peers come from our tracker and nowhere else.
        "enable_dht": False,
        "enable_lsd": False,
        "enable_upnp": False,
        "enable_natpmp": False,
        "enable_ip_notifier": False,
        # Test swarms (and hosts behind one NAT) share an IP; without this they stall.
        "allow_multiple_connections_per_ip": True,
        # The default 8 upload slots left peers idle until the next 15 s rechoke.
        "unchoke_slots_limit": -1,
        # The first pieces are otherwise picked at random, ignoring priorities.
        "initial_picker_threshold": 0,
        # Every blob a host has must be seeded: no queueing of torrents.
        "active_downloads": -1,
        "active_seeds": -1,
        "active_checking": 4,
        "active_limit": -1,
        "dont_count_slow_torrents": False,
        # Reconnect quickly: swarms are short-lived and peers appear in bursts.
        "min_reconnect_time": 1,
        "peer_connect_timeout": 5,
        "download_rate_limit": download_rate,
        "upload_rate_limit": upload_rate,
        # Rate-limited peers got their first byte 3 ticks after the handshake: 1.5 s at
        # the default 500 ms, 0.6 s at 100 ms (and smaller bursts). 1000 idle seeds
        # cost 0.13% of a core at 100 ms, 0.08% at 500 ms.
        "tick_interval": 100,
        "alert_mask": (
            lt.alert_category.error
            | lt.alert_category.status
            | lt.alert_category.storage
            | lt.alert_category.tracker
        ),
        "alert_queue_size": 10000,
        "stop_tracker_timeout": 2,
    }


def swarm_settings(role: str, site: str = "") -> dict[str, Any]:
    """Settings the swarm strategy (:mod:`eagle.p2p.steering`) relies on.

    Dedicated seeders announce themselves by their peer id, so downloaders can stop
    asking them once their own share is done; agents' peer ids carry their site. A
    short request queue keeps a downloader from piling requests for pieces it could
    get from peers onto the seeder (../shared/CALIBRATION.md: 1 s and 64 blocks
    measured best; 48 here). The IP filter that blocks a seeder per torrent must not
    stop announces to a tracker that shares its address.
    """
    from eagle.p2p.steering import MAX_QUEUE_BLOCKS, QUEUE_SECONDS, fingerprint

    if role not in ("agent", "seeder"):
        raise ValueError(f"role must be 'agent' or 'seeder', got {role!r}")
    seeder = {
        # Downloaders keep at most this many requests outstanding at a peer that says so
        # (its "reqq"); libtorrent otherwise grows the queue in slow start far past
        # request_queue_time, and a queue longer than the pieces a downloader may take
        # from the seeder is filled with pieces peers have.
        "max_allowed_in_request_queue": MAX_QUEUE_BLOCKS,
    }
    return (seeder if role == "seeder" else {}) | {
        "peer_fingerprint": fingerprint(role, site),
        "request_queue_time": int(QUEUE_SECONDS),
        "max_out_request_queue": MAX_QUEUE_BLOCKS,
        # Otherwise a peer fast enough to send a piece within 20 s is asked for runs of
        # up to 8 MiB of contiguous pieces, past the pieces the plan put first: the
        # seeder would be asked for neighbouring pieces that peers already have.
        "whole_pieces_threshold": 0,
        "apply_ip_filter_to_trackers": False,
        # While it waits for its stripe, or when every piece it may take now is done, a
        # download has nothing wanted left and libtorrent calls it finished; by default it
        # would then hang up on seeds, the seeder among them.
        "close_redundant_connections": False,
    }


def global_peer_class_filter() -> Any:
    """An IP filter putting every address in the global peer class.

    libtorrent exempts LAN and loopback peers from rate limits by default; a host's
    limit must hold whoever the peer is.
    """
    global_class = 1 << lt.session.global_peer_class_id
    f = lt.ip_filter()
    f.add_rule("0.0.0.0", "255.255.255.255", global_class)
    f.add_rule("::", "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff", global_class)
    return f
