"""Steering decisions that need no libtorrent session: when a download is starved."""

from __future__ import annotations

from eagle.p2p.steering import STARVED_RESCUE_SECONDS, SwarmSteering, _Steered
from eagle.p2p.swarm import PieceView


def steered() -> _Steered:
    return _Steered(handle=None, num_pieces=4, piece_length=256 * 1024)


def test_a_download_is_starved_only_after_peers_had_nothing_for_a_while() -> None:
    s = steered()
    # Pieces 2 and 3 are missing and nobody holds them (their owner stopped walking).
    only_free = PieceView([True, True, False, False], [True, True, False, False])

    assert not SwarmSteering._starved(s, only_free, now=100.0)
    assert not SwarmSteering._starved(s, only_free, now=100.0 + STARVED_RESCUE_SECONDS / 2)
    assert SwarmSteering._starved(s, only_free, now=100.0 + STARVED_RESCUE_SECONDS)


def test_a_piece_still_to_get_from_peers_resets_the_starvation_clock() -> None:
    s = steered()
    only_free = PieceView([True, False, False, False], [True, False, False, False])
    from_peers = PieceView([True, False, False, False], [True, True, False, False])

    SwarmSteering._starved(s, only_free, now=0.0)
    assert not SwarmSteering._starved(s, from_peers, now=5.0)
    assert not SwarmSteering._starved(s, only_free, now=5.1)
    assert SwarmSteering._starved(s, only_free, now=5.1 + STARVED_RESCUE_SECONDS)


def test_a_complete_download_is_never_starved() -> None:
    s = steered()
    done = PieceView([True] * 4, [False] * 4)
    assert not SwarmSteering._starved(s, done, now=0.0)
    assert not SwarmSteering._starved(s, done, now=60.0)
