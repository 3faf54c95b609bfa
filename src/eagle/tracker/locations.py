"""Where a peer is: location labels (region, IDC, rack) and the CIDR map that supplies them.

Agents and seeders put their labels on the announce URL (``?idc=…&rack=…``, see
:mod:`eagle.p2p.labels`). Stock BitTorrent clients cannot, so the tracker can also
map source addresses to labels with a YAML file of CIDR blocks::

    10.1.0.0/16: {region: eu, idc: fra1}
    10.1.2.0/24: {rack: r12}          # inherits region and idc from 10.1.0.0/16
    fd00:1::/48: {region: eu, idc: fra1}

The most specific block containing an address wins; a block inherits every label it
does not set from the blocks containing it. Labels an announce carries win over the
map's, label by label.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Mapping
from pathlib import Path
from typing import Any, NamedTuple

import yaml

from eagle.core.errors import ConfigError
from eagle.p2p.labels import LABEL_NAMES, check_label

# Lookups are cached by address; a tracker sees at most a few hundred thousand
# hosts, and clearing the cache when it fills keeps memory bounded for any input.
_CACHE_LIMIT = 65536


class Location(NamedTuple):
    """A peer's place in the network; an empty label means unknown.

    Peers whose labels are all empty form one location of their own: for the
    handout policy, "unknown" is one more IDC. A named tuple rather than a frozen
    dataclass because stores hash it several times per announce, and a tuple's
    hash and equality run in C.
    """

    region: str = ""
    idc: str = ""
    rack: str = ""

    def merged_over(self, base: Location) -> Location:
        """This location with every empty label taken from ``base``."""
        return Location(self.region or base.region, self.idc or base.idc, self.rack or base.rack)

    def key(self) -> str:
        """A compact text form, ``region|idc|rack``, that :meth:`from_key` reverses."""
        return f"{self.region}|{self.idc}|{self.rack}"

    @classmethod
    def from_key(cls, key: str) -> Location:
        """The location whose :meth:`key` is ``key``."""
        region, idc, rack = key.split("|")
        return cls(region, idc, rack)


UNKNOWN = Location()


def _parse_labels(cidr: str, raw: Any) -> Location:
    if not isinstance(raw, Mapping):
        raise ConfigError(f"locations: {cidr}: expected a mapping of labels, got {raw!r}")
    unknown = sorted(set(map(str, raw)) - set(LABEL_NAMES))
    if unknown:
        raise ConfigError(f"locations: {cidr}: unknown label {unknown[0]!r}")
    try:
        return Location(**{str(k): check_label(str(v)) for k, v in raw.items()})
    except ValueError as exc:
        raise ConfigError(f"locations: {cidr}: {exc}") from exc


class LocationMap:
    """Source address → :class:`Location`, by the most specific CIDR block containing it.

    Lookup is one dictionary probe per distinct prefix length in the map (at most
    33 for IPv4, 129 for IPv6), cached by address.
    """

    def __init__(self, blocks: Mapping[str, Location] | None = None) -> None:
        parsed: dict[ipaddress.IPv4Network | ipaddress.IPv6Network, Location] = {}
        for cidr, location in (blocks or {}).items():
            try:
                network = ipaddress.ip_network(cidr, strict=False)
            except ValueError as exc:
                raise ConfigError(f"locations: {cidr!r} is not a CIDR block") from exc
            if network in parsed:
                raise ConfigError(f"locations: {cidr!r} is listed twice")
            parsed[network] = location
        # Inheritance: merge each block over the blocks that contain it, widest first.
        self._tables: dict[int, dict[int, dict[int, Location]]] = {4: {}, 6: {}}
        for network, location in parsed.items():
            merged = location
            for other in sorted(parsed, key=lambda n: n.prefixlen, reverse=True):
                if (
                    other.version == network.version
                    and other.prefixlen < network.prefixlen
                    and network.subnet_of(other)  # type: ignore[arg-type]
                ):
                    merged = merged.merged_over(parsed[other])
            table = self._tables[network.version].setdefault(network.prefixlen, {})
            table[int(network.network_address)] = merged
        self._lengths = {
            version: sorted(tables, reverse=True) for version, tables in self._tables.items()
        }
        self._cache: dict[str, Location] = {}
        self.size = len(parsed)

    @classmethod
    def load(cls, path: Path) -> LocationMap:
        """Read the YAML map at ``path``; ConfigError naming the bad entry if it is invalid."""
        try:
            raw = yaml.safe_load(path.read_text()) or {}
        except (OSError, UnicodeDecodeError, yaml.YAMLError) as exc:
            raise ConfigError(f"cannot read locations file {path}: {exc}") from exc
        if not isinstance(raw, Mapping):
            raise ConfigError(f"locations file {path} must map CIDR blocks to labels")
        return cls({str(cidr): _parse_labels(str(cidr), labels) for cidr, labels in raw.items()})

    def lookup(self, ip: str) -> Location:
        """The labels of the most specific block holding ``ip``; :data:`UNKNOWN` if none."""
        cached = self._cache.get(ip)
        if cached is not None:
            return cached
        location = self._find(ip)
        if len(self._cache) >= _CACHE_LIMIT:
            self._cache.clear()
        self._cache[ip] = location
        return location

    def _find(self, ip: str) -> Location:
        if not self.size:
            return UNKNOWN
        try:
            address = ipaddress.ip_address(ip)
        except ValueError:
            return UNKNOWN
        bits = 32 if address.version == 4 else 128
        value = int(address)
        tables = self._tables[address.version]
        for length in self._lengths[address.version]:
            mask = ((1 << length) - 1) << (bits - length) if length else 0
            found = tables[length].get(value & mask)
            if found is not None:
                return found
        return UNKNOWN
