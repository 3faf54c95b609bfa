"""The swarm benchmark: N hosts in network namespaces, direct vs plain libtorrent vs Eagle.

    sudo python -m bench.swarm                      # make bench: 12 hosts, 100 MiB, 10 MB/s
    sudo python -m bench.swarm --hosts 6 --layer-size 20M --modes eagle --no-single
    sudo python -m bench.swarm --idcs 2 --wan-bandwidth 10MB/s

Every mode uses the same image, links and barrier start. Prints a table and writes
``swarm.json`` (raw per-host results, counters, configuration) and ``swarm.png``
(completion-time CDF) to ``--out``. Needs root (namespaces and tc).
"""

from __future__ import annotations

import argparse
import datetime
import logging
import os
import platform
import re
import shlex
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import libtorrent as lt

from bench.modes import REPO, TAG, Bench, ModeResult, cli_supports, run_direct, run_eagle, run_plain
from bench.report import plot_cdf, plot_links, single_table, summarise, table, write_json
from bench.testbed import REPO_ROOT, SwarmSpec, SwarmTestbed
from eagle.testing import build_oci_layout, push_image
from eagle.testing.netns import remove_stale
from eagle.utils.net import parse_size

log = logging.getLogger("bench.swarm")

MODES = ("direct", "plain", "eagle", "eagle-random", "lt-eagle")
DEFAULT_MODES = "direct,plain,eagle"
_RATE = re.compile(r"^\s*([0-9.]+)\s*([kmgt]?)(i?)(b|bit|bps)?(/s)?\s*$", re.IGNORECASE)


def parse_rate(text: str) -> int:
    """``10MB/s`` → 10_000_000 bytes/s. SI prefixes (KiB etc. binary); ``80mbit`` is bits."""
    match = _RATE.match(text)
    if match is None:
        raise argparse.ArgumentTypeError(f"expected a rate like 10MB/s or 80mbit, got {text!r}")
    number, prefix, binary, unit, _ = match.groups()
    base = 1024 if binary else 1000
    scale = base ** " kmgt".index(prefix.lower() or " ")
    value = float(number) * scale
    if unit and unit.lower() == "bit":
        value /= 8
    if value <= 0:
        raise argparse.ArgumentTypeError(f"rate must be positive: {text!r}")
    return int(value)


def _size(text: str) -> int:
    try:
        return parse_size(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m bench.swarm",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--hosts", type=int, default=12, help="agent hosts (default 12)")
    p.add_argument(
        "--layer-size",
        type=_size,
        default=parse_size("100M"),
        help="size of the big layer (default 100M = 100 MiB)",
    )
    p.add_argument(
        "--small-layers",
        type=int,
        default=2,
        help="small layers (1 MiB, 64 KiB, ...) besides the big one (default 2)",
    )
    p.add_argument(
        "--host-bandwidth",
        type=parse_rate,
        default=parse_rate("10MB/s"),
        help="every host link, each way (default 10MB/s)",
    )
    p.add_argument(
        "--origin-bandwidth",
        type=parse_rate,
        default=None,
        help="the origin's upload (default: --host-bandwidth)",
    )
    p.add_argument(
        "--seeder-bandwidth",
        type=parse_rate,
        default=None,
        help="the seeder's upload (default: --host-bandwidth, the hard case)",
    )
    p.add_argument("--idcs", type=int, default=1, help="data centres, hosts split evenly")
    p.add_argument(
        "--wan-bandwidth",
        type=parse_rate,
        default=None,
        help="each IDC's WAN link, each way (default: --host-bandwidth)",
    )
    p.add_argument("--burst", type=_size, default=32 * 1024, help="tbf burst (default 32K)")
    p.add_argument(
        "--queue-ms",
        type=float,
        default=50.0,
        help="shaper queue, in ms of traffic at the link rate (default 50)",
    )
    p.add_argument(
        "--modes",
        default=DEFAULT_MODES,
        help=f"comma-separated, from {', '.join(MODES)} (default {DEFAULT_MODES}; "
        "eagle-random is added with --idcs > 1)",
    )
    p.add_argument("--repeat", type=int, default=1, help="runs of each mode (default 1)")
    p.add_argument(
        "--cold-seeder",
        action="store_true",
        help="eagle: do not let the seeder fetch the blobs before the start",
    )
    p.add_argument(
        "--single",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="single-host figures: cold and warm pull vs direct (default on)",
    )
    p.add_argument("--single-repeats", type=int, default=3)
    p.add_argument(
        "--timeout",
        type=float,
        default=None,
        help="seconds a mode may take (default: from the sizes)",
    )
    p.add_argument(
        "--out", type=Path, default=None, help="results directory (default out/bench/<time>)"
    )
    p.add_argument(
        "--workdir",
        type=Path,
        default=None,
        help="scratch directory for blobs and pulls (default: a temporary one)",
    )
    p.add_argument("--prefix", default=None, help="namespace prefix (default eglb-<pid>-)")
    p.add_argument(
        "--cleanup-stale",
        action="store_true",
        help="delete namespaces left by killed runs (eglb-<dead pid>-*) and exit",
    )
    p.add_argument("--seed", type=int, default=6, help="image content seed")
    p.add_argument("-v", "--verbose", action="store_true")
    return p


def _modes(args: argparse.Namespace) -> list[str]:
    modes = [m.strip() for m in args.modes.split(",") if m.strip()]
    unknown = [m for m in modes if m not in MODES]
    if unknown:
        raise SystemExit(f"bench.swarm: unknown mode(s) {unknown}; choose from {MODES}")
    if args.idcs > 1 and "eagle" in modes and "eagle-random" not in modes:
        modes.append("eagle-random")
    return modes


def _layer_sizes(args: argparse.Namespace) -> list[int]:
    small = [max(1024, (1 << 20) >> (4 * i)) for i in range(args.small_layers)]
    return [args.layer_size, *small]


def run(args: argparse.Namespace) -> dict[str, Any]:
    modes = _modes(args)
    host_bw = args.host_bandwidth
    spec = SwarmSpec(
        hosts=args.hosts,
        idcs=args.idcs,
        host_bandwidth=host_bw,
        origin_bandwidth=args.origin_bandwidth or host_bw,
        seeder_bandwidth=args.seeder_bandwidth or host_bw,
        wan_bandwidth=args.wan_bandwidth or host_bw,
        burst=args.burst,
        queue_ms=args.queue_ms,
        prefix=args.prefix,
    )
    stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
    out: Path = args.out or REPO_ROOT / "out" / "bench" / stamp
    out.mkdir(parents=True, exist_ok=True)
    scratch = Path(tempfile.mkdtemp(prefix="eagle-bench-", dir=args.workdir))
    try:
        return _run(args, modes, spec, out, scratch)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def _run(
    args: argparse.Namespace, modes: list[str], spec: SwarmSpec, out: Path, scratch: Path
) -> dict[str, Any]:
    started = time.monotonic()
    load = os.getloadavg()
    if load[0] > 0.5 * (os.cpu_count() or 1):
        log.warning("machine busy before the start (load %.1f): figures will be noisy", load[0])
    image = build_oci_layout(scratch / "layout", _layer_sizes(args), args.seed, TAG)
    size = image.total_blob_bytes
    ideal = size / spec.host_bandwidth
    timeout = args.timeout or max(120.0, 4 * spec.hosts * size / spec.origin_bandwidth + 60)
    results: list[ModeResult] = []
    single: dict[str, Any] | None = None
    with SwarmTestbed(spec, scratch) as tb:
        with tb.infra.entered():
            push_image(image.layout_dir, tb.origin.host, REPO, TAG)
        bench = Bench(tb, image, scratch, out / "logs", timeout, seeder_warm=not args.cold_seeder)
        for _ in range(args.repeat):
            for mode in modes:
                log.info("mode start mode=%s", mode)
                if mode == "direct":
                    result = run_direct(bench)
                elif mode == "plain":
                    result = run_plain(bench)
                elif mode == "lt-eagle":
                    result = run_plain(bench, profile="eagle")
                elif mode == "eagle-random":
                    if not cli_supports("tracker", "--policy"):
                        log.warning("tracker has no --policy: skipping eagle-random")
                        continue
                    result = run_eagle(bench, "eagle-random", ["--policy", "random"])
                else:
                    result = run_eagle(bench)
                summary = summarise(result, size, ideal, spec.idcs)
                log.info(
                    "mode done mode=%s p50=%.2f p99=%.2f",
                    mode,
                    summary["p50_ratio"],
                    summary["p99_ratio"],
                )
                results.append(result)
        if args.single:
            from bench.single import single_host

            single = single_host(bench, args.single_repeats)
    summaries = [summarise(r, size, ideal, spec.idcs) for r in results]
    document = {
        "date": datetime.datetime.now().astimezone().isoformat(timespec="seconds"),
        "command": "python -m bench.swarm " + shlex.join(sys.argv[1:]),
        "machine": {
            "kernel": platform.release(),
            "cpus": os.cpu_count(),
            "python": platform.python_version(),
            "libtorrent": lt.__version__,
            "load_before": load,
        },
        "spec": spec,
        "image": {"bytes": size, "blobs": [b.size for b in image.blobs]},
        "ideal_seconds": ideal,
        "wall_seconds": time.monotonic() - started,
        "summaries": summaries,
        "single_host": single,
        "results": results,
    }
    text = table(summaries, ideal, spec.idcs)
    if single is not None:
        text += "\n" + single_table(single)
    print(text)
    (out / "table.txt").write_text(text + "\n")
    write_json(out / "swarm.json", document)
    title = f"{spec.hosts} hosts, {size / 2**20:.0f} MiB, {spec.host_bandwidth / 1e6:g} MB/s"
    plot_cdf(out / "swarm.png", results, ideal, title)
    plot_links(out / "swarm-links.png", results, spec.host_bandwidth, "infra")
    print(f"results: {out}/swarm.json {out}/swarm.png ({document['wall_seconds']:.0f} s)")
    return document


def main(argv: list[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s %(message)s",
    )
    if not args.verbose:
        for noisy in ("eagle.testing.procs", "eagle.testing.netns", "eagle.testing.image"):
            logging.getLogger(noisy).setLevel(logging.WARNING)
    if args.cleanup_stale:
        print("removed:", " ".join(remove_stale()) or "nothing")
        return
    if os.geteuid() != 0:
        raise SystemExit("bench.swarm: needs root (network namespaces and tc)")
    run(args)


if __name__ == "__main__":
    main()
