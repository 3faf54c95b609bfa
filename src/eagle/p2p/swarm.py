"""Which pieces a downloader takes from the seeder, and when it stops: pure logic.

The problem (measured in ../shared/CALIBRATION.md): when every downloader asks the
seeder for whatever it lacks, the seeder sends each piece two or three times, and
the swarm finishes only when the seeder has pushed all those copies through its
link. A swarm gets near the physical limit (image size / host bandwidth) only if
the seeder sends each piece about once, to different peers, and peers pass pieces
on at once.

The rules, applied by every downloader to its own view of the swarm:

* **Stripes.** The downloaders of a torrent, ordered by address, split the piece
  ring into equal contiguous stripes; each takes its own stripe from the seeder,
  in order (:func:`stripe`). Every peer sees the same set of peers within a moment
  of starting together, so the stripes are disjoint without any coordination.
* **Walks.** Taking pieces is a *walk*: from a cursor forward, the next ``window``
  pieces that nobody else holds, stopping at the first piece another peer holds or
  at the walk's end. Pieces this host has are stepped over.
* **Jumps.** Stripes do not finish together (each downloader's link is shared by
  its peers' traffic too). A downloader whose walk is running out picks the
  longest run of pieces that nobody holds, leaves its owner ``reserve`` pieces at
  the front, and walks from the middle of the rest to the run's end. Owner and
  helper meet in the middle; the slowest stripe gets shorter. Among runs of about
  the same length, hosts choose differently (``choice``), so two helpers rarely
  pick the same one.
* **Everything else from peers.** A piece another (non-seeder) peer holds is
  fetched from peers. While the seeder is in use, pieces nobody holds that are not
  this host's to take get priority 0, so the seeder is never asked for them.
* **Stop taking from the seeder** when no walk is left: the caller then blocks the
  seeder for this torrent (libtorrent would otherwise keep asking it for pieces
  that peers have too).
* **Rescue.** If the download stalls while pieces that nobody else holds are still
  missing (their owner left), the caller asks for a rescue plan, which takes every
  such piece from the seeder.

Functions here see only bitfields; :mod:`eagle.p2p.steering` feeds them from
libtorrent and applies the result.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Collection, Sequence
from dataclasses import dataclass, replace

# libtorrent piece priorities: 0 = do not download, 1 = low, 7 = top.
SKIP = 0
FROM_PEERS = 1
NEXT = 6
OWN = 7

MIN_WINDOW = 6
WINDOW_MARGIN = 4
MIN_JUMP = 4  # pieces a jump must leave this host at least
MEETING = 3  # held pieces in a row that end a walk: another peer's walk begins there
SIMILAR_RUN = 0.75  # runs this close to the longest count as equally good jump targets


@dataclass(frozen=True)
class PieceView:
    """What one downloader knows about one torrent at one instant.

    ``have``: pieces this host has verified. ``held``: pieces some connected peer
    that is not a dedicated seeder has. ``partial``: pieces this host has begun
    downloading.
    """

    have: Sequence[bool]
    held: Sequence[bool]
    partial: Collection[int] = frozenset()

    def __post_init__(self) -> None:
        if len(self.have) != len(self.held):
            raise ValueError("have and held must cover the same pieces")

    @property
    def num_pieces(self) -> int:
        """Pieces in the torrent."""
        return len(self.have)

    def free(self, index: int) -> bool:
        """Missing here and held by no other peer: only the seeder can send it."""
        return not self.have[index] and not self.held[index]


@dataclass(frozen=True)
class Walk:
    """Pieces ``first``, ``first + 1``, ... (``length`` of them, around the ring)."""

    first: int
    length: int


@dataclass(frozen=True)
class Walks:
    """A downloader's state between plans: its current walk and the one lined up next."""

    current: Walk | None = None
    next: Walk | None = None
    jumps: int = 0


@dataclass(frozen=True)
class PiecePlan:
    """Piece priorities for libtorrent, whether the seeder may be asked at all, and the
    walks to remember for the next plan."""

    priorities: list[int]
    own: tuple[int, ...]
    next: tuple[int, ...]
    use_seeder: bool
    walks: Walks


def stripe(rank: int, count: int, num_pieces: int) -> Walk:
    """The walk of the ``rank``-th of ``count`` downloaders: its equal, contiguous share
    of the piece ring. (A share whose downloader is missing is left to jumps.)"""
    if count < 1 or not 0 <= rank < count:
        raise ValueError(f"rank {rank} out of range for {count} stripes")
    first = rank * num_pieces // count
    return Walk(first, (rank + 1) * num_pieces // count - first)


def choice_of(identity: str, salt: int = 0) -> int:
    """A number that differs between hosts, to break ties without coordination."""
    digest = hashlib.sha256(f"{identity}\0{salt}".encode()).digest()
    return int.from_bytes(digest[:8], "big")


def window_pieces(
    seeder_rate: float, piece_length: int, queue_seconds: float, max_queue_bytes: int = 0
) -> int:
    """Pieces to keep requestable from the seeder so that its request queue never
    spills onto other pieces: libtorrent keeps about ``queue_seconds`` of a peer's
    rate requested, and up to ``max_queue_bytes`` while it is still measuring it."""
    pieces = max(seeder_rate * queue_seconds, max_queue_bytes) / max(1, piece_length)
    return max(MIN_WINDOW, math.ceil(pieces) + WINDOW_MARGIN)


def walk_pieces(view: PieceView, walk: Walk, limit: int) -> list[int]:
    """Up to ``limit`` free pieces along ``walk``, stepping over pieces this host has,
    stopping where another peer's walk begins: :data:`MEETING` pieces in a row held by
    others, past the first piece of the walk this host has.

    Shorter runs of held pieces, and any before this host's first piece of the walk,
    are stepped over: pieces fetched elsewhere before the stripes settled, or by a
    rescue, must not end a walk and orphan the rest of it.
    """
    n = view.num_pieces
    out: list[int] = []
    started = False
    for step in range(min(walk.length, n)):
        if len(out) >= limit:
            break
        i = (walk.first + step) % n
        if view.have[i]:
            started = True
            continue
        if view.held[i]:
            if started and _held_run(view, i, min(MEETING, walk.length - step)):
                break
            continue
        out.append(i)
    return out


def _held_run(view: PieceView, first: int, length: int) -> bool:
    n = view.num_pieces
    return all(view.held[(first + k) % n] and not view.have[(first + k) % n] for k in range(length))


def free_runs(view: PieceView, taken: Collection[int] = ()) -> list[Walk]:
    """Maximal runs of free pieces not in ``taken``, around the ring, longest first
    (ties: lower first piece)."""
    n = view.num_pieces
    usable = [view.free(i) and i not in taken for i in range(n)]
    if n and all(usable):
        return [Walk(0, n)]
    if not any(usable):
        return []
    # Scan from just after an unusable piece, so that no run wraps across the scan's start.
    origin = usable.index(False) + 1
    runs: list[Walk] = []
    first, length = 0, 0
    for step in range(n):
        i = (origin + step) % n
        if usable[i]:
            if length == 0:
                first = i
            length += 1
        elif length:
            runs.append(Walk(first, length))
            length = 0
    if length:
        runs.append(Walk(first, length))
    runs.sort(key=lambda run: (-run.length, run.first))
    return runs


def jump(view: PieceView, taken: Collection[int], reserve: int, choice: int) -> Walk | None:
    """Where to help next: the second half (beyond ``reserve``) of one of the longest
    free runs, or None when no run leaves at least :data:`MIN_JUMP` pieces to take."""
    runs = [r for r in free_runs(view, taken) if (r.length - reserve) // 2 >= MIN_JUMP]
    if not runs:
        return None
    similar = [r for r in runs if r.length >= SIMILAR_RUN * runs[0].length]
    run = similar[choice % len(similar)]
    beyond = run.length - reserve
    offset = reserve + (beyond - beyond // 2)
    return Walk((run.first + offset) % view.num_pieces, run.length - offset)


def rescue_walk(view: PieceView, choice: int) -> Walk | None:
    """A walk over orphaned pieces: from a point in one of the longest free runs,
    both chosen by ``choice``, to the run's end."""
    runs = free_runs(view)
    if not runs:
        return None
    similar = [r for r in runs if r.length >= SIMILAR_RUN * runs[0].length]
    run = similar[choice % len(similar)]
    offset = (choice // len(similar)) % run.length
    return Walk((run.first + offset) % view.num_pieces, run.length - offset)


def plan(
    view: PieceView,
    walks: Walks,
    window: int,
    *,
    reserve: int | None = None,
    choice: int = 0,
    rescue: bool = False,
    drain_below: int | None = None,
) -> PiecePlan:
    """Priorities for this instant, following the rules in the module docstring.

    ``window`` is how many pieces to keep requestable from the seeder (see
    :func:`window_pieces`); ``reserve`` (default ``window``) how many pieces at the
    front of someone else's run a jump leaves alone; ``choice`` breaks ties between
    jump targets (see :func:`choice_of`). With ``rescue``, this host starts a walk
    over pieces that only the seeder has (see :func:`rescue_walk`).
    """
    if window < 1:
        raise ValueError("window must be at least 1")
    reserve = window if reserve is None else reserve
    if rescue:
        # Several hosts may rescue at once: each from a point of its own choosing, a
        # window at a time. Taking every orphaned piece at once would make this host
        # their only holder and its upload the swarm's bottleneck.
        walks = Walks(next=rescue_walk(view, choice + walks.jumps), jumps=walks.jumps + 1)
    own, walks = _own_pieces(view, walks, window)
    ahead: list[int] = []
    if len(own) < window:
        ahead, walks = _next_pieces(view, walks, own, window - len(own), reserve, choice)
    drain_at = window if drain_below is None else drain_below
    return PiecePlan(_priorities(view, own, ahead, drain_at), tuple(own), tuple(ahead),
                     bool(own or ahead), walks)  # fmt: skip


def _own_pieces(view: PieceView, walks: Walks, window: int) -> tuple[list[int], Walks]:
    """The current walk's next pieces (moving on to the lined-up walk when it is done),
    plus pieces already begun that still only the seeder has."""
    current, upcoming = walks.current, walks.next
    own = walk_pieces(view, current, window) if current is not None else []
    if not own and upcoming is not None:
        current, upcoming = upcoming, None
        own = walk_pieces(view, current, window)
    if not own:
        current = None
    # Dropping begun pieces would leave them half-fetched.
    own += [i for i in sorted(view.partial) if view.free(i) and i not in own]
    return own, replace(walks, current=current, next=upcoming)


def _next_pieces(
    view: PieceView, walks: Walks, own: list[int], room: int, reserve: int, choice: int
) -> tuple[list[int], Walks]:
    """Line up the next walk before the current one runs dry, so that the seeder's
    request queue always holds pieces nobody else is taking; its first pieces."""
    upcoming = walks.next
    if upcoming is None:
        upcoming = jump(view, own, reserve, choice + walks.jumps)
        if upcoming is not None:
            walks = replace(walks, jumps=walks.jumps + 1)
    ahead: list[int] = []
    if upcoming is not None:
        # Its first pieces may be under way already (they count as ours then).
        pieces = walk_pieces(view, upcoming, room + len(own))
        if not pieces:
            upcoming = None  # nothing left on it
        ahead = [i for i in pieces if i not in own][:room]
    return ahead, replace(walks, next=upcoming)


def _priorities(view: PieceView, own: list[int], ahead: list[int], drain_at: int) -> list[int]:
    n = view.num_pieces
    if not own and not ahead:
        # Not using the seeder: everything missing at priority 1. Pieces only the seeder
        # has cannot come from anyone then, and a torrent whose every wanted piece is
        # done would count as finished in libtorrent.
        return [FROM_PEERS] * n
    # Draining: too few pieces are left to take from the seeder to fill its request
    # queue, and libtorrent would fill the rest with pieces that peers have. Until the
    # last ones arrive and the seeder is let go, nothing else is requested (requests
    # already sent to peers keep the link busy meanwhile).
    drain = len(own) + len(ahead) < drain_at
    priorities = [SKIP if drain or view.free(i) else FROM_PEERS for i in range(n)]
    for i in ahead:
        priorities[i] = NEXT
    for i in own:
        priorities[i] = OWN
    return priorities
