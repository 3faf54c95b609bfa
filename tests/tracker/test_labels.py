"""Location labels on announce URLs (eagle.p2p.labels) and the tracker reading them back."""

from __future__ import annotations

from urllib.parse import urlsplit

import pytest
from pydantic import BaseModel, ValidationError

from eagle.p2p.labels import Label, announce_labels, label_url
from eagle.tracker.announce import parse_announce
from eagle.tracker.config import TrackerConfig
from eagle.tracker.locations import Location

QUERY = (
    b"info_hash=aaaaaaaaaaaaaaaaaaaa&peer_id=bbbbbbbbbbbbbbbbbbbb&port=1"
    b"&uploaded=0&downloaded=0&left=0"
)


def test_announce_labels_leave_out_unset() -> None:
    assert announce_labels() == {}
    assert announce_labels(idc="fra1", rack=None, region="") == {"idc": "fra1"}
    assert announce_labels(region="eu", idc="fra1", rack="r1", seeder=True) == {
        "region": "eu",
        "idc": "fra1",
        "rack": "r1",
        "seeder": "1",
    }
    with pytest.raises(ValueError, match="is not 1-64 characters"):
        announce_labels(idc="bad label")


def test_label_url_appends_to_any_query() -> None:
    url = "http://t:7070/announce"
    assert label_url(url, {}) == url
    assert label_url(url, {"idc": "fra1"}) == url + "?idc=fra1"
    assert label_url(url + "?passkey=x", {"idc": "a", "seeder": "1"}) == (
        url + "?passkey=x&idc=a&seeder=1"
    )


def test_tracker_reads_what_the_client_writes() -> None:
    # A client appends its own parameters after ours, the way libtorrent does.
    labelled = label_url("http://t/announce", announce_labels(region="eu", idc="f.1", rack="r_2"))
    query = urlsplit(labelled).query.encode() + b"&" + QUERY
    announce = parse_announce(query, "127.0.0.1", TrackerConfig())
    assert announce.location == Location("eu", "f.1", "r_2")


def test_label_type_in_config_models() -> None:
    class Model(BaseModel):
        idc: Label | None = None

    assert Model(idc="fra1").idc == "fra1"
    with pytest.raises(ValidationError, match="is not 1-64 characters"):
        Model(idc="fra 1")
