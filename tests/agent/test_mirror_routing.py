"""Which origin a mirror request is for: ns query, eagle-ns/ prefix, Docker Hub names."""

from __future__ import annotations

import pytest
from aiohttp import web
from aiohttp.test_utils import make_mocked_request

from eagle.agent.routing import (
    ORIGIN_KEY,
    origin_slug,
    registry_name,
    resolve_ns,
    resolve_slug,
    target_of,
)
from eagle.core.errors import NameInvalid, NotAllowed
from eagle.registry.client import OriginSet

ORIGINS = OriginSet(
    ["https://registry-1.docker.io", "http://127.0.0.1:5001", "https://[2001:db8::1]:443"]
)


def request(path: str, name: str) -> web.Request:
    req = make_mocked_request("GET", path)
    req.match_info.update({"name": name})  # what the router would have matched
    return req


def test_slugs_and_registry_names() -> None:
    hub, local, v6 = ORIGINS.origins
    assert origin_slug(local) == "127.0.0.1-5001"
    assert origin_slug(v6) == "2001-db8--1-443"
    assert registry_name(hub) == "docker.io"
    assert registry_name(local) == "127.0.0.1:5001"
    assert resolve_slug(ORIGINS, "127.0.0.1-5001") is local
    with pytest.raises(NotAllowed):
        resolve_slug(ORIGINS, "elsewhere")


def test_ns_names_hosts_and_docker_hub() -> None:
    hub, local, _ = ORIGINS.origins
    assert resolve_ns(ORIGINS, None) is hub
    assert resolve_ns(ORIGINS, "docker.io") is hub
    assert resolve_ns(ORIGINS, "127.0.0.1:5001") is local
    with pytest.raises(NotAllowed):
        resolve_ns(ORIGINS, "quay.io")


def test_targets() -> None:
    hub, local, _ = ORIGINS.origins
    assert target_of(request("/v2/library/x/blobs/d", "library/x"), ORIGINS) == (hub, "library/x")
    req = request("/v2/library/x/blobs/d?ns=127.0.0.1:5001", "library/x")
    assert target_of(req, ORIGINS) == (local, "library/x")
    req = request(
        "/v2/eagle-ns/127.0.0.1-5001/library/x/blobs/d", "eagle-ns/127.0.0.1-5001/library/x"
    )
    assert target_of(req, ORIGINS) == (local, "library/x")
    fixed = request("/v2/library/x/blobs/d?ns=docker.io", "library/x")
    fixed[ORIGIN_KEY] = local  # set by the proxy: the CONNECT target wins over ns
    assert target_of(fixed, ORIGINS) == (local, "library/x")
    with pytest.raises(NameInvalid):
        target_of(request("/v2/eagle-ns/127.0.0.1-5001/", "eagle-ns/127.0.0.1-5001/"), ORIGINS)
