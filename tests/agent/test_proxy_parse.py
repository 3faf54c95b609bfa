"""Proxy request parsing and interception rules: pure functions, no sockets."""

from __future__ import annotations

import pytest

from eagle.agent.proxy import (
    ProxyRules,
    ProxyTarget,
    origin_for,
    parse_absolute,
    parse_authority,
    parse_connect,
    refuse_local,
)
from eagle.core.errors import InvalidInput, NotAllowed
from eagle.registry.client import OriginSet


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("registry.example.com:443", ("registry.example.com", 443)),
        ("Registry.Example.COM:5000", ("registry.example.com", 5000)),
        ("10.1.2.3:5000", ("10.1.2.3", 5000)),
        ("[2001:db8::1]:443", ("2001:db8::1", 443)),
        ("my_registry:80", ("my_registry", 80)),
    ],
)
def test_authorities_parse(text: str, expected: tuple[str, int]) -> None:
    assert parse_authority(text) == expected


@pytest.mark.parametrize(
    "text",
    [
        "registry.example.com", "host:0", "host:65536", "host:-1", "host:1a", "[::1:443",
        "[10.0.0.1]:443", "bad host:443", "ho$t:443", ":443", "a..b:443", "[::1]x",
    ],
)  # fmt: skip
def test_malformed_authorities_are_invalid_input(text: str) -> None:
    with pytest.raises(InvalidInput):
        parse_authority(text)


def test_default_port_applies_only_when_given() -> None:
    assert parse_authority("example.com", 80) == ("example.com", 80)


def test_connect_line() -> None:
    target = parse_connect(b"CONNECT r.example:443 HTTP/1.1\r\nHost: r.example:443")
    assert target == ProxyTarget("https", "r.example", 443)
    assert target.url == "https://r.example:443"
    for bad in (b"CONNECT r.example:443", b"CONNECT  r:443 HTTP/1.1", b"CONNECT r:443 HTTP/2"):
        with pytest.raises(InvalidInput):
            parse_connect(bad)


def test_absolute_form() -> None:
    target, path = parse_absolute("http://r.example:5000/v2/a/manifests/x?n=1")
    assert target == ProxyTarget("http", "r.example", 5000)
    assert path == "/v2/a/manifests/x?n=1"
    assert parse_absolute("http://r.example")[0].port == 80
    assert parse_absolute("http://r.example")[1] == "/"
    for bad in ("https://r/x", "ftp://r/x", "http://u:p@r/x", "gopher://r"):
        with pytest.raises(InvalidInput):
            parse_absolute(bad)


def test_rules_default_to_the_configured_origins() -> None:
    origins = OriginSet(["https://registry.example.com", "http://10.0.0.5:5000"])
    rules = ProxyRules([], origins)
    assert rules.intercepts(ProxyTarget("https", "registry.example.com", 443))
    assert not rules.intercepts(ProxyTarget("https", "registry.example.com", 8443))
    assert rules.intercepts(ProxyTarget("http", "10.0.0.5", 5000))
    assert not rules.intercepts(ProxyTarget("https", "10.0.0.5", 5000))
    assert not rules.intercepts(ProxyTarget("https", "auth.example.com", 443))


def test_rules_match_host_or_host_and_port_in_full() -> None:
    origins = OriginSet(["https://registry.example.com"])
    rules = ProxyRules([r".*\.example\.com", r"other:5000"], origins)
    assert rules.intercepts(ProxyTarget("https", "registry.example.com", 443))
    assert rules.intercepts(ProxyTarget("https", "other", 5000))
    assert not rules.intercepts(ProxyTarget("https", "other", 443))
    assert not rules.intercepts(ProxyTarget("https", "example.com.evil", 443))


def test_origin_lookup_needs_scheme_host_and_port() -> None:
    origins = OriginSet(["https://registry.example.com", "http://10.0.0.5:5000"])
    assert origin_for(origins, ProxyTarget("https", "registry.example.com", 443)) is not None
    assert origin_for(origins, ProxyTarget("http", "registry.example.com", 443)) is None
    assert origin_for(origins, ProxyTarget("http", "10.0.0.5", 5000)) is not None


@pytest.mark.parametrize("address", ["127.0.0.1", "::1", "0.0.0.0", "169.254.169.254", "fe80::1"])
def test_local_destinations_are_refused(address: str) -> None:
    with pytest.raises(NotAllowed):
        refuse_local(address)


def test_ordinary_destinations_pass() -> None:
    refuse_local("198.18.0.2")
    refuse_local("2001:db8::1")
