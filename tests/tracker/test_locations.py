"""CIDR → location labels: most specific block wins, inheritance, bad files."""

from __future__ import annotations

from pathlib import Path

import pytest

from eagle.core.errors import ConfigError
from eagle.tracker.locations import UNKNOWN, Location, LocationMap


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "locations.yaml"
    path.write_text(text)
    return path


def test_most_specific_block_wins_and_inherits(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        """
10.0.0.0/8: {region: eu}
10.1.0.0/16: {idc: fra1}
10.1.2.0/24: {rack: r12}
10.1.3.0/24: {idc: fra2, rack: r1}
fd00:1::/48: {region: eu, idc: fra1}
0.0.0.0/0: {region: world}
""",
    )
    locations = LocationMap.load(path)
    assert locations.size == 6
    assert locations.lookup("10.1.2.7") == Location("eu", "fra1", "r12")
    assert locations.lookup("10.1.3.7") == Location("eu", "fra2", "r1")
    assert locations.lookup("10.1.9.9") == Location("eu", "fra1", "")
    assert locations.lookup("10.200.0.1") == Location("eu", "", "")
    assert locations.lookup("192.0.2.1") == Location("world", "", "")
    assert locations.lookup("fd00:1::5") == Location("eu", "fra1", "")
    assert locations.lookup("fd00:2::5") == UNKNOWN
    assert locations.lookup("not an ip") == UNKNOWN
    # Cached answers are the same answers.
    assert locations.lookup("10.1.2.7") == Location("eu", "fra1", "r12")


def test_empty_map_and_empty_file(tmp_path: Path) -> None:
    assert LocationMap().lookup("10.0.0.1") == UNKNOWN
    assert LocationMap.load(write(tmp_path, "")).lookup("10.0.0.1") == UNKNOWN


def test_labels_merge_over_a_base() -> None:
    announced = Location("", "fra1", "")
    assert announced.merged_over(Location("eu", "ams1", "r2")) == Location("eu", "fra1", "r2")
    assert Location.from_key(Location("a", "b", "c").key()) == Location("a", "b", "c")


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("10.0.0.0/33: {idc: a}", "is not a CIDR block"),
        ("nonsense: {idc: a}", "is not a CIDR block"),
        ("10.0.0.0/8: {datacenter: a}", "unknown label 'datacenter'"),
        ("10.0.0.0/8: {idc: 'a|b'}", "is not 1-64 characters"),
        ("10.0.0.0/8: fra1", "expected a mapping of labels"),
        ("10.0.0.0/8: {idc: a}\n10.0.0.1/8: {idc: b}", "listed twice"),
        ("- 10.0.0.0/8", "must map CIDR blocks to labels"),
        ("{{{", "cannot read locations file"),
    ],
)
def test_bad_files_name_the_problem(tmp_path: Path, text: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        LocationMap.load(write(tmp_path, text))


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read locations file"):
        LocationMap.load(tmp_path / "absent.yaml")
