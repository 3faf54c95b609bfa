"""One host's timed pull in a benchmark: wait at the barrier, pull, report.

The orchestrator starts this inside a host's namespace. Protocol on stdio: print
``ready``, wait for a line ``go``, run the job, print one JSON line holding the
monotonic start and end times. CLOCK_MONOTONIC is the same clock in every network
namespace, so the orchestrator compares these times across hosts.

    python -m bench.hostrun pull --source HOST:PORT --repo R --tag T --dest DIR
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import time
from pathlib import Path

from eagle.testing import SkopeoError, skopeo


def wait_for_go() -> float:
    """Tell the orchestrator we are ready; block until it says go; return the time then."""
    print("ready", flush=True)
    line = sys.stdin.readline()
    if line.strip() != "go":
        raise SystemExit(f"expected 'go' on stdin, got {line!r}")
    return time.monotonic()


def report(result: dict[str, object]) -> None:
    """The one JSON result line the orchestrator waits for."""
    print(json.dumps(result), flush=True)


def _pull(args: argparse.Namespace) -> None:
    dest = Path(args.dest)
    started = wait_for_go()
    result: dict[str, object] = {"start": started}
    try:
        dest.mkdir(parents=True, exist_ok=True)
        source = f"docker://{args.source}/{args.repo}:{args.tag}"
        skopeo(
            ["copy", "--quiet", "--src-tls-verify=false", source, f"dir:{dest}"],
            timeout=args.timeout,
        )
        blobs = [p for p in dest.iterdir() if len(p.name) == 64]
        result.update(ok=True, blobs=len(blobs), bytes=sum(p.stat().st_size for p in blobs))
    except (SkopeoError, OSError) as exc:
        result.update(ok=False, error=str(exc)[-2000:])
    result["end"] = time.monotonic()
    report(result)
    if not args.keep:
        shutil.rmtree(dest, ignore_errors=True)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.hostrun", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    pull = sub.add_parser("pull", help="skopeo copy docker://SOURCE/REPO:TAG dir:DEST")
    pull.add_argument("--source", required=True, help="HOST:PORT of a registry or an agent")
    pull.add_argument("--repo", required=True)
    pull.add_argument("--tag", required=True)
    pull.add_argument("--dest", required=True)
    pull.add_argument("--timeout", type=float, default=900.0)
    pull.add_argument("--keep", action="store_true", help="keep the pulled blobs")
    args = parser.parse_args(argv)
    if args.command == "pull":
        _pull(args)


if __name__ == "__main__":
    main()
