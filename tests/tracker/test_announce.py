"""Announce and scrape parsing, and response encoding: pure functions, no sockets."""

from __future__ import annotations

from urllib.parse import quote_from_bytes

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from eagle.core.bencode import bdecode
from eagle.core.errors import AnnounceInvalid
from eagle.core.peer import Peer, PeerAddress
from eagle.tracker.announce import (
    MAX_SCRAPE_HASHES,
    Announce,
    client_ip,
    encode_announce_response,
    encode_failure,
    encode_scrape_response,
    parse_announce,
    parse_scrape,
)
from eagle.tracker.config import TrackerConfig

CONFIG = TrackerConfig()
# Bytes that need escaping, including '&', '=', '%', '+' and NUL, to catch any
# decoding that goes through text.
INFO_HASH = bytes([0x00, 0x26, 0x3D, 0x25, 0x2B, 0xFF, 0x80, 0x20]) + bytes(range(0x41, 0x4D))
PEER_ID = b"-LT2110-" + bytes(range(0xE0, 0xEC))


def esc(value: bytes) -> str:
    """Percent-encode the way libtorrent does: everything but unreserved characters."""
    return quote_from_bytes(value, safe="")


def query(**overrides: str | None) -> str:
    """A libtorrent-style announce query string, with parameters replaced or (None) dropped."""
    params: dict[str, str | None] = {
        "info_hash": esc(INFO_HASH),
        "peer_id": esc(PEER_ID),
        "port": "6881",
        "uploaded": "0",
        "downloaded": "0",
        "left": "1024",
        "corrupt": "0",
        "key": "1A2B3C4D",
        "event": "started",
        "numwant": "200",
        "compact": "1",
        "no_peer_id": "1",
        "supportcrypto": "1",
        "redundant": "0",
    }
    params.update(overrides)
    return "&".join(f"{k}={v}" for k, v in params.items() if v is not None)


def test_parses_libtorrent_announce() -> None:
    announce = parse_announce(query(), "127.0.0.1", CONFIG)
    assert announce == Announce(
        info_hash=INFO_HASH,
        peer_id=PEER_ID,
        port=6881,
        uploaded=0,
        downloaded=0,
        left=1024,
        event="started",
        numwant=200,
        compact=True,
        ip="127.0.0.1",
    )
    assert announce.address == PeerAddress("127.0.0.1", 6881)
    assert not announce.complete


def test_literal_unreserved_bytes_in_hash() -> None:
    # Clients leave unreserved characters unescaped: "abc...": 20 literal bytes.
    raw = b"abcdefghij-_.~KLMNOP"
    announce = parse_announce(query(info_hash=raw.decode()), "10.0.0.1", CONFIG)
    assert announce.info_hash == raw


def test_optional_parameters() -> None:
    announce = parse_announce(query(event=None, numwant=None, compact=None), "::1", CONFIG)
    assert announce.event is None
    assert announce.numwant == CONFIG.numwant_default
    assert announce.compact
    assert parse_announce(query(event=""), "::1", CONFIG).event is None
    assert not parse_announce(query(compact="0"), "::1", CONFIG).compact


def test_complete_when_left_zero_or_completed() -> None:
    assert parse_announce(query(left="0"), "127.0.0.1", CONFIG).complete
    assert parse_announce(query(event="completed"), "127.0.0.1", CONFIG).complete


@pytest.mark.parametrize("numwant", ["1000", str(10**12), "9" * 300])
def test_numwant_is_clamped(numwant: str) -> None:
    assert parse_announce(query(numwant=numwant), "127.0.0.1", CONFIG).numwant == 200


def test_numwant_within_limit_is_kept() -> None:
    assert parse_announce(query(numwant="7"), "127.0.0.1", CONFIG).numwant == 7
    assert parse_announce(query(numwant="0"), "127.0.0.1", CONFIG).numwant == 0


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"info_hash": esc(INFO_HASH[:19])}, "info_hash must be 20 bytes"),
        ({"info_hash": esc(INFO_HASH + b"x")}, "info_hash must be 20 bytes"),
        ({"peer_id": "short"}, "peer_id must be 20 bytes"),
        ({"info_hash": None}, "missing info_hash"),
        ({"peer_id": None}, "missing peer_id"),
        ({"port": None}, "missing port"),
        ({"left": None}, "missing left"),
        ({"port": "0"}, "port must be between"),
        ({"port": "65536"}, "port must be between"),
        ({"port": "http"}, "port must be a non-negative integer"),
        ({"port": ""}, "port must be a non-negative integer"),
        ({"uploaded": "1e3"}, "uploaded must be a non-negative integer"),
        ({"left": "-1"}, "left must not be negative"),
        ({"downloaded": "-5"}, "downloaded must not be negative"),
        ({"numwant": "-1"}, "numwant must not be negative"),
        ({"numwant": "lots"}, "numwant must be a non-negative integer"),
        ({"left": "9" * 30}, "left is too large"),
        ({"left": "\u0663"}, "left must be a non-negative integer"),  # Arabic-Indic digit 3
        ({"event": "bogus"}, "unknown event"),
    ],
)
def test_rejects(overrides: dict[str, str | None], message: str) -> None:
    with pytest.raises(AnnounceInvalid, match=message):
        parse_announce(query(**overrides), "127.0.0.1", CONFIG)


def test_rejects_repeated_info_hash() -> None:
    raw = query() + "&info_hash=" + esc(b"\x01" * 20)
    with pytest.raises(AnnounceInvalid, match="repeated info_hash"):
        parse_announce(raw, "127.0.0.1", CONFIG)


def test_rejects_long_query() -> None:
    raw = query(key="k" * 5000)
    with pytest.raises(AnnounceInvalid, match="too long"):
        parse_announce(raw, "127.0.0.1", CONFIG)
    # Multi-byte characters count as bytes, not as characters.
    raw = query(key="\u00e9" * 2000)
    assert len(raw) < 4096 < len(raw.encode())
    with pytest.raises(AnnounceInvalid, match="too long"):
        parse_announce(raw, "127.0.0.1", CONFIG)


def test_client_ip() -> None:
    assert client_ip("::ffff:10.1.2.3") == "10.1.2.3"
    assert client_ip("127.0.0.1") == "127.0.0.1"
    assert client_ip("2001:DB8::1") == "2001:db8::1"
    for bad in (None, "", "not-an-ip"):
        with pytest.raises(AnnounceInvalid):
            client_ip(bad)


def test_compact_ipv4_is_byte_exact() -> None:
    body = encode_announce_response(30, None, 1, 2, [PeerAddress("127.0.0.1", 6881)], True)
    decoded = bdecode(body)
    assert decoded == {
        b"interval": 30,
        b"complete": 1,
        b"incomplete": 2,
        b"peers": b"\x7f\x00\x00\x01\x1a\xe1",
    }
    assert body == b"d8:completei1e10:incompletei2e8:intervali30e5:peers6:\x7f\x00\x00\x01\x1a\xe1e"


def test_compact_ipv6_goes_to_peers6() -> None:
    peers: list[Peer | PeerAddress] = [
        Peer(b"a" * 20, PeerAddress("::1", 80)),
        PeerAddress("10.0.0.2", 443),
    ]
    decoded = bdecode(encode_announce_response(30, 10, 0, 2, peers, True))
    assert isinstance(decoded, dict)
    assert decoded[b"peers"] == b"\x0a\x00\x00\x02\x01\xbb"
    assert decoded[b"peers6"] == b"\x00" * 15 + b"\x01" + b"\x00\x50"
    assert decoded[b"min interval"] == 10


def test_no_peers6_without_ipv6_peers() -> None:
    decoded = bdecode(encode_announce_response(30, None, 0, 0, [], True))
    assert decoded == {b"interval": 30, b"complete": 0, b"incomplete": 0, b"peers": b""}


def test_non_compact_peers_are_dicts() -> None:
    peers: list[Peer | PeerAddress] = [
        Peer(b"p" * 20, PeerAddress("127.0.0.1", 6881)),
        PeerAddress("::1", 6882),
    ]
    decoded = bdecode(encode_announce_response(30, None, 0, 2, peers, False))
    assert isinstance(decoded, dict)
    assert decoded[b"peers"] == [
        {b"ip": b"127.0.0.1", b"port": 6881, b"peer id": b"p" * 20},
        {b"ip": b"::1", b"port": 6882},
    ]


def test_failure() -> None:
    assert encode_failure("no") == b"d14:failure reason2:noe"


def test_parse_scrape() -> None:
    a, b = b"\x01" * 20, b"&" * 20
    assert parse_scrape("") == []
    assert parse_scrape(f"info_hash={esc(a)}&info_hash={esc(b)}&info_hash={esc(a)}") == [a, b]
    with pytest.raises(AnnounceInvalid, match="20 bytes"):
        parse_scrape("info_hash=abc")
    many = "&".join(f"info_hash={esc(i.to_bytes(20, 'big'))}" for i in range(101))
    with pytest.raises(AnnounceInvalid, match=f"at most {MAX_SCRAPE_HASHES}"):
        parse_scrape(many)


def test_encode_scrape() -> None:
    decoded = bdecode(encode_scrape_response({b"h" * 20: (1, 2, 3)}))
    assert decoded == {b"files": {b"h" * 20: {b"complete": 1, b"incomplete": 2, b"downloaded": 3}}}


def _parse_or_reject(raw: str) -> None:
    try:
        result = parse_announce(raw, "127.0.0.1", CONFIG)
    except AnnounceInvalid:
        return
    assert isinstance(result, Announce)
    assert len(result.info_hash) == 20
    assert len(result.peer_id) == 20
    assert 1 <= result.port <= 65535
    assert 0 <= result.numwant <= CONFIG.numwant_max


@settings(max_examples=300)
@given(st.text(max_size=5000))
def test_random_text_never_crashes(raw: str) -> None:
    _parse_or_reject(raw)


_param_names = st.sampled_from(
    ["info_hash", "peer_id", "port", "uploaded", "downloaded", "left", "event", "numwant", "x"]
)
_values = st.one_of(
    st.binary(max_size=40).map(esc),
    st.binary(max_size=40).map(lambda b: b.decode("latin-1")),
    st.text(max_size=30),
    st.integers(min_value=-(2**70), max_value=2**70).map(str),
)


@settings(max_examples=500)
@given(st.lists(st.tuples(_param_names, _values), max_size=12), st.booleans())
def test_random_parameters_never_crash(params: list[tuple[str, str]], start_valid: bool) -> None:
    raw = "&".join(f"{k}={v}" for k, v in params)
    _parse_or_reject(query() + "&" + raw if start_valid else raw)


@given(st.binary(min_size=20, max_size=20), st.binary(min_size=20, max_size=20))
def test_any_binary_hash_round_trips(info_hash: bytes, peer_id: bytes) -> None:
    announce = parse_announce(
        query(info_hash=esc(info_hash), peer_id=esc(peer_id)), "127.0.0.1", CONFIG
    )
    assert (announce.info_hash, announce.peer_id) == (info_hash, peer_id)


def test_lone_surrogates() -> None:
    # An escaped undecodable byte comes back as that byte; other surrogates are refused.
    announce = parse_announce(query(info_hash="\udcff" * 20), "127.0.0.1", CONFIG)
    assert announce.info_hash == b"\xff" * 20
    with pytest.raises(AnnounceInvalid, match="not valid text"):
        parse_announce(query(key="\ud800"), "127.0.0.1", CONFIG)
