"""The host's bandwidth budget, shared by BitTorrent and origin HTTP downloads.

libtorrent enforces its own session limits; origin downloads pass through a
:class:`~eagle.utils.ratelimit.TokenBucket`. To keep the *sum* under the host's
download limit, the limit is split between the two by the number of blobs each
is downloading now (fair per blob), and re-split whenever that number changes.
A side with nothing to download leaves the whole budget to the other.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Literal

from eagle.p2p.engine import TorrentEngine
from eagle.utils.ratelimit import TokenBucket

log = logging.getLogger(__name__)

FlowKind = Literal["p2p", "http"]


@dataclass(frozen=True)
class Rates:
    """A host's limits in bytes per second; 0 means unlimited."""

    download: int
    upload: int


class HostBandwidth:
    """One download and one upload budget for everything this host transfers."""

    def __init__(self, engine: TorrentEngine, rates: Rates) -> None:
        self.engine = engine
        self.rates = rates
        self.http = TokenBucket(rates.download)
        self._flows: dict[FlowKind, int] = {"p2p": 0, "http": 0}
        self._started = False

    def start(self) -> None:
        """Apply the limits to the (started) engine."""
        self._started = True
        self._apply()

    def set_rates(self, rates: Rates) -> None:
        """Change the limits now, without a restart."""
        self.rates = rates
        self._apply()
        log.info("rate limits set download=%d upload=%d", rates.download, rates.upload)

    @contextlib.contextmanager
    def flow(self, kind: FlowKind) -> Iterator[None]:
        """Count one blob download of ``kind`` while the block runs."""
        self._flows[kind] += 1
        self._apply()
        try:
            yield
        finally:
            self._flows[kind] -= 1
            self._apply()

    def shares(self) -> tuple[int, int]:
        """(BitTorrent, HTTP) download limits now; 0 means unlimited."""
        total = self.rates.download
        p2p, http = self._flows["p2p"], self._flows["http"]
        if not total or not p2p or not http:
            return total, total
        p2p_share = total * p2p // (p2p + http)
        # 0 would mean "unlimited" to both limiters: never hand out less than 1 byte/s.
        return max(1, p2p_share), max(1, total - p2p_share)

    def _apply(self) -> None:
        p2p_share, http_share = self.shares()
        self.http.set_rate(http_share)
        if self._started:
            self.engine.set_rates(p2p_share, self.rates.upload)
