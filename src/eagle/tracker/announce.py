"""The tracker protocol as pure functions: parse announces and scrapes, encode answers.

No sockets here. The server hands in the raw query string (bytes, as they came
off the wire) and the client's address, and gets back an :class:`Announce` or an
:class:`~eagle.core.errors.AnnounceInvalid` whose message is safe to send back to
the client as the bencoded ``failure reason``.

``info_hash`` and ``peer_id`` are 20 arbitrary bytes, percent-encoded by the
client; decoding the query as text would corrupt them, so we split the raw bytes
ourselves and decode each value to bytes. This runs once per announce, tens of
thousands of times a second, so it avoids work that valid announces do not need.
"""

from __future__ import annotations

import ipaddress
import struct
from collections.abc import Sequence
from typing import NamedTuple, Protocol
from urllib.parse import unquote_to_bytes

from eagle.core.bencode import bencode
from eagle.core.errors import AnnounceInvalid
from eagle.p2p.labels import LABEL_PATTERN, LABEL_RULE
from eagle.tracker.locations import Location

MAX_QUERY_LENGTH = 4096
# 100 hashes of 60 escaped characters each do not fit in 4096 bytes.
MAX_SCRAPE_QUERY_LENGTH = 8192
MAX_SCRAPE_HASHES = 100
HASH_LENGTH = 20
# BEP 21 adds "paused" (a partial seed that stopped downloading); libtorrent sends
# it, and refusing it would make such clients drop out of the swarm.
EVENTS = {e.encode(): e for e in ("started", "completed", "stopped", "paused")}
_MAX_INT = 2**63 - 1
_REQUIRED = (b"info_hash", b"peer_id", b"port", b"uploaded", b"downloaded", b"left")
# Parameters we interpret: a repeat of any of them is ambiguous, so it is refused.
_KNOWN = frozenset(
    (*_REQUIRED, b"event", b"numwant", b"compact", b"region", b"idc", b"rack", b"seeder")
)
_NO_LABELS = Location()
_INFO_HASH_CACHE_LIMIT = 16384
_info_hash_cache: dict[bytes, bytes] = {}
# Valid label triples seen, so that each is checked once; cleared when full, which
# bounds memory whatever clients send.
_LOCATION_CACHE_LIMIT = 4096
_location_cache: dict[tuple[bytes, bytes, bytes], Location] = {}


class NumwantLimits(Protocol):
    """The part of the tracker configuration that parsing needs."""

    @property
    def numwant_default(self) -> int: ...

    @property
    def numwant_max(self) -> int: ...


class Announce(NamedTuple):
    """One validated announce from one client.

    A named tuple rather than a frozen dataclass: it is built once per announce and
    costs a fraction of the time to construct.
    """

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
    location: Location = Location()
    """The labels the client put on its announce URL (empty where it put none)."""
    seeder: bool = False
    """The client announced ``seeder=1``: a dedicated seeder."""

    @property
    def complete(self) -> bool:
        """Whether the client holds the whole torrent (a seed)."""
        return self.left == 0 or self.event == "completed"

    @property
    def compact_address(self) -> bytes:
        """The client's address and port in compact form (BEP 23 / BEP 7)."""
        return compact_address(self.ip, self.port)


def compact_address(ip: str, port: int) -> bytes:
    """``ip:port`` in compact form: 6 bytes for IPv4, 18 for IPv6."""
    return ipaddress.ip_address(ip).packed + struct.pack("!H", port)


def split_address(address: bytes) -> tuple[str, int]:
    """The ``(ip, port)`` of a compact address."""
    return str(ipaddress.ip_address(address[:-2])), int.from_bytes(address[-2:], "big")


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


def _pairs(query: bytes, limit: int) -> list[tuple[bytes, bytes]]:
    """``k=v`` pairs with keys percent-decoded; values left raw (decoded on use)."""
    if len(query) > limit:
        raise AnnounceInvalid("query string too long")
    pairs = []
    for piece in query.split(b"&"):
        key, _, value = piece.partition(b"=")
        pairs.append((unquote_to_bytes(key) if b"%" in key else key, value))
    return pairs


def _unquote(value: bytes) -> bytes:
    return unquote_to_bytes(value) if b"%" in value else value


def _hash_value(name: str, value: bytes) -> bytes:
    value = _unquote(value)
    if len(value) != HASH_LENGTH:
        raise AnnounceInvalid(f"{name} must be {HASH_LENGTH} bytes, got {len(value)}")
    return value


def _info_hash(value: bytes) -> bytes:
    """The decoded info hash, from a cache: a tracker sees few swarms and many announces."""
    decoded = _info_hash_cache.get(value)
    if decoded is None:
        decoded = _hash_value("info_hash", value)
        if len(_info_hash_cache) >= _INFO_HASH_CACHE_LIMIT:
            _info_hash_cache.clear()
        _info_hash_cache[value] = decoded
    return decoded


def _int_value(name: str, value: bytes) -> int:
    # bytes.isdigit() is ASCII-only, unlike str.isdigit() which accepts other scripts' digits.
    if value.isdigit() and len(value) < 19:
        return int(value)
    value = _unquote(value)
    if value.startswith(b"-") and value[1:].isdigit():
        raise AnnounceInvalid(f"{name} must not be negative")
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
    return min(_int_value("numwant", value), config.numwant_max)  # raises unless escaped digits


def _label(name: str, value: bytes) -> str:
    text = _unquote(value).decode("latin-1")
    if text and not LABEL_PATTERN.fullmatch(text):
        raise AnnounceInvalid(f"{name} label {text[:70]!r} is not {LABEL_RULE}")
    return text


def _location(region: bytes, idc: bytes, rack: bytes) -> Location:
    """The location of raw label values, validated once per distinct triple."""
    raw = (region, idc, rack)
    location = _location_cache.get(raw)
    if location is None:
        location = Location(_label("region", region), _label("idc", idc), _label("rack", rack))
        if len(_location_cache) >= _LOCATION_CACHE_LIMIT:
            _location_cache.clear()
        _location_cache[raw] = location
    return location


def parse_announce(query: bytes, remote_ip: str, config: NumwantLimits) -> Announce:
    """Validate an announce's raw query string; raise :class:`AnnounceInvalid` if unusable.

    ``remote_ip`` is the address the request came from (see :func:`client_ip`).
    The client's own ``ip`` parameter is ignored: trusting it would let anyone
    point a swarm at a third party's host. ``region``, ``idc`` and ``rack`` are
    location labels and ``seeder=1`` marks a dedicated seeder (Eagle's own
    parameters, see :mod:`eagle.p2p.labels`); other unknown parameters are ignored.
    """
    if len(query) > MAX_QUERY_LENGTH:
        raise AnnounceInvalid("query string too long")
    values: dict[bytes, bytes] = {}
    for piece in query.split(b"&"):
        key, _, value = piece.partition(b"=")
        if key not in _KNOWN:
            if b"%" not in key:
                continue
            key = unquote_to_bytes(key)
            if key not in _KNOWN:
                continue
        if key in values:
            raise AnnounceInvalid(f"repeated {key.decode()}")
        values[key] = value
    for required in _REQUIRED:
        if required not in values:
            raise AnnounceInvalid(f"missing {required.decode()}")

    port = _int_value("port", values[b"port"])
    if not 1 <= port <= 65535:
        raise AnnounceInvalid("port must be between 1 and 65535")

    event: str | None = None
    raw_event = values.get(b"event")
    if raw_event:
        event = EVENTS.get(raw_event) or EVENTS.get(_unquote(raw_event))
        if event is None:
            shown = _unquote(raw_event)[:20].decode("latin-1")
            raise AnnounceInvalid(f"unknown event {shown!r}")

    location = _NO_LABELS
    if b"idc" in values or b"rack" in values or b"region" in values:
        location = _location(
            values.get(b"region", b""), values.get(b"idc", b""), values.get(b"rack", b"")
        )
    seeder = values.get(b"seeder", b"0")
    if seeder not in (b"0", b"1", b""):
        raise AnnounceInvalid("seeder must be 0 or 1")

    return Announce(
        _info_hash(values[b"info_hash"]),
        _hash_value("peer_id", values[b"peer_id"]),
        port,
        _int_value("uploaded", values[b"uploaded"]),
        _int_value("downloaded", values[b"downloaded"]),
        _int_value("left", values[b"left"]),
        event,
        _numwant(values.get(b"numwant"), config),
        # Compact is the default: BEP 23 answers are smaller, and every client we
        # know of understands them.
        values.get(b"compact", b"1") != b"0",
        remote_ip,
        location,
        seeder == b"1",
    )


def parse_scrape(query: bytes) -> list[bytes]:
    """The ``info_hash`` parameters of a scrape (BEP 48), in order and without repeats.

    An empty list means "all swarms". More than :data:`MAX_SCRAPE_HASHES` is refused.
    """
    hashes: dict[bytes, None] = {}
    for key, value in _pairs(query, MAX_SCRAPE_QUERY_LENGTH):
        if key == b"info_hash":
            hashes[_hash_value("info_hash", value)] = None
            if len(hashes) > MAX_SCRAPE_HASHES:
                raise AnnounceInvalid(f"at most {MAX_SCRAPE_HASHES} info_hash per scrape")
    return list(hashes)


def encode_announce_response(
    interval: int,
    min_interval: int | None,
    complete: int,
    incomplete: int,
    addresses: Sequence[bytes],
    peer_ids: Sequence[bytes] | None,
    compact: bool,
) -> bytes:
    """The bencoded answer to an announce, peers given by compact address.

    Compact (BEP 23): IPv4 peers as 6-byte strings in ``peers``, IPv6 peers as
    18-byte strings in ``peers6`` (BEP 7). Otherwise ``peers`` is a list of dicts
    with ``ip``, ``port`` and, if ``peer_ids`` are given, ``peer id``. Keys come
    out sorted, as bencoding demands.
    """
    head = b"d8:completei%de10:incompletei%de8:intervali%de" % (complete, incomplete, interval)
    if min_interval is not None:
        head += b"12:min intervali%de" % min_interval
    if not compact:
        entries: list[dict[str, object]] = []
        for index, address in enumerate(addresses):
            ip, port = split_address(address)
            entry: dict[str, object] = {"ip": ip, "port": port}
            if peer_ids is not None:
                entry["peer id"] = peer_ids[index]
            entries.append(entry)
        return head + b"5:peers" + bencode(entries) + b"e"
    joined = b"".join(addresses)
    if len(joined) == 6 * len(addresses):  # all IPv4, the common case: no per-peer test
        return head + b"5:peers%d:%se" % (len(joined), joined)
    v4 = b"".join([address for address in addresses if len(address) == 6])
    v6 = b"".join([address for address in addresses if len(address) == 18])
    return head + b"5:peers%d:%s6:peers6%d:%se" % (len(v4), v4, len(v6), v6)


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
