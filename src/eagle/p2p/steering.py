"""Applying :mod:`eagle.p2p.swarm` plans to the downloads of one libtorrent session.

Every ``tick`` (a few times a second) each steered download's view is read from
libtorrent (our pieces, the bitfields of connected peers, pieces in flight), a plan
is made, and applied: piece priorities, and whether the dedicated seeder may be
used at all.

Dedicated seeders are recognised by their peer id, which starts with
:data:`SEEDER_PEER_ID_PREFIX` (Eagle seeders set it with ``peer_fingerprint``).
libtorrent gives a downloader no per-peer "stop asking this peer", so the seeder is
blocked per torrent: the session's IP filter lists the seeders' addresses, and a
torrent obeys it only while its ``apply_ip_filter`` flag is set. Torrents are
added with the flag off; it is set when the plan says the seeder is no longer
needed, which disconnects the seeder from that torrent only. An address that a
non-seeder peer (or this host) also uses is never filtered: blocking it would cut
those peers off too, so in all-on-one-host setups only priorities steer.
"""

from __future__ import annotations

import hashlib
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import libtorrent as lt

from eagle.p2p.swarm import (
    FROM_PEERS,
    WINDOW_MARGIN,
    PieceView,
    Walks,
    choice_of,
    plan,
    stripe,
    window_pieces,
)

log = logging.getLogger(__name__)

_WILDCARDS = frozenset({"", "0.0.0.0", "::"})
SEEDER_PEER_ID_PREFIX = b"-ES"
SEEDER_FINGERPRINT = "-ES0100-"
AGENT_FINGERPRINT = "-EA0100-"
TICK_SECONDS = 0.25
FAST_TICK_SECONDS = 0.05
QUEUE_SECONDS = 1.0  # libtorrent's request_queue_time, as set in eagle.p2p.settings
MAX_QUEUE_BLOCKS = 48  # libtorrent's max_out_request_queue, likewise
BLOCK_BYTES = 16 * 1024
# Taking stripes (see SwarmSteering._restripe): the set of peers must be unchanged this
# long; a download waits at most SETTLE_SECONDS for that, and re-stripes until LOCK_SECONDS.
STABLE_SECONDS = 0.3
SETTLE_SECONDS = 1.0
LOCK_SECONDS = 3.0
INITIAL_PIECES = 2
MIN_STEERED_PIECES = 32  # 8 MiB in 256 KiB pieces
RESCUE_AFTER_SECONDS = 2.0
# Rescue sooner when peers have nothing more to give: only pieces nobody holds are
# missing, and their owner would have announced them by now if it were fetching them.
STARVED_RESCUE_SECONDS = 0.75


def is_seeder_peer_id(peer_id: bytes) -> bool:
    """Whether a peer id belongs to a dedicated Eagle seeder."""
    return peer_id.startswith(SEEDER_PEER_ID_PREFIX)


def site_tag(site: str) -> str:
    """Four characters naming a host's site (its IDC label), carried in agents' peer ids
    after :data:`AGENT_FINGERPRINT`: stripes are shared among the agents of one site."""
    return hashlib.sha1(site.encode()).hexdigest()[:4]


def fingerprint(role: str, site: str = "") -> str:
    """The ``peer_fingerprint`` (peer id prefix) of a seeder, or of an agent at ``site``."""
    return SEEDER_FINGERPRINT if role == "seeder" else AGENT_FINGERPRINT + site_tag(site)


def worth_steering(num_pieces: int) -> bool:
    """Whether a download is big enough to steer: waiting for the peers to settle on
    stripes costs a fraction of a second, more than a few pieces sent twice do."""
    return num_pieces >= MIN_STEERED_PIECES


def initial_priorities(num_pieces: int, identity: str) -> list[int]:
    """Priorities to add a download with, before its peers are known: a couple of pieces
    placed by this host's identity. (All zero would make libtorrent call the torrent finished;
    defaults would have it ask the seeder for random pieces until the first plan.)"""
    priorities = [0] * num_pieces
    first = choice_of(identity) % max(1, num_pieces)
    for k in range(min(INITIAL_PIECES, num_pieces)):
        priorities[(first + k) % num_pieces] = 7
    return priorities


@dataclass
class _Steered:
    handle: Any
    num_pieces: int
    piece_length: int
    walks: Walks = field(default_factory=Walks)
    stripe_of: tuple[int, int] = (-1, 0)  # (rank, count) the current stripe was made for
    use_seeder: bool = True
    priorities: list[int] = field(default_factory=list)
    done: int = -1
    progress_at: float = field(default_factory=time.monotonic)
    starved_at: float | None = None  # since when only pieces nobody holds are missing
    added_at: float = field(default_factory=time.monotonic)
    ips: list[str] = field(default_factory=list)
    seen_ips: set[str] = field(default_factory=set)
    ips_changed_at: float = field(default_factory=time.monotonic)
    seeder_endpoints: set[tuple[str, int]] = field(default_factory=set)
    seeder_seen: bool = False
    own: tuple[int, ...] = ()  # the last plan's own pieces


class SwarmSteering:
    """Steers the downloads of one libtorrent session; call :meth:`tick` periodically.

    ``identity`` is this host's p2p ``address:port``; ``site`` its IDC label (agents
    share stripes with the agents of their site). Not thread-safe: call it from one
    thread (the event loop).
    """

    def __init__(
        self,
        session: Any,
        identity: str,
        *,
        queue_seconds: float = QUEUE_SECONDS,
        rescue_after: float = RESCUE_AFTER_SECONDS,
        site: str = "",
    ) -> None:
        self.session = session
        self.identity = identity
        # Agents of other sites (IDCs) take their stripes from their own swarm, through
        # gateways: they hold pieces we may fetch, but are no rank of ours.
        self._site = site_tag(site).encode()
        self.queue_seconds = queue_seconds
        self.rescue_after = rescue_after
        self._steered: dict[bytes, _Steered] = {}
        self._seeder_ips: set[str] = set()
        self._ip = identity.rpartition(":")[0].strip("[]")
        # Listening on a wildcard address, this host learns the address peers see it by
        # from its first connection (ranks are computed from those addresses).
        self._ip_known = self._ip not in _WILDCARDS
        self._peer_ips: set[str] = {self._ip}
        self._filtered: frozenset[str] = frozenset()

    def add(self, handle: Any) -> None:
        """Steer a download (already added, normally with :func:`initial_priorities`)."""
        info = handle.torrent_file()
        if info is None:
            raise ValueError("cannot steer a torrent without metadata")
        num_pieces = int(info.num_pieces())
        key = handle.info_hashes().v1.to_bytes()
        self._steered[key] = _Steered(handle, num_pieces, int(info.piece_length()))
        # The seeder is allowed until the plan says otherwise.
        handle.unset_flags(lt.torrent_flags.apply_ip_filter)

    def remove(self, handle: Any) -> None:
        """Stop steering a download (finished, or removed from the session)."""
        steered = self._steered.pop(handle.info_hashes().v1.to_bytes(), None)
        if steered is not None and handle.is_valid():
            handle.unset_flags(lt.torrent_flags.apply_ip_filter)

    def __len__(self) -> int:
        return len(self._steered)

    def next_tick(self) -> float:
        """Seconds until :meth:`tick` should run again: sooner while a download is new
        (its first plan replaces the start-up priorities)."""
        now = time.monotonic()
        young = any(now - s.added_at < SETTLE_SECONDS for s in self._steered.values())
        return FAST_TICK_SECONDS if young else TICK_SECONDS

    def tick(self) -> None:
        """Re-plan every steered download once."""
        for key, steered in list(self._steered.items()):
            handle = steered.handle
            if not handle.is_valid():
                del self._steered[key]
                continue
            try:
                if self._tick(steered):
                    self.remove(handle)
            except RuntimeError as exc:  # libtorrent: the torrent went away meanwhile
                log.debug("steering tick failed infohash=%s error=%s", key.hex(), exc)
        self._update_filter()

    # -- internals ---------------------------------------------------------------------------

    def _tick(self, steered: _Steered) -> bool:
        """Re-plan one download; True once it is complete (no longer to be steered)."""
        handle = steered.handle
        status = handle.status()
        if status.is_seeding:
            return True
        have = list(status.pieces)
        if len(have) != steered.num_pieces:
            return False  # still checking or without a bitfield yet
        held, seeder_rate = self._read_peers(steered)
        now = time.monotonic()
        done = int(status.total_wanted_done)
        if done != steered.done:
            steered.done, steered.progress_at = done, now
        ips = sorted((steered.seen_ips - self._seeder_ips) | {self._ip})
        if ips != steered.ips:
            steered.ips, steered.ips_changed_at = ips, now
        alone = len(ips) == 1 and int(status.num_incomplete) <= 1
        unseen = not steered.seeder_seen and now - steered.added_at >= SETTLE_SECONDS
        if alone or unseen:
            # Nothing to share: the only downloader takes everything from the seeder as
            # fast as it can; without a dedicated seeder in sight (another IDC's peers
            # bring the pieces, or a stock seeder serves) there is nothing to spare.
            steered.stripe_of, steered.own = (-1, 0), ()
            self._apply(steered, [FROM_PEERS] * steered.num_pieces)
            if not steered.use_seeder:
                self._use_seeder(steered, True, rescue=False)
            return False
        # When peers already hold every piece we lack (a later wave of pulls), there is
        # nothing to share out: plan at once instead of waiting for stripes to settle.
        covered = all(h or o for h, o in zip(held, have, strict=True))
        if not covered and not self._restripe(steered, int(status.num_incomplete), now):
            return False
        # The download queue is the costliest read (a record per block): only now.
        partial = {int(entry["piece_index"]) for entry in handle.get_download_queue()}
        view = PieceView(have, held, partial)
        stalled = now - steered.progress_at > self.rescue_after or self._starved(steered, view, now)
        rescue = not steered.use_seeder and stalled and any(map(view.free, range(len(have))))
        window = self._window(steered, seeder_rate, view.have)
        queue_pieces = -(-MAX_QUEUE_BLOCKS * BLOCK_BYTES // steered.piece_length)
        result = plan(
            view,
            steered.walks,
            window,
            choice=choice_of(self.identity),
            rescue=rescue,
            drain_below=queue_pieces + 1,
        )
        steered.walks, steered.own = result.walks, result.own
        log.debug(
            "steer infohash=%s have=%d held=%d partial=%d window=%d own=%d next=%d "
            "use_seeder=%s seeder_rate=%.0f",
            handle.info_hashes().v1, sum(have), sum(held), len(partial), window,
            len(result.own), len(result.next), result.use_seeder, seeder_rate,
        )  # fmt: skip
        self._apply(steered, result.priorities)
        if result.use_seeder != steered.use_seeder:
            self._use_seeder(steered, result.use_seeder, rescue)
        return False

    def _read_peers(self, steered: _Steered) -> tuple[list[bool], float]:
        """Pieces connected non-seeder peers hold, and the rate the seeder sends us at;
        notes seeders and peers seen on the way."""
        handle = steered.handle
        held = [False] * steered.num_pieces
        seeder_rate = 0.0
        infos = handle.get_peer_info()
        if log.isEnabledFor(logging.DEBUG):
            log.debug(
                "peers infohash=%s %s",
                handle.info_hashes().v1,
                [
                    (p.ip[0], p.pid.to_bytes()[:3], int(p.flags), sum(map(bool, p.pieces)))
                    for p in infos
                ],
            )
        for peer in infos:
            ip = peer.ip[0]
            if not self._ip_known:
                self._ip, self._ip_known = peer.local_endpoint[0], True
                self._peer_ips.add(self._ip)
            peer_id = peer.pid.to_bytes()
            if peer.flags & lt.peer_info.handshake or not any(peer_id):
                continue  # no peer id yet: cannot tell a seeder from a peer
            if is_seeder_peer_id(peer_id):
                steered.seeder_seen = True
                self._seeder_ips.add(ip)
                seeder_rate += peer.payload_down_speed
                if peer.flags & lt.peer_info.outgoing_connection:
                    steered.seeder_endpoints.add((ip, int(peer.ip[1])))
                continue
            self._peer_ips.add(ip)
            # Every downloader ever seen: connections between peers that dial each other
            # at once drop and come back during the first seconds, but the set of peers
            # must stay complete for ranks to agree.
            if peer_id[len(AGENT_FINGERPRINT) : len(AGENT_FINGERPRINT) + 4] == self._site:
                steered.seen_ips.add(ip)
            if peer.flags & lt.peer_info.seed:
                held = [True] * steered.num_pieces
            else:
                held = [h or bool(p) for h, p in zip(held, peer.pieces, strict=False)]
        return held, seeder_rate

    @staticmethod
    def _starved(steered: _Steered, view: PieceView, now: float) -> bool:
        """Whether, for a while, nothing missing here has been held by any peer."""
        n = view.num_pieces
        from_peers = any(view.held[i] and not view.have[i] for i in range(n))
        if from_peers or all(view.have):
            steered.starved_at = None
            return False
        if steered.starved_at is None:
            steered.starved_at = now
        return now - steered.starved_at >= STARVED_RESCUE_SECONDS

    def _window(self, steered: _Steered, seeder_rate: float, have: Sequence[bool]) -> int:
        window = window_pieces(
            seeder_rate, steered.piece_length, self.queue_seconds, MAX_QUEUE_BLOCKS * BLOCK_BYTES
        )
        # The measured rate lags (libtorrent averages over seconds): a window emptied
        # within one tick must at least double, or the ticks would pace the download.
        done_since = sum(1 for i in steered.own if have[i])
        return max(window, 2 * done_since + WINDOW_MARGIN)

    @staticmethod
    def _apply(steered: _Steered, priorities: list[int]) -> None:
        if priorities != steered.priorities:
            steered.handle.prioritize_pieces(priorities)
            steered.priorities = priorities

    def _restripe(self, steered: _Steered, expected: int, now: float) -> bool:
        """Take this host's stripe among the peers seen so far; False while waiting.

        Peers starting together see each other within a moment: a stripe is taken once
        the set of peers has been stable for a moment and holds as many downloaders as
        the tracker counted, or after a while regardless. Until a download is a few
        seconds old, a changed set of peers means a new stripe; after that, late joiners
        find their share by jumping.
        """
        age = now - steered.added_at
        striped = steered.stripe_of[1] > 0
        if striped and age > LOCK_SECONDS:
            return True
        stable = now - steered.ips_changed_at >= STABLE_SECONDS
        if not striped:
            ready = stable and 0 < expected <= len(steered.ips)
            if not (ready or age >= SETTLE_SECONDS):
                return False
        key = (steered.ips.index(self._ip), len(steered.ips))
        if key != steered.stripe_of and (stable or not striped):
            steered.stripe_of = key
            steered.walks = Walks(current=stripe(key[0], key[1], steered.num_pieces))
            log.debug(
                "stripe taken infohash=%s rank=%d of=%d", steered.handle.info_hashes().v1, *key
            )
        return True

    def _use_seeder(self, steered: _Steered, use: bool, rescue: bool) -> None:
        handle = steered.handle
        steered.use_seeder = use
        if not use:
            handle.set_flags(lt.torrent_flags.apply_ip_filter)
            log.info("seeder released infohash=%s", handle.info_hashes().v1)
            return
        handle.unset_flags(lt.torrent_flags.apply_ip_filter)
        # Filtering dropped the seeder from the torrent's peer list: find it again. (A
        # re-announce would also do, but it makes peers that are connected already dial
        # each other again, and libtorrent drops both copies of such connections.)
        for endpoint in steered.seeder_endpoints:
            handle.connect_peer(endpoint)
        if not steered.seeder_endpoints:
            handle.force_reannounce()
        steered.progress_at = time.monotonic()
        log.info("seeder back in use infohash=%s rescue=%s", handle.info_hashes().v1, rescue)

    def _update_filter(self) -> None:
        blocked = frozenset(self._seeder_ips - self._peer_ips)
        if blocked == self._filtered:
            return
        ip_filter = lt.ip_filter()
        for ip in sorted(blocked):
            ip_filter.add_rule(ip, ip, 1)  # 1 = blocked
        self.session.set_ip_filter(ip_filter)
        self._filtered = blocked
        log.info("seeder addresses filtered for finished stripes ips=%s", sorted(blocked))
