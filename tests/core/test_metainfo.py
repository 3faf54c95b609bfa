"""Torrents as a pure function of a blob, cross-checked against libtorrent."""

from __future__ import annotations

import contextlib
import hashlib
import itertools
import random
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from eagle.core.bencode import bdecode, bencode
from eagle.core.digest import Digest
from eagle.core.errors import InvalidInput
from eagle.core.metainfo import (
    MAX_PIECE_LENGTH,
    MIN_PIECE_LENGTH,
    Metainfo,
    PieceHasher,
    build_metainfo,
    piece_length_for,
)

lt = pytest.importorskip("libtorrent")

KiB = 1024
MiB = 1024 * KiB
GiB = 1024 * MiB
PIECE = 256 * KiB
TRACKERS = ("http://tracker-a:6969/announce", "http://tracker-b:6969/announce")


def blob(size: int, seed: int = 0) -> bytes:
    return random.Random(seed).randbytes(size)


def meta_of(data: bytes, trackers: tuple[str, ...] = ()) -> Metainfo:
    return build_metainfo(Digest.of(data), data, trackers)


def reference_pieces(data: bytes, piece_length: int) -> bytes:
    return b"".join(
        hashlib.sha1(data[i : i + piece_length]).digest() for i in range(0, len(data), piece_length)
    )


# --- the piece-length rule ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("size", "expected"),
    [
        (0, 256 * KiB),
        (1, 256 * KiB),
        (100 * MiB, 256 * KiB),
        (1 * GiB, 256 * KiB),
        (1 * GiB + 1, 512 * KiB),
        (2 * GiB, 512 * KiB),
        (2 * GiB + 1, 1 * MiB),
        (64 * GiB, 16 * MiB),
        (64 * GiB + 1, 16 * MiB),
        (10 * 1024 * GiB, 16 * MiB),
    ],
)
def test_piece_length_rule(size: int, expected: int) -> None:
    assert piece_length_for(size) == expected


@given(st.integers(min_value=0, max_value=2**50))
def test_piece_length_is_a_power_of_two_within_bounds(size: int) -> None:
    length = piece_length_for(size)
    assert MIN_PIECE_LENGTH <= length <= MAX_PIECE_LENGTH
    assert length & (length - 1) == 0
    if length < MAX_PIECE_LENGTH:
        assert size <= length * 4096


# --- PieceHasher --------------------------------------------------------------------------


@settings(max_examples=50, deadline=None)
@given(
    size=st.integers(min_value=0, max_value=3 * PIECE + 10),
    cuts=st.lists(st.floats(min_value=0, max_value=1), max_size=8),
)
def test_streaming_in_any_chunks_equals_one_shot(size: int, cuts: list[float]) -> None:
    data = blob(size, seed=size)
    offsets = sorted({0, size, *(int(c * size) for c in cuts)})
    hasher = PieceHasher(size)
    for start, end in itertools.pairwise(offsets):
        hasher.update(data[start:end])
    assert hasher.pieces() == meta_of(data).pieces


@pytest.mark.parametrize("size", [1, PIECE - 1, PIECE, PIECE + 1, 3 * PIECE, 3 * PIECE + 7])
def test_pieces_are_sha1_of_each_piece(size: int) -> None:
    data = blob(size)
    pieces = meta_of(data).pieces
    assert pieces == reference_pieces(data, PIECE)
    assert len(pieces) == 20 * -(-size // PIECE)


def test_hasher_accepts_memoryview() -> None:
    data = blob(PIECE + 5)
    hasher = PieceHasher(len(data))
    hasher.update(memoryview(data))
    assert hasher.pieces() == reference_pieces(data, PIECE)


def test_zero_length_blob_has_one_empty_piece_hash() -> None:
    hasher = PieceHasher(0)
    hasher.update(b"")
    assert hasher.pieces() == hashlib.sha1(b"").digest()
    assert meta_of(b"").pieces == hasher.pieces()


@pytest.mark.parametrize("fed", [0, 9, 11])
def test_pieces_refuses_wrong_byte_count(fed: int) -> None:
    hasher = PieceHasher(10)
    hasher.update(b"x" * fed)
    with pytest.raises(InvalidInput):
        hasher.pieces()


# --- Metainfo -----------------------------------------------------------------------------


def test_info_dict_is_minimal_private_and_v1_only() -> None:
    meta = meta_of(blob(1000))
    assert meta.info == {
        "length": 1000,
        "name": meta.digest.hex,
        "piece length": PIECE,
        "pieces": meta.pieces,
        "private": 1,
    }
    assert not {"meta version", "file tree", "files"} & set(meta.info)


def test_infohash_is_sha1_of_bencoded_info() -> None:
    meta = meta_of(blob(1000))
    raw_info = bencode(bdecode(meta.to_bytes())[b"info"])  # type: ignore[index]
    assert meta.infohash == hashlib.sha1(raw_info).digest()


def test_same_blob_built_twice_has_same_infohash() -> None:
    data = blob(PIECE + 3)
    assert meta_of(data).infohash == meta_of(data).infohash


def test_infohash_independent_of_trackers() -> None:
    data = blob(5000)
    with_a = meta_of(data, TRACKERS[:1])
    with_both = meta_of(data, TRACKERS)
    assert with_a.infohash == with_both.infohash == meta_of(data).infohash
    assert with_a.with_trackers(()).infohash == with_a.infohash


def test_different_blobs_have_different_infohashes() -> None:
    assert meta_of(blob(100, seed=1)).infohash != meta_of(blob(100, seed=2)).infohash


def test_to_bytes_puts_each_tracker_in_its_own_tier() -> None:
    torrent = bdecode(meta_of(blob(10), TRACKERS).to_bytes())
    assert isinstance(torrent, dict)
    assert torrent[b"announce"] == TRACKERS[0].encode()
    assert torrent[b"announce-list"] == [[url.encode()] for url in TRACKERS]


def test_to_bytes_without_trackers_has_only_info() -> None:
    torrent = bdecode(meta_of(blob(10)).to_bytes())
    assert isinstance(torrent, dict)
    assert set(torrent) == {b"info"}


@pytest.mark.parametrize("trackers", [(), TRACKERS])
@pytest.mark.parametrize("size", [0, 1, PIECE, 2 * PIECE + 1])
def test_to_bytes_from_bytes_round_trip(size: int, trackers: tuple[str, ...]) -> None:
    meta = meta_of(blob(size), trackers)
    assert Metainfo.from_bytes(meta.to_bytes()) == meta


def test_with_trackers_replaces_tracker_list() -> None:
    meta = meta_of(blob(10), TRACKERS)
    assert meta.with_trackers(["http://other/announce"]).trackers == ("http://other/announce",)


# --- from_bytes refuses anything but a canonical Eagle torrent ----------------------------


def torrent_with_info(**changes: object) -> bytes:
    """Our torrent for a small blob, with info keys changed (``None`` deletes a key)."""
    info: dict[str, object] = dict(meta_of(blob(PIECE + 1)).info)
    for key, value in changes.items():
        key = key.replace("_", " ")
        if value is None:
            del info[key]
        else:
            info[key] = value
    return bencode({"info": info})


@pytest.mark.parametrize(
    "changes",
    [
        {"source": "elsewhere"},
        {"meta_version": 2},
        {"private": None},
        {"private": 0},
        {"name": None},
        {"name": "not-a-digest"},
        {"name": b"\xff" * 64},
        {"length": None},
        {"length": -1},
        {"length": 3 * PIECE},
        {"length": 1},
        {"length": b"1"},
        {"piece_length": 16 * KiB},
        {"piece_length": 0},
        {"pieces": b""},
        {"pieces": b"x" * 20},
        {"pieces": b"x" * 61},
        {"pieces": 7},
    ],
)
def test_from_bytes_rejects_non_canonical_info(changes: dict[str, object]) -> None:
    with pytest.raises(InvalidInput):
        Metainfo.from_bytes(torrent_with_info(**changes))


@pytest.mark.parametrize(
    "data",
    [
        b"",
        b"not bencode",
        b"le",
        b"de",
        b"i1e",
        b"d4:infoi1ee",
        b"d4:infole" + b"e",
        b"d\xff4:infodee",
    ],
)
def test_from_bytes_rejects_garbage(data: bytes) -> None:
    with pytest.raises(InvalidInput):
        Metainfo.from_bytes(data)


def test_from_bytes_rejects_non_utf8_info_key() -> None:
    torrent = bdecode(meta_of(blob(10)).to_bytes())
    assert isinstance(torrent, dict)
    torrent[b"info"][b"\xff"] = 1
    with pytest.raises(InvalidInput):
        Metainfo.from_bytes(bencode(torrent))


def test_from_bytes_rejects_unsorted_info_keys() -> None:
    meta = meta_of(blob(10))
    raw = meta.to_bytes()
    reordered = raw.replace(b"6:lengthi10e", b"").replace(
        b"7:privatei1e", b"7:privatei1e6:lengthi10e"
    )
    assert reordered != raw and len(reordered) == len(raw)
    with pytest.raises(InvalidInput):
        Metainfo.from_bytes(reordered)


@given(st.binary(max_size=200))
def test_from_bytes_of_arbitrary_bytes_raises_only_invalid_input(data: bytes) -> None:
    with contextlib.suppress(InvalidInput):
        Metainfo.from_bytes(data)


# --- cross-checks against libtorrent ------------------------------------------------------

LT_SIZES = [1, 1000, PIECE - 1, PIECE, PIECE + 1, 3 * PIECE + 12345]


@pytest.mark.parametrize("size", LT_SIZES)
def test_libtorrent_loads_our_torrent_with_same_infohash(size: int) -> None:
    meta = meta_of(blob(size), TRACKERS)
    ti = lt.torrent_info(lt.bdecode(meta.to_bytes()))
    assert bytes(ti.info_hashes().v1.to_bytes()) == meta.infohash
    assert str(ti.info_hashes().v1) == meta.infohash.hex()
    assert not ti.info_hashes().has_v2()
    assert ti.priv() is True
    assert ti.piece_length() == meta.piece_length
    assert ti.num_pieces() == len(meta.pieces) // 20
    assert ti.total_size() == size
    assert ti.name() == meta.digest.hex


def test_libtorrent_puts_each_tracker_in_its_own_tier() -> None:
    params = lt.load_torrent_buffer(meta_of(blob(10), TRACKERS).to_bytes())
    assert list(params.trackers) == list(TRACKERS)
    assert list(params.tracker_tiers) == [0, 1]


@pytest.mark.parametrize("size", LT_SIZES)
def test_libtorrent_create_torrent_builds_same_info(tmp_path: Path, size: int) -> None:
    data = blob(size)
    meta = meta_of(data)
    path = tmp_path / meta.digest.hex
    path.write_bytes(data)
    creator = lt.create_torrent(
        lt.list_files(str(path)), meta.piece_length, lt.create_torrent.v1_only
    )
    creator.set_priv(True)
    lt.set_piece_hashes(creator, str(tmp_path))
    generated = creator.generate()
    assert generated[b"info"][b"pieces"] == meta.pieces
    assert lt.bencode(generated[b"info"]) == bencode(meta.info)
    assert str(lt.torrent_info(generated).info_hashes().v1) == meta.infohash.hex()


def test_libtorrent_refuses_zero_length_torrents() -> None:
    """An empty blob cannot go through the swarm: callers must serve it directly."""
    with pytest.raises(RuntimeError):
        lt.torrent_info(lt.bdecode(meta_of(b"").to_bytes()))
