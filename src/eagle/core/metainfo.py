"""Torrents as a pure function of a blob.

Every seeder must build the same infohash for the same blob, so that several
seeders (and agents that re-seed what they fetched from the origin) join one
swarm. The info dictionary therefore holds nothing but what the bytes decide:

* ``name``: the digest's hex;
* ``length``: the blob size;
* ``piece length``: :func:`piece_length_for` of the size (the rule below);
* ``pieces``: SHA-1 of each piece;
* ``private``: 1 (BEP 27), so clients use only the peers our tracker hands out:
  no DHT and no peer exchange leaking peers past the tracker's choice.

v1 only: hybrid v1+v2 torrents break interop with many clients and trackers.
Tracker URLs live outside the info dictionary, so they do not change the infohash.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass

from eagle.core.bencode import bdecode, bencode
from eagle.core.digest import Digest
from eagle.core.errors import InvalidInput

KiB = 1024
MiB = 1024 * KiB
MIN_PIECE_LENGTH = 256 * KiB
MAX_PIECE_LENGTH = 16 * MiB
# 256 KiB pieces measured best on a 12-host swarm (../shared/CALIBRATION.md); we only
# grow them when a blob would need more pieces than this, to keep metainfo small.
MAX_PIECES = 4096


def piece_length_for(size: int) -> int:
    """256 KiB, doubled until the blob has at most 4096 pieces; never above 16 MiB."""
    length = MIN_PIECE_LENGTH
    while length < MAX_PIECE_LENGTH and size > length * MAX_PIECES:
        length *= 2
    return length


class PieceHasher:
    """Computes the ``pieces`` string of a blob incrementally, as its bytes stream past."""

    def __init__(self, size: int) -> None:
        self.size = size
        self.piece_length = piece_length_for(size)
        self._digests: list[bytes] = []
        self._current = hashlib.sha1()
        self._filled = 0
        self._total = 0

    def update(self, data: bytes | memoryview) -> None:
        view = memoryview(data)
        self._total += len(view)
        while view:
            take = min(len(view), self.piece_length - self._filled)
            self._current.update(view[:take])
            self._filled += take
            view = view[take:]
            if self._filled == self.piece_length:
                self._digests.append(self._current.digest())
                self._current = hashlib.sha1()
                self._filled = 0

    def pieces(self) -> bytes:
        if self._total != self.size:
            raise InvalidInput(f"hashed {self._total} bytes of a {self.size}-byte blob")
        tail = [self._current.digest()] if self._filled or self.size == 0 else []
        return b"".join(self._digests + tail)


@dataclass(frozen=True)
class Metainfo:
    """A blob's torrent: the info dictionary plus the tracker list."""

    digest: Digest
    length: int
    piece_length: int
    pieces: bytes
    trackers: tuple[str, ...] = ()

    @property
    def info(self) -> dict[str, object]:
        return {
            "length": self.length,
            "name": self.digest.hex,
            "piece length": self.piece_length,
            "pieces": self.pieces,
            "private": 1,
        }

    @property
    def infohash(self) -> bytes:
        return hashlib.sha1(bencode(self.info)).digest()

    def with_trackers(self, trackers: Sequence[str]) -> Metainfo:
        return Metainfo(self.digest, self.length, self.piece_length, self.pieces, tuple(trackers))

    def to_bytes(self) -> bytes:
        """The ``.torrent`` file: a tier per tracker, so clients fail over between them."""
        torrent: dict[str, object] = {"info": self.info}
        if self.trackers:
            torrent["announce"] = self.trackers[0]
            torrent["announce-list"] = [[url] for url in self.trackers]
        return bencode(torrent)

    @classmethod
    def from_bytes(cls, data: bytes) -> Metainfo:
        """Parse a torrent we (or another Eagle seeder) built; refuse anything else."""
        try:
            torrent = bdecode(data)
            assert isinstance(torrent, dict)
            info = torrent[b"info"]
            assert isinstance(info, dict)
            name, length = info[b"name"], info[b"length"]
            piece_length, pieces = info[b"piece length"], info[b"pieces"]
            assert isinstance(name, bytes) and isinstance(length, int)
            assert isinstance(piece_length, int) and isinstance(pieces, bytes)
            tiers = torrent.get(b"announce-list", [])
            assert isinstance(tiers, list)
            trackers = tuple(
                url.decode()
                for tier in tiers
                if isinstance(tier, list)
                for url in tier
                if isinstance(url, bytes)
            )
            meta = cls(Digest(name.decode()), length, piece_length, pieces, trackers)
        except (ValueError, KeyError, AssertionError) as exc:
            raise InvalidInput("not an Eagle torrent") from exc
        # Exactly the info dictionary every seeder builds for this blob (same infohash), with the
        # piece length of the rule and one SHA-1 per piece (PieceHasher gives an empty blob one).
        if (
            bencode(meta.info) != bencode(info)
            or length < 0
            or piece_length != piece_length_for(length)
            or len(pieces) != 20 * max(1, -(-length // piece_length))
        ):
            raise InvalidInput("torrent info dictionary is not the canonical one for its blob")
        return meta


def build_metainfo(digest: Digest, data: bytes, trackers: Sequence[str] = ()) -> Metainfo:
    """Metainfo of an in-memory blob (tests and small blobs; large ones use PieceHasher)."""
    hasher = PieceHasher(len(data))
    hasher.update(data)
    return Metainfo(digest, len(data), hasher.piece_length, hasher.pieces(), tuple(trackers))
