"""The host budget split between libtorrent and origin HTTP downloads."""

from __future__ import annotations

from eagle.agent.bandwidth import HostBandwidth, Rates
from eagle.p2p.engine import TorrentEngine

MiB = 1 << 20


def limits(engine: TorrentEngine) -> tuple[int, int]:
    settings = engine.session.get_settings()
    return settings["download_rate_limit"], settings["upload_rate_limit"]


async def test_one_side_alone_gets_the_whole_budget(engine: TorrentEngine) -> None:
    budget = HostBandwidth(engine, Rates(10 * MiB, 3 * MiB))
    budget.start()
    assert limits(engine) == (10 * MiB, 3 * MiB)
    with budget.flow("http"):
        assert budget.http.rate == 10 * MiB
        assert limits(engine) == (10 * MiB, 3 * MiB)


async def test_both_sides_share_the_budget_per_blob(engine: TorrentEngine) -> None:
    budget = HostBandwidth(engine, Rates(12 * MiB, 0))
    budget.start()
    with budget.flow("p2p"), budget.flow("p2p"), budget.flow("http"):
        assert limits(engine)[0] == 8 * MiB
        assert budget.http.rate == 4 * MiB
        assert limits(engine)[0] + budget.http.rate == 12 * MiB
    assert limits(engine)[0] == budget.http.rate == 12 * MiB


async def test_rates_change_at_runtime_and_zero_is_unlimited(engine: TorrentEngine) -> None:
    budget = HostBandwidth(engine, Rates(5 * MiB, 5 * MiB))
    budget.start()
    with budget.flow("p2p"), budget.flow("http"):
        budget.set_rates(Rates(0, 1 * MiB))
        assert limits(engine) == (0, 1 * MiB)
        assert budget.http.rate == 0


async def test_a_tiny_budget_never_turns_into_unlimited(engine: TorrentEngine) -> None:
    budget = HostBandwidth(engine, Rates(1, 0))
    budget.start()
    with budget.flow("p2p"), budget.flow("http"):
        assert limits(engine)[0] >= 1 and budget.http.rate >= 1
