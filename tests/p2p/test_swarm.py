"""The swarm strategy as pure logic: stripes, walks, jumps, plans, and a whole simulated swarm."""

from __future__ import annotations

import random
from collections.abc import Collection

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from eagle.p2p.swarm import (
    FROM_PEERS,
    MEETING,
    MIN_JUMP,
    NEXT,
    OWN,
    SKIP,
    PieceView,
    Walk,
    Walks,
    free_runs,
    jump,
    plan,
    rescue_walk,
    stripe,
    walk_pieces,
    window_pieces,
)


def view(
    n: int,
    have: Collection[int] = (),
    held: Collection[int] = (),
    partial: Collection[int] = frozenset(),
) -> PieceView:
    return PieceView([i in have for i in range(n)], [i in held for i in range(n)], partial)


# -- stripes and windows --------------------------------------------------------------------


@given(st.integers(1, 5000), st.integers(1, 64))
def test_stripes_tile_the_ring_in_order(num_pieces: int, count: int) -> None:
    covered = []
    for rank in range(count):
        walk = stripe(rank, count, num_pieces)
        covered += [walk.first + k for k in range(walk.length)]
    assert covered == list(range(num_pieces))


@pytest.mark.parametrize(("rank", "count"), [(-1, 3), (3, 3), (0, 0)])
def test_stripe_refuses_a_rank_out_of_range(rank: int, count: int) -> None:
    with pytest.raises(ValueError, match="out of range"):
        stripe(rank, count, 100)


def test_window_covers_the_request_queue_with_a_margin() -> None:
    piece = 256 * 1024
    assert window_pieces(0, piece, 1.0) >= 4  # nothing measured yet: the minimum
    # 3 MB/s for 1 s is 12 pieces in flight; the window must hold more than that.
    assert window_pieces(3_000_000, piece, 1.0) > 12
    # A queue capped at 48 blocks of 16 KiB (3 pieces) needs more than 3.
    assert window_pieces(0, piece, 1.0, 48 * 16 * 1024) > 3


# -- walks ----------------------------------------------------------------------------------


def test_walk_takes_the_next_free_pieces_stepping_over_its_own() -> None:
    v = view(20, have={0, 1, 3})
    assert walk_pieces(v, Walk(0, 20), 4) == [2, 4, 5, 6]


def test_walk_stops_where_another_walk_begins() -> None:
    held = set(range(10, 10 + MEETING))
    v = view(20, have={0}, held=held)
    assert walk_pieces(v, Walk(0, 20), 50) == list(range(1, 10))


def test_walk_steps_over_stray_held_pieces() -> None:
    # Before this host has any piece of the walk, and for held runs shorter than a
    # meeting, held pieces do not end the walk: they would orphan the rest of it.
    v = view(20, held={0, 1, 2, 3, 8})
    assert walk_pieces(v, Walk(0, 20), 50) == [4, 5, 6, 7, *range(9, 20)]
    v = view(20, have={4}, held={0, 1, 2, 3, 8})
    assert walk_pieces(v, Walk(0, 20), 50) == [5, 6, 7, *range(9, 20)]


def test_walk_wraps_around_the_ring_and_keeps_to_its_length() -> None:
    v = view(10)
    assert walk_pieces(v, Walk(8, 4), 50) == [8, 9, 0, 1]


# -- runs and jumps -------------------------------------------------------------------------


@given(st.integers(1, 300), st.data())
def test_free_runs_are_the_maximal_runs_of_free_pieces(n: int, data: st.DataObject) -> None:
    have = data.draw(st.sets(st.integers(0, n - 1)))
    held = data.draw(st.sets(st.integers(0, n - 1)))
    v = view(n, have=have, held=held)
    runs = free_runs(v)
    seen: list[int] = []
    for run in runs:
        pieces = [(run.first + k) % n for k in range(run.length)]
        assert all(v.free(i) for i in pieces)
        if run.length < n:  # maximal: both neighbours are not free
            assert not v.free((run.first - 1) % n)
            assert not v.free((run.first + run.length) % n)
        seen += pieces
    assert sorted(seen) == [i for i in range(n) if v.free(i)]
    assert [r.length for r in runs] == sorted((r.length for r in runs), reverse=True)


def test_jump_takes_the_back_half_of_the_longest_run_beyond_the_reserve() -> None:
    # Pieces 0-9 held (someone's walk), 10-49 free (its owner walks in from 10).
    v = view(60, held=set(range(10)) | set(range(50, 60)))
    walk = jump(v, taken=(), reserve=8, choice=0)
    assert walk is not None
    assert walk.first + walk.length == 50  # to the run's end
    assert walk.first >= 10 + 8  # the owner's reserve is left alone
    assert walk.length <= (40 - 8 + 1) // 2 + 1


def test_no_jump_into_runs_too_short_to_share() -> None:
    short = 2 * MIN_JUMP + 8 - 1
    v = view(100, held=set(range(100)) - set(range(10, 10 + short)))
    assert jump(v, taken=(), reserve=8, choice=0) is None


def test_hosts_choose_different_runs_among_equally_long_ones() -> None:
    # Two free runs of 30 pieces.
    free = set(range(10, 40)) | set(range(60, 90))
    v = view(100, held=set(range(100)) - free)
    targets = {jump(v, (), 4, choice) for choice in range(8)}
    assert len({w.first + w.length for w in targets if w is not None}) == 2


def test_rescue_walk_lies_in_an_orphaned_run() -> None:
    v = view(50, held=set(range(50)) - {20, 21, 22, 23})
    walk = rescue_walk(v, choice=3)
    assert walk is not None
    assert {walk.first + k for k in range(walk.length)} <= {20, 21, 22, 23}


# -- plans ----------------------------------------------------------------------------------


def test_plan_takes_its_stripe_from_the_seeder_and_the_rest_from_peers() -> None:
    n = 40
    v = view(n, have={0, 1}, held=set(range(20, 30)))
    result = plan(v, Walks(current=stripe(0, 4, n)), window=4)
    assert result.use_seeder
    assert list(result.own) == [2, 3, 4, 5]
    for i in range(n):
        if i in result.own:
            assert result.priorities[i] == OWN
        elif i in range(20, 30):
            assert result.priorities[i] == FROM_PEERS
        elif not v.have[i]:
            assert result.priorities[i] == SKIP  # only the seeder has it: not ours to ask


def test_plan_lines_up_a_jump_before_its_walk_runs_dry() -> None:
    n = 100
    # Our stripe 0-9 is nearly done; 30-99 are free (another stripe, just started).
    v = view(n, have=set(range(8)), held=set(range(10, 30)))
    result = plan(v, Walks(current=Walk(0, 10)), window=6)
    assert result.own == (8, 9)
    assert result.next and all(result.priorities[i] == NEXT for i in result.next)
    assert all(i >= 30 + 6 for i in result.next)


def test_plan_drains_when_too_few_pieces_are_left_for_the_seeder() -> None:
    n = 30
    v = view(n, have=set(range(9)), held=set(range(10, 30)))
    result = plan(v, Walks(current=Walk(0, 10)), window=6)
    assert result.own == (9,) and result.use_seeder
    # Nothing else may be requested, or the seeder would be asked for it too.
    assert [i for i, p in enumerate(result.priorities) if p] == [9]


def test_plan_lets_the_seeder_go_when_nothing_is_left_to_take_from_it() -> None:
    n = 30
    v = view(n, have=set(range(10)), held=set(range(10, 30)))
    result = plan(v, Walks(current=Walk(0, 10)), window=6)
    assert not result.use_seeder and not result.own and not result.next
    assert all(p == FROM_PEERS for p in result.priorities)


def test_rescue_takes_orphaned_pieces_a_window_at_a_time() -> None:
    n = 60
    orphans = set(range(40, 60))
    v = view(n, have=set(range(40)), held=set(range(40)))
    result = plan(v, Walks(), window=5, rescue=True, choice=0)
    assert result.use_seeder
    assert set(result.own) <= orphans and 0 < len(result.own) <= 5


@settings(max_examples=200)
@given(st.integers(1, 120), st.integers(1, 12), st.data())
def test_a_plan_never_leaves_a_missing_piece_unwanted_everywhere(
    n: int, window: int, data: st.DataObject
) -> None:
    have = data.draw(st.sets(st.integers(0, n - 1), max_size=n - 1))
    held = data.draw(st.sets(st.integers(0, n - 1)))
    rank_count = data.draw(st.integers(1, 8))
    rank = data.draw(st.integers(0, rank_count - 1))
    v = view(n, have=have, held=held)
    result = plan(v, Walks(current=stripe(rank, rank_count, n)), window=window)
    # libtorrent calls a torrent whose wanted pieces are all done "finished".
    assert any(result.priorities[i] > 0 for i in range(n) if not v.have[i])
    assert all(v.free(i) for i in result.own + result.next)
    assert len(set(result.own) | set(result.next)) == len(result.own) + len(result.next)


# -- a simulated swarm ----------------------------------------------------------------------


def simulate(
    num_pieces: int, speeds: list[int], window: int = 6, peer_rate: int = 6, seed: int = 1
) -> tuple[dict[int, int], int]:
    """Hosts with different seeder rates (pieces a tick) follow their plans; pieces they
    ask the seeder for arrive after a tick's delay, as on a wire; what one host has, the
    others copy at ``peer_rate`` pieces a tick. Returns seeder sends by piece, and ticks."""
    rng = random.Random(seed)
    count = len(speeds)
    have: list[set[int]] = [set() for _ in speeds]
    flight: list[list[int]] = [[] for _ in speeds]
    walks = [Walks(current=stripe(r, count, num_pieces)) for r in range(count)]
    sends: dict[int, int] = {}
    ticks = 0
    while any(len(h) < num_pieces for h in have) and ticks < 10 * num_pieces:
        ticks += 1
        arrived: list[set[int]] = [set() for _ in speeds]
        for h, speed in enumerate(speeds):
            held = set().union(*(have[o] for o in range(count) if o != h))
            v = view(num_pieces, have=have[h], held=held, partial=frozenset(flight[h]))
            result = plan(v, walks[h], window, choice=h * 7919)
            walks[h] = result.walks
            # The seeder sends what was asked last tick; new asks follow the plan.
            for piece in flight[h][:speed]:
                arrived[h].add(piece)
                sends[piece] = sends.get(piece, 0) + 1
            flight[h] = flight[h][speed:]
            asked = set(flight[h]) | arrived[h]
            wanted = [p for p in (*result.own, *result.next) if p not in asked]
            flight[h] += wanted[: max(0, 2 * speed - len(flight[h]))]
            copies = sorted(held - have[h] - set(flight[h]))
            rng.shuffle(copies)
            arrived[h].update(copies[:peer_rate])
        for h in range(count):
            have[h] |= arrived[h]
    return sends, ticks


@pytest.mark.parametrize(
    "speeds", [[1] * 4, [2, 1, 1, 1], [1, 1, 1, 3], [1, 2, 3, 1, 2, 1, 1, 1], [1] * 12]
)
def test_simulated_swarm_takes_each_piece_from_the_seeder_about_once(speeds: list[int]) -> None:
    num_pieces = 400
    sends, _ = simulate(num_pieces, speeds)
    assert set(sends) == set(range(num_pieces))  # everything arrived
    total = sum(sends.values())
    assert total <= 1.1 * num_pieces, f"seeder sent {total / num_pieces:.2f} x the blob"


def test_faster_hosts_help_slower_ones() -> None:
    # One host gets three times the seeder rate of the others: jumps must give it more
    # pieces than its stripe, so the swarm is done well before the slow stripes would be.
    num_pieces = 400
    sends, ticks_fast = simulate(num_pieces, [3, 1, 1, 1])
    _, ticks_even = simulate(num_pieces, [1, 1, 1, 1])
    assert ticks_fast < 0.85 * ticks_even
    assert sum(sends.values()) <= 1.05 * num_pieces
