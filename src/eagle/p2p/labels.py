"""Location labels on announce URLs: how agents and seeders tell the tracker where they are.

A host's labels (``region``, ``idc``, ``rack``) and, for a dedicated seeder,
``seeder=1`` become extra query parameters of every tracker URL its engine
announces to::

    http://tracker:7070/announce?region=eu&idc=fra1&rack=r12

BitTorrent clients append their own parameters after an existing query string
(libtorrent adds ``&info_hash=…``), and Eagle's tracker reads these four names
(see :func:`eagle.tracker.announce.parse_announce`); other trackers ignore them.
This module is that contract, shared by both sides.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Annotated
from urllib.parse import quote

from pydantic import AfterValidator

LABEL_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")
LABEL_RULE = "1-64 characters of A-Z a-z 0-9 . _ -, starting with a letter or digit"
LABEL_NAMES = ("region", "idc", "rack")


def check_label(value: str) -> str:
    """``value`` if it is a valid label, else ValueError saying what a label may hold."""
    if not LABEL_PATTERN.fullmatch(value):
        raise ValueError(f"label {value[:70]!r} is not {LABEL_RULE}")
    return value


Label = Annotated[str, AfterValidator(check_label)]
"""A location label, as config models take it."""


def announce_labels(
    *,
    region: str | None = None,
    idc: str | None = None,
    rack: str | None = None,
    seeder: bool = False,
) -> dict[str, str]:
    """The query parameters a host adds to its announces; unset labels are left out."""
    params = {
        name: check_label(value)
        for name, value in (("region", region), ("idc", idc), ("rack", rack))
        if value
    }
    if seeder:
        params["seeder"] = "1"
    return params


def label_url(url: str, params: Mapping[str, str]) -> str:
    """``url`` with ``params`` appended to its query string (added if it has none)."""
    if not params:
        return url
    query = "&".join(f"{name}={quote(value, safe='')}" for name, value in params.items())
    separator = "&" if "?" in url else "?"
    return f"{url}{separator}{query}"
