"""``GET /v1/swarms``: the operator's JSON view of the swarms a tracker knows.

Query: ``info_hash=<40 hex>`` (repeatable) for given swarms, else the most
recently announced ones; ``limit=N`` (default 100, at most 1000). Answer::

    {"policy": "default",
     "swarms": {"<info hash hex>": {
         "complete": 3, "incomplete": 5, "seeders": 1, "downloaded": 2,
         "idcs": {"fra1": {"complete": 2, "seeders": 1, "incomplete": 5},
                  "": {"complete": 1, "seeders": 0, "incomplete": 0}}}}}

``complete`` counts every peer holding the whole blob, dedicated seeders included;
``seeders`` the dedicated seeders alone. The IDC ``""`` holds peers without an IDC label.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from urllib.parse import unquote_to_bytes

from eagle.core.errors import InvalidInput
from eagle.tracker.handout import Kind
from eagle.tracker.peerstore import SwarmStats

DEFAULT_LIMIT = 100
MAX_LIMIT = 1000


class SwarmQueryInvalid(InvalidInput):
    """The query of ``/v1/swarms`` is malformed."""


def parse_swarms_query(query: bytes) -> tuple[list[bytes], int]:
    """``(info hashes, limit)`` from the raw query; SwarmQueryInvalid if malformed."""
    if len(query) > 8192:
        raise SwarmQueryInvalid("query string too long")
    hashes: dict[bytes, None] = {}
    limit = DEFAULT_LIMIT
    for piece in query.split(b"&"):
        if not piece:
            continue
        key, _, raw = piece.partition(b"=")
        value = unquote_to_bytes(raw).decode("latin-1")
        if key == b"info_hash":
            try:
                info_hash = bytes.fromhex(value)
            except ValueError:
                info_hash = b""
            if len(info_hash) != 20:
                raise SwarmQueryInvalid(f"info_hash must be 40 hex digits, got {value[:50]!r}")
            hashes[info_hash] = None
        elif key == b"limit":
            if not (value.isascii() and value.isdigit()) or not 1 <= int(value) <= MAX_LIMIT:
                raise SwarmQueryInvalid(f"limit must be between 1 and {MAX_LIMIT}")
            limit = int(value)
        else:
            raise SwarmQueryInvalid(f"unknown parameter {key[:50].decode('latin-1')!r}")
    if len(hashes) > MAX_LIMIT:
        raise SwarmQueryInvalid(f"at most {MAX_LIMIT} info_hash")
    return list(hashes), limit


def swarm_dict(stats: SwarmStats) -> dict[str, object]:
    """One swarm as the JSON view shows it."""
    idcs: dict[str, dict[str, int]] = {}
    for location, counts in stats.locations.items():
        entry = idcs.setdefault(location.idc, {"complete": 0, "seeders": 0, "incomplete": 0})
        entry["complete"] += counts[Kind.COMPLETE] + counts[Kind.SEEDER]
        entry["seeders"] += counts[Kind.SEEDER]
        entry["incomplete"] += counts[Kind.INCOMPLETE]
    return {
        "complete": stats.complete,
        "incomplete": stats.incomplete,
        "seeders": sum(entry["seeders"] for entry in idcs.values()),
        "downloaded": stats.downloaded,
        "idcs": dict(sorted(idcs.items())),
    }


def swarms_json(stats: Sequence[SwarmStats], policy: str) -> bytes:
    """The ``/v1/swarms`` body for ``stats``."""
    body = {"policy": policy, "swarms": {s.info_hash.hex(): swarm_dict(s) for s in stats}}
    return json.dumps(body, indent=1).encode() + b"\n"
