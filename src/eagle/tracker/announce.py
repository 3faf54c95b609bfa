"""The tracker protocol as pure functions: parse announces and scrapes, encode answers.

No sockets here. The server hands in the raw query string and the client's
address, and gets back a frozen :class:`Announce` or an
:class:`~eagle.core.errors.AnnounceInvalid` whose message is safe to send back
to the client as the bencoded ``failure reason``.

``info_hash`` and ``peer_id`` are 20 arbitrary bytes, percent-encoded by the
client. A web framework's decoded query turns them into text and corrupts them,
so we split the raw query ourselves and decode each value to bytes.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol
from urllib.parse import unquote_to_bytes

from eagle.core.bencode import bencode
from eagle.core.errors import AnnounceInvalid
from eagle.core.peer import Peer, PeerAddress

MAX_QUERY_LENGTH = 4096
# 100 hashes of 60 escaped characters each do not fit in 4096 bytes.
MAX_SCRAPE_QUERY_LENGTH = 8192
MAX_SCRAPE_HASHES = 100
HASH_LENGTH = 20
# BEP 21 adds "paused" (a partial seed that stopped downloading); libtorrent sends
# it, and refusing it would make such clients drop out of the swarm.
EVENTS = frozenset({"started", "completed", "stopped", "paused"})
_MAX_INT = 2**63 - 1
_REQUIRED = ("info_hash", "peer_id", "port", "uploaded", "downloaded", "left")
# Parameters we interpret: a repeat of any of them is ambiguous, so it is refused.
_KNOWN = frozenset((*_REQUIRED, "event", "numwant", "compact"))


class NumwantLimits(Protocol):
    """The part of the tracker configuration that parsing needs."""

    @property
    def numwant_default(self) -> int: ...

    @property
    def numwant_max(self) -> int: ...


@dataclass(frozen=True)
class Announce:
    """One validated announce from one client."""

    info_hash: bytes
    peer_id: bytes
    port: int
    uploaded: int
    downloaded: int
    left: int
    event: str | None
    numwant: int
    compact: bool
    ip: str

    @property
    def address(self) -> PeerAddress:
        """Where the client accepts connections: the address it announced from, its port."""
        return PeerAddress(self.ip, self.port)

    @property
    def complete(self) -> bool:
        """Whether the client holds the whole torrent (a seed)."""
        return self.left == 0 or self.event == "completed"


def client_ip(remote: str | None) -> str:
    """The client's IP in canonical form; an IPv4-mapped IPv6 address becomes plain IPv4.

    A dual-stack socket reports IPv4 clients as ``::ffff:a.b.c.d``; handing that
    out in ``peers6`` would make other peers dial an address they cannot reach.
    """
    if not remote:
        raise AnnounceInvalid("unknown client address")
    try:
        address = ipaddress.ip_address(remote)
    except ValueError as exc:
        raise AnnounceInvalid("unusable client address") from exc
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return str(address.ipv4_mapped)
    return str(address)


def _split_query(raw_query: str, limit: int) -> list[tuple[str, bytes]]:
    """``k=v`` pairs with both sides percent-decoded; keys as text, values as bytes."""
    if len(raw_query) > limit:
        raise AnnounceInvalid("query string too long")
    try:
        # surrogateescape: servers that decode the request line leniently hand us
        # undecodable bytes as lone surrogates; this gives the bytes back.
        data = raw_query.encode("utf-8", "surrogateescape")
    except UnicodeEncodeError as exc:
        raise AnnounceInvalid("query string is not valid text") from exc
    if len(data) > limit:
        raise AnnounceInvalid("query string too long")
    pairs: list[tuple[str, bytes]] = []
    for piece in data.split(b"&"):
        if not piece:
            continue
        key, _, value = piece.partition(b"=")
        pairs.append((unquote_to_bytes(key).decode("latin-1"), unquote_to_bytes(value)))
    return pairs


def _hash_value(name: str, value: bytes) -> bytes:
    if len(value) != HASH_LENGTH:
        raise AnnounceInvalid(f"{name} must be {HASH_LENGTH} bytes, got {len(value)}")
    return value


def _int_value(name: str, value: bytes) -> int:
    if value.startswith(b"-") and value[1:].isdigit():
        raise AnnounceInvalid(f"{name} must not be negative")
    # bytes.isdigit() is ASCII-only, unlike str.isdigit() which accepts other scripts' digits.
    if not value.isdigit():
        raise AnnounceInvalid(f"{name} must be a non-negative integer")
    if len(value) > 19 or int(value) > _MAX_INT:
        raise AnnounceInvalid(f"{name} is too large")
    return int(value)


def _numwant(value: bytes | None, config: NumwantLimits) -> int:
    if not value:
        return config.numwant_default
    if value.isdigit():
        # Asking for too many is normal (libtorrent asks for 200): clamp, do not refuse.
        # The length test spares us converting a 4000-digit number.
        return config.numwant_max if len(value) > 19 else min(int(value), config.numwant_max)
    return _int_value("numwant", value)  # raises: negative or not a number


def parse_announce(raw_query: str, remote_ip: str, config: NumwantLimits) -> Announce:
    """Validate an announce's raw query string; raise :class:`AnnounceInvalid` if unusable.

    ``remote_ip`` is the address the request came from (see :func:`client_ip`).
    The client's own ``ip`` parameter is ignored: trusting it would let anyone
    point a swarm at a third party's host.
    """
    values: dict[str, bytes] = {}
    for key, value in _split_query(raw_query, MAX_QUERY_LENGTH):
        if key not in _KNOWN:
            continue
        if key in values:
            raise AnnounceInvalid(f"repeated {key}")
        values[key] = value
    for key in _REQUIRED:
        if key not in values:
            raise AnnounceInvalid(f"missing {key}")

    port = _int_value("port", values["port"])
    if not 1 <= port <= 65535:
        raise AnnounceInvalid("port must be between 1 and 65535")

    event_raw = values.get("event", b"")
    event = event_raw.decode("latin-1") or None
    if event is not None and event not in EVENTS:
        raise AnnounceInvalid(f"unknown event {event[:20]!r}")

    return Announce(
        info_hash=_hash_value("info_hash", values["info_hash"]),
        peer_id=_hash_value("peer_id", values["peer_id"]),
        port=port,
        uploaded=_int_value("uploaded", values["uploaded"]),
        downloaded=_int_value("downloaded", values["downloaded"]),
        left=_int_value("left", values["left"]),
        event=event,
        numwant=_numwant(values.get("numwant"), config),
        # Compact is the default: BEP 23 answers are smaller, and every client we
        # know of understands them.
        compact=values.get("compact", b"1") != b"0",
        ip=remote_ip,
    )


def parse_scrape(raw_query: str) -> list[bytes]:
    """The ``info_hash`` parameters of a scrape (BEP 48), in order and without repeats.

    An empty list means "all swarms". More than :data:`MAX_SCRAPE_HASHES` is refused.
    """
    hashes: dict[bytes, None] = {}
    for key, value in _split_query(raw_query, MAX_SCRAPE_QUERY_LENGTH):
        if key == "info_hash":
            hashes[_hash_value("info_hash", value)] = None
            if len(hashes) > MAX_SCRAPE_HASHES:
                raise AnnounceInvalid(f"at most {MAX_SCRAPE_HASHES} info_hash per scrape")
    return list(hashes)


def encode_announce_response(
    interval: int,
    min_interval: int | None,
    complete: int,
    incomplete: int,
    peers: Sequence[Peer | PeerAddress],
    compact: bool,
) -> bytes:
    """The bencoded answer to an announce.

    Compact (BEP 23): IPv4 peers as 6-byte strings in ``peers``, IPv6 peers as
    18-byte strings in ``peers6`` (BEP 7). Otherwise ``peers`` is a list of
    dicts with ``ip``, ``port`` and, when known, ``peer id``.
    """
    response: dict[str, object] = {
        "interval": interval,
        "complete": complete,
        "incomplete": incomplete,
    }
    if min_interval is not None:
        response["min interval"] = min_interval
    if compact:
        v4: list[bytes] = []
        v6: list[bytes] = []
        for peer in peers:
            address = peer.address if isinstance(peer, Peer) else peer
            (v6 if address.is_ipv6 else v4).append(address.compact())
        response["peers"] = b"".join(v4)
        if v6:
            response["peers6"] = b"".join(v6)
    else:
        entries: list[dict[str, object]] = []
        for peer in peers:
            address = peer.address if isinstance(peer, Peer) else peer
            entry: dict[str, object] = {"ip": address.ip, "port": address.port}
            if isinstance(peer, Peer):
                entry["peer id"] = peer.peer_id
            entries.append(entry)
        response["peers"] = entries
    return bencode(response)


def encode_scrape_response(files: dict[bytes, tuple[int, int, int]]) -> bytes:
    """The bencoded answer to a scrape: ``info_hash -> (complete, incomplete, downloaded)``."""
    return bencode(
        {
            "files": {
                info_hash: {"complete": c, "incomplete": i, "downloaded": d}
                for info_hash, (c, i, d) in files.items()
            }
        }
    )


def encode_failure(reason: str) -> bytes:
    """The bencoded failure every BitTorrent client understands: ``{"failure reason": ...}``."""
    return bencode({"failure reason": reason})
