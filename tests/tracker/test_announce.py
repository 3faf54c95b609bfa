"""Announce and scrape parsing, and response encoding: pure functions, no sockets."""

from __future__ import annotations

from urllib.parse import quote_from_bytes

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from eagle.core.bencode import bdecode
from eagle.core.errors import AnnounceInvalid
from eagle.tracker.announce import (
    MAX_SCRAPE_HASHES,
    Announce,
    client_ip,
    compact_address,
    encode_announce_response,
    encode_failure,
    encode_scrape_response,
    parse_announce,
    parse_scrape,
    split_address,
)
from eagle.tracker.config import TrackerConfig
from eagle.tracker.locations import Location

CONFIG = TrackerConfig()
# Bytes that need escaping, including '&', '=', '%', '+' and NUL, to catch any
# decoding that goes through text.
INFO_HASH = bytes([0x00, 0x26, 0x3D, 0x25, 0x2B, 0xFF, 0x80, 0x20]) + bytes(range(0x41, 0x4D))
PEER_ID = b"-LT2110-" + bytes(range(0xE0, 0xEC))


def esc(value: bytes) -> str:
    """Percent-encode the way libtorrent does: everything but unreserved characters."""
    return quote_from_bytes(value, safe="")


def query(**overrides: str | None) -> bytes:
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
    text = "&".join(f"{k}={v}" for k, v in params.items() if v is not None)
    return text.encode("utf-8", "surrogateescape")


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
        location=Location(),
        seeder=False,
    )
    assert announce.compact_address == b"\x7f\x00\x00\x01\x1a\xe1"
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
    raw = query() + b"&info_hash=" + esc(b"\x01" * 20).encode()
    with pytest.raises(AnnounceInvalid, match="repeated info_hash"):
        parse_announce(raw, "127.0.0.1", CONFIG)
    # A repeat hidden behind an escaped key is still a repeat.
    with pytest.raises(AnnounceInvalid, match="repeated port"):
        parse_announce(query() + b"&p%6Frt=1", "127.0.0.1", CONFIG)


def test_rejects_long_query() -> None:
    with pytest.raises(AnnounceInvalid, match="too long"):
        parse_announce(query(key="k" * 5000), "127.0.0.1", CONFIG)


def test_location_labels_and_seeder() -> None:
    announce = parse_announce(
        query() + b"&region=eu&idc=fra1&rack=r%2D12&seeder=1", "127.0.0.1", CONFIG
    )
    assert announce.location == Location("eu", "fra1", "r-12")
    assert announce.seeder
    only_idc = parse_announce(query() + b"&idc=fra1", "127.0.0.1", CONFIG)
    assert only_idc.location == Location("", "fra1", "")
    assert not only_idc.seeder


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (b"&idc=a%7Cb", "idc label 'a|b' is not"),
        (b"&rack=" + b"r" * 65, "rack label"),
        (b"&region=-eu", "region label"),
        (b"&idc=%00", "idc label"),
        (b"&seeder=yes", "seeder must be 0 or 1"),
        (b"&idc=a&idc=b", "repeated idc"),
    ],
)
def test_rejects_bad_labels(extra: bytes, message: str) -> None:
    with pytest.raises(AnnounceInvalid, match=message):
        parse_announce(query() + extra, "127.0.0.1", CONFIG)


def test_client_ip() -> None:
    assert client_ip("::ffff:10.1.2.3") == "10.1.2.3"
    assert client_ip("127.0.0.1") == "127.0.0.1"
    assert client_ip("2001:DB8::1") == "2001:db8::1"
    for bad in (None, "", "not-an-ip"):
        with pytest.raises(AnnounceInvalid):
            client_ip(bad)


def test_compact_addresses() -> None:
    assert compact_address("127.0.0.1", 6881) == b"\x7f\x00\x00\x01\x1a\xe1"
    assert compact_address("::1", 80) == b"\x00" * 15 + b"\x01\x00\x50"
    assert split_address(b"\x7f\x00\x00\x01\x1a\xe1") == ("127.0.0.1", 6881)
    assert split_address(b"\x00" * 15 + b"\x01\x00\x50") == ("::1", 80)


V4 = compact_address("127.0.0.1", 6881)
V6 = compact_address("::1", 80)


def test_compact_ipv4_is_byte_exact() -> None:
    body = encode_announce_response(30, None, 1, 2, [V4], None, True)
    assert bdecode(body) == {
        b"interval": 30,
        b"complete": 1,
        b"incomplete": 2,
        b"peers": V4,
    }
    assert body == b"d8:completei1e10:incompletei2e8:intervali30e5:peers6:\x7f\x00\x00\x01\x1a\xe1e"


def test_compact_ipv6_goes_to_peers6() -> None:
    other = compact_address("10.0.0.2", 443)
    decoded = bdecode(encode_announce_response(30, 10, 0, 2, [V6, other], None, True))
    assert isinstance(decoded, dict)
    assert decoded[b"peers"] == other
    assert decoded[b"peers6"] == V6
    assert decoded[b"min interval"] == 10


def test_no_peers6_without_ipv6_peers() -> None:
    decoded = bdecode(encode_announce_response(30, None, 0, 0, [], None, True))
    assert decoded == {b"interval": 30, b"complete": 0, b"incomplete": 0, b"peers": b""}


def test_non_compact_peers_are_dicts() -> None:
    decoded = bdecode(
        encode_announce_response(30, None, 0, 2, [V4, V6], [b"p" * 20, b"q" * 20], False)
    )
    assert isinstance(decoded, dict)
    assert decoded[b"peers"] == [
        {b"ip": b"127.0.0.1", b"port": 6881, b"peer id": b"p" * 20},
        {b"ip": b"::1", b"port": 80, b"peer id": b"q" * 20},
    ]
    without_ids = bdecode(encode_announce_response(30, None, 0, 1, [V4], None, False))
    assert isinstance(without_ids, dict)
    assert without_ids[b"peers"] == [{b"ip": b"127.0.0.1", b"port": 6881}]


def test_failure() -> None:
    assert encode_failure("no") == b"d14:failure reason2:noe"


def test_parse_scrape() -> None:
    a, b = b"\x01" * 20, b"&" * 20
    assert parse_scrape(b"") == []
    both = f"info_hash={esc(a)}&info_hash={esc(b)}&info_hash={esc(a)}".encode()
    assert parse_scrape(both) == [a, b]
    with pytest.raises(AnnounceInvalid, match="20 bytes"):
        parse_scrape(b"info_hash=abc")
    many = "&".join(f"info_hash={esc(i.to_bytes(20, 'big'))}" for i in range(101)).encode()
    with pytest.raises(AnnounceInvalid, match=f"at most {MAX_SCRAPE_HASHES}"):
        parse_scrape(many)


def test_encode_scrape() -> None:
    decoded = bdecode(encode_scrape_response({b"h" * 20: (1, 2, 3)}))
    assert decoded == {b"files": {b"h" * 20: {b"complete": 1, b"incomplete": 2, b"downloaded": 3}}}


def _parse_or_reject(raw: bytes) -> None:
    try:
        result = parse_announce(raw, "127.0.0.1", CONFIG)
    except AnnounceInvalid:
        return
    assert isinstance(result, Announce)
    assert len(result.info_hash) == 20
    assert len(result.peer_id) == 20
    assert 1 <= result.port <= 65535
    assert 0 <= result.numwant <= CONFIG.numwant_max
    assert all(len(label) <= 64 and "|" not in label for label in result.location)


@settings(max_examples=300)
@given(st.binary(max_size=5000))
def test_random_bytes_never_crash(raw: bytes) -> None:
    _parse_or_reject(raw)


_param_names = st.sampled_from(
    [
        "info_hash",
        "peer_id",
        "port",
        "uploaded",
        "downloaded",
        "left",
        "event",
        "numwant",
        "idc",
        "rack",
        "seeder",
        "x",
    ]
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
    raw = "&".join(f"{k}={v}" for k, v in params).encode("utf-8", "surrogateescape")
    _parse_or_reject(query() + b"&" + raw if start_valid else raw)


@given(st.binary(min_size=20, max_size=20), st.binary(min_size=20, max_size=20))
def test_any_binary_hash_round_trips(info_hash: bytes, peer_id: bytes) -> None:
    announce = parse_announce(
        query(info_hash=esc(info_hash), peer_id=esc(peer_id)), "127.0.0.1", CONFIG
    )
    assert (announce.info_hash, announce.peer_id) == (info_hash, peer_id)
