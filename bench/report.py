"""Turning mode results into the table, the JSON file and the CDF plot."""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

from bench.modes import ModeResult

TARGETS = {"p50": 1.15, "p99": 1.35, "origin": 1.05, "seeder": 1.2, "wan": 1.1}


def percentile(values: Sequence[float], q: float) -> float:
    """The q-th percentile (0..100) with linear interpolation between ranks (numpy's default)."""
    if not values:
        return math.nan
    ordered = sorted(values)
    rank = (len(ordered) - 1) * q / 100
    low, high = math.floor(rank), math.ceil(rank)
    return ordered[low] + (ordered[high] - ordered[low]) * (rank - low)


def summarise(result: ModeResult, size: int, ideal: float, idcs: int) -> dict[str, Any]:
    """The numbers a mode is judged by; times as seconds and as ratios to S/B."""
    times = [h.seconds for h in result.hosts if h.ok and h.seconds is not None]
    failed = sum(1 for h in result.hosts if not h.ok)
    # A failed host counts as infinitely slow: percentiles must not flatter a broken run.
    padded = times + [math.inf] * failed
    summary: dict[str, Any] = {"mode": result.mode, "hosts": len(result.hosts), "failed": failed}
    for name, q in (("p50", 50), ("p90", 90), ("p99", 99), ("max", 100)):
        seconds = percentile(padded, q)
        summary[name] = seconds
        summary[f"{name}_ratio"] = seconds / ideal
    swarm = [h.swarm_seconds for h in result.hosts if h.swarm_seconds is not None]
    if swarm:
        # Eagle only: when agents had the big blob, before skopeo read it from them.
        summary["swarm_p50_ratio"] = percentile(swarm, 50) / ideal
        summary["swarm_max_ratio"] = max(swarm) / ideal
    counters = result.counters
    summary["origin_bytes"] = result.origin_bytes
    summary["origin_ratio"] = result.origin_bytes / size
    seeder = counters["seeder_up"].payload
    summary["seeder_upload_bytes"] = seeder
    summary["seeder_ratio"] = seeder / size
    if result.seeder_upload_app is not None:
        summary["seeder_upload_app_ratio"] = result.seeder_upload_app / size
    hosts_up = counters["hosts_up"]
    summary["drop_percent"] = 100 * counters["drops"].drops / max(1, hosts_up.packets)
    if idcs > 1:
        summary["wan_in_ratio"] = {
            idc: counters[f"wan_in_{idc}"].payload / size for idc in range(idcs)
        }
    summary["cpu_percent"] = result.cpu
    summary["notes"] = result.notes
    return summary


def _fmt(value: float, digits: int = 2) -> str:
    return "inf" if math.isinf(value) else f"{value:.{digits}f}"


def table(summaries: Sequence[dict[str, Any]], ideal: float, idcs: int) -> str:
    """The printed table: one row per mode."""
    head = (
        f"{'mode':<14}{'p50 s':>8}{'p90 s':>8}{'p99 s':>8}{'max s':>8}"
        f"{'p50/SB':>8}{'p90/SB':>8}{'p99/SB':>8}{'max/SB':>8}"
        f"{'origin/S':>10}{'seeder/S':>10}{'drop%':>7}{'cpu%':>6}"
    )
    if idcs > 1:
        head += "  WAN in/S per remote IDC"
    lines = [head, "-" * len(head)]
    for s in summaries:
        line = f"{s['mode']:<14}"
        line += "".join(f"{_fmt(s[k], 1):>8}" for k in ("p50", "p90", "p99", "max"))
        line += "".join(f"{_fmt(s[k + '_ratio']):>8}" for k in ("p50", "p90", "p99", "max"))
        line += f"{_fmt(s['origin_ratio']):>10}{_fmt(s['seeder_ratio']):>10}"
        line += f"{_fmt(s['drop_percent'], 1):>7}{_fmt(s['cpu_percent'], 0):>6}"
        if idcs > 1:
            wan = s["wan_in_ratio"]
            line += "  " + " ".join(f"idc{i}:{_fmt(wan[i])}" for i in range(1, idcs))
        if "swarm_p50_ratio" in s:
            line += f"  (swarm p50/max {_fmt(s['swarm_p50_ratio'])}/{_fmt(s['swarm_max_ratio'])})"
        if s["failed"]:
            line += f"  ({s['failed']} failed)"
        lines.append(line)
    lines.append(
        f"S/B = {ideal:.2f} s. Targets for eagle: p50 <= {TARGETS['p50']}, "
        f"p99 <= {TARGETS['p99']}, origin <= {TARGETS['origin']}, "
        f"seeder <= {TARGETS['seeder']}"
        + (f", WAN per remote IDC <= {TARGETS['wan']}" if idcs > 1 else "")
        + " (x S or x S/B)."
    )
    return "\n".join(lines)


def single_table(single: dict[str, Any]) -> str:
    """The single-host figures."""
    d = single["direct_seconds"]
    return (
        f"single host (loopback, unshaped, median of {single['repeats']}): direct pull "
        f"{d:.2f} s; cold pull via agent {single['cold_seconds']:.2f} s = "
        f"{single['cold_ratio']:.2f} x direct (target <= 1.5); warm pull "
        f"{single['warm_seconds']:.2f} s = {single['warm_ratio']:.2f} x direct (target < 1)"
    )


def write_json(path: Path, document: dict[str, Any]) -> None:
    """Write the raw results (``ModeResult`` dataclasses included) as JSON."""

    def default(obj: object) -> object:
        if hasattr(obj, "__dataclass_fields__"):
            return asdict(obj)  # type: ignore[call-overload]
        if isinstance(obj, Path):
            return str(obj)
        raise TypeError(type(obj).__name__)

    def clean(obj: Any) -> Any:
        if isinstance(obj, float) and not math.isfinite(obj):
            return None
        if isinstance(obj, dict):
            return {str(k): clean(v) for k, v in obj.items()}
        if isinstance(obj, list | tuple):
            return [clean(v) for v in obj]
        return obj

    text = json.dumps(clean(json.loads(json.dumps(document, default=default))), indent=2)
    path.write_text(text + "\n")


def plot_cdf(path: Path, results: Sequence[ModeResult], ideal: float, title: str) -> None:
    """Completion-time CDF per mode, x as a multiple of S/B (log scale), S/B marked."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 4.5))
    for result in results:
        times = sorted(h.seconds / ideal for h in result.hosts if h.ok and h.seconds is not None)
        if not times:
            continue
        n = len(result.hosts)
        xs = [times[0]] + [t for t in times for _ in (0, 1)]
        ys = [0.0] + [y for i in range(len(times)) for y in (i / n, (i + 1) / n)]
        ax.plot(xs, ys, label=result.mode, linewidth=2)
    ax.axvline(1.0, color="black", linestyle="--", linewidth=1)
    ax.text(1.0, 0.02, " S/B", rotation=90, va="bottom")
    for name in ("p50", "p99"):
        ax.axvline(TARGETS[name], color="grey", linestyle=":", linewidth=1)
        ax.text(TARGETS[name], 0.98, f" {name} target", rotation=90, va="top", fontsize="small")
    ax.set_xscale("log")
    ticks = [1, 1.5, 2, 3, 5, 10, 20]
    ax.set_xticks(ticks, [f"{t:g}" for t in ticks])
    ax.set_xlabel(f"time to a complete pull / (S/B = {ideal:.1f} s)")
    ax.set_ylabel("fraction of hosts done")
    ax.set_ylim(0, 1.02)
    ax.set_title(title)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(loc="lower right")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def plot_links(path: Path, results: Sequence[ModeResult], bandwidth: float, infra: str) -> None:
    """Link use over time, one panel a mode: the mean and slowest host download, and the
    infra host's upload (origin or seeder), against the link rate."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    shown = [r for r in results if r.series.get("t")]
    if not shown:
        return
    fig, axes = plt.subplots(len(shown), 1, figsize=(8, 2.6 * len(shown)), squeeze=False)
    for ax, result in zip(axes[:, 0], shown, strict=True):
        series = result.series
        t = series["t"]
        hosts = [h for h in series["down"] if h != infra]
        mean = [sum(series["down"][h][i] for h in hosts) / len(hosts) for i in range(len(t))]
        low = [min(series["down"][h][i] for h in hosts) for i in range(len(t))]
        ax.plot(t, mean, label="host download, mean")
        ax.plot(t, low, label="host download, lowest", alpha=0.6)
        ax.plot(t, series["up"].get(infra, [0.0] * len(t)), label="infra upload")
        ax.axhline(bandwidth / 1e6, color="black", linestyle="--", linewidth=1)
        ax.set_title(result.mode)
        ax.set_ylabel("MB/s")
        ax.grid(True, alpha=0.3)
    axes[-1, 0].set_xlabel("seconds since the start")
    axes[0, 0].legend(loc="upper right", fontsize="small")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
