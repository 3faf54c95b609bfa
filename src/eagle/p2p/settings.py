"""libtorrent session settings for Eagle, as a pure function (testable without a session).

Each non-default value is here because it was measured to matter on this kind of
machine (../shared/CALIBRATION.md) or because Eagle's trust model needs it.
"""

from __future__ import annotations

from typing import Any

import libtorrent as lt

from eagle.utils.net import HostPort


def session_settings(
    listen: HostPort, *, download_rate: int = 0, upload_rate: int = 0
) -> dict[str, Any]:
    """Settings for the one session of a host. Rates are bytes/s; 0 means unlimited."""
    return {
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
        "alert_mask": (
            lt.alert_category.error
            | lt.alert_category.status
            | lt.alert_category.storage
            | lt.alert_category.tracker
        ),
        "alert_queue_size": 10000,
        "stop_tracker_timeout": 2,
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
