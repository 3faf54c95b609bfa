"""Digests (``sha256:<hex>``) and OCI repository names."""

from __future__ import annotations

import hashlib
import re

import pytest
from hypothesis import given
from hypothesis import strategies as st

from eagle.core.digest import MAX_NAME_LENGTH, Digest, check_repository
from eagle.core.errors import DigestInvalid, DigestMismatch, InvalidInput, NameInvalid

HEX = "a" * 64
EMPTY_SHA256 = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"

# The OCI distribution spec's grammar, written out again independently of the code under test.
OCI_NAME = re.compile(r"[a-z0-9]+((\.|_|__|-+)[a-z0-9]+)*(/[a-z0-9]+((\.|_|__|-+)[a-z0-9]+)*)*")


# --- Digest -------------------------------------------------------------------------------


def test_parse_valid_digest() -> None:
    digest = Digest.parse(f"sha256:{HEX}")
    assert digest.hex == HEX
    assert str(digest) == f"sha256:{HEX}"


@pytest.mark.parametrize(
    "text",
    [
        "",
        HEX,
        f"sha512:{HEX}",
        f"SHA256:{HEX}",
        f"md5:{HEX}",
        f"sha256:{HEX.upper()}",
        f"sha256:{HEX[:-1]}",
        f"sha256:{HEX}a",
        f"sha256:{HEX}\n",
        f" sha256:{HEX}",
        f"sha256:{HEX[:-1]}g",
        "sha256:",
        ":" + HEX,
        f"sha256::{HEX}",
    ],
)
def test_parse_rejects_malformed_digest(text: str) -> None:
    with pytest.raises(DigestInvalid):
        Digest.parse(text)


def test_digest_invalid_is_a_400_invalid_input() -> None:
    with pytest.raises(InvalidInput) as info:
        Digest.parse("nope")
    assert info.value.status == 400
    assert info.value.code == "DIGEST_INVALID"


def test_constructor_checks_hex() -> None:
    with pytest.raises(DigestInvalid):
        Digest("xyz")


def test_of_hashes_bytes() -> None:
    assert Digest.of(b"") == Digest(EMPTY_SHA256)
    assert Digest.of(b"abc").hex == hashlib.sha256(b"abc").hexdigest()


def test_digests_are_hashable_and_ordered() -> None:
    low, high = Digest("0" * 64), Digest("f" * 64)
    assert low < high
    assert len({low, Digest("0" * 64)}) == 1


def test_verify_accepts_matching_hasher() -> None:
    Digest.of(b"layer").verify(hashlib.sha256(b"layer"))


def test_verify_raises_mismatch_on_other_bytes() -> None:
    with pytest.raises(DigestMismatch) as info:
        Digest.of(b"layer").verify(hashlib.sha256(b"tampered"))
    assert str(Digest.of(b"layer")) in str(info.value)


@given(st.text())
def test_any_text_parses_and_round_trips_or_is_invalid(text: str) -> None:
    try:
        digest = Digest.parse(text)
    except DigestInvalid:
        return
    assert str(digest) == text
    assert Digest.parse(str(digest)) == digest


@given(st.binary())
def test_of_always_round_trips_through_text(data: bytes) -> None:
    digest = Digest.of(data)
    assert Digest.parse(str(digest)) == digest


# --- repository names ---------------------------------------------------------------------


@pytest.mark.parametrize(
    "name",
    ["library/ubuntu", "a/b-c/d_e", "x.y", "a", "a__b", "a--b", "0/1", "a" * MAX_NAME_LENGTH],
)
def test_check_repository_accepts_valid_names(name: str) -> None:
    assert check_repository(name) == name


@pytest.mark.parametrize(
    "name",
    [
        "",
        "..",
        "../etc",
        "a/../b",
        "a/./b",
        "/abs",
        "trailing/",
        "a//b",
        "Library/ubuntu",
        "a" * (MAX_NAME_LENGTH + 1),
        "a___b",
        ".a",
        "a.",
        "-a",
        "a b",
        "a\nb",
        "a\\b",
        "a:b",
        "a%2fb",
        "ü",
    ],
)
def test_check_repository_rejects_invalid_names(name: str) -> None:
    with pytest.raises(NameInvalid):
        check_repository(name)


@given(st.text(alphabet="ab0./_-A\\:", max_size=30) | st.text(max_size=30))
def test_accepted_names_are_safe(name: str) -> None:
    try:
        check_repository(name)
    except NameInvalid:
        return
    assert ".." not in name.split("/")
    assert "." not in name.split("/")
    assert not name.startswith("/")
    assert OCI_NAME.fullmatch(name)
    assert len(name) <= MAX_NAME_LENGTH


@given(st.from_regex(OCI_NAME, fullmatch=True))
def test_names_in_the_grammar_are_accepted(name: str) -> None:
    if len(name) <= MAX_NAME_LENGTH:
        assert check_repository(name) == name
    else:
        with pytest.raises(NameInvalid):
            check_repository(name)
