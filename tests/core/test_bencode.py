"""Bencoding (BEP 3): encoding, strict decoding, and the round trip between them."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from eagle.core.bencode import BencodeError, bdecode, bencode

# What bdecode can return: ints, byte strings, lists, and dicts with byte-string keys.
values = st.recursive(
    st.integers() | st.binary(max_size=20),
    lambda children: (
        st.lists(children, max_size=5)
        | st.dictionaries(st.binary(max_size=8), children, max_size=5)
    ),
    max_leaves=25,
)


@pytest.mark.parametrize(
    ("value", "encoded"),
    [
        (0, b"i0e"),
        (42, b"i42e"),
        (-7, b"i-7e"),
        (b"", b"0:"),
        (b"spam", b"4:spam"),
        ("spam", b"4:spam"),
        ("é", b"2:\xc3\xa9"),
        ([], b"le"),
        ([1, b"a"], b"li1e1:ae"),
        ((1, 2), b"li1ei2ee"),
        ({}, b"de"),
        ({"b": 1, "a": b"x"}, b"d1:a1:x1:bi1ee"),
        ({b"cow": b"moo", b"spam": b"eggs"}, b"d3:cow3:moo4:spam4:eggse"),
        ({"spam": ["a", "b"]}, b"d4:spaml1:a1:bee"),
    ],
)
def test_known_vectors(value: object, encoded: bytes) -> None:
    assert bencode(value) == encoded


def test_dict_keys_sorted_as_raw_bytes() -> None:
    encoded = bencode({b"b": 0, b"ab": 0, b"a": 0, b"B": 0, b"\xff": 0})
    assert encoded == b"d1:Bi0e1:ai0e2:abi0e1:bi0e1:\xffi0ee"


def test_str_and_bytes_keys_sort_together() -> None:
    assert bencode({"b": 1, b"a": 2}) == b"d1:ai2e1:bi1ee"


def test_encoding_is_independent_of_insertion_order() -> None:
    assert bencode({"x": 1, "y": 2, "z": 3}) == bencode({"z": 3, "x": 1, "y": 2})


@pytest.mark.parametrize("value", [True, False, 1.5, None, {1, 2}, object()])
def test_rejects_unencodable_values(value: object) -> None:
    with pytest.raises(TypeError):
        bencode(value)


def test_rejects_booleans_nested_in_containers() -> None:
    with pytest.raises(TypeError):
        bencode({"private": True})


def test_rejects_non_string_dict_keys() -> None:
    with pytest.raises(TypeError):
        bencode({1: b"x"})


@pytest.mark.parametrize(
    ("encoded", "value"),
    [
        (b"i0e", 0),
        (b"i-12e", -12),
        (b"0:", b""),
        (b"4:spam", b"spam"),
        (b"le", []),
        (b"l4:spami3ee", [b"spam", 3]),
        (b"de", {}),
        (b"d3:cow3:moo4:spam4:eggse", {b"cow": b"moo", b"spam": b"eggs"}),
        (b"d1:ald1:bleeee", {b"a": [{b"b": []}]}),
    ],
)
def test_decodes_known_vectors(encoded: bytes, value: object) -> None:
    assert bdecode(encoded) == value


@pytest.mark.parametrize(
    "garbage",
    [
        b"",
        b"x",
        b"i",
        b"ie",
        b"i-e",
        b"i-0e",
        b"i03e",
        b"i-03e",
        b"i+1e",
        b"i 1e",
        b"i1 e",
        b"i1_0e",
        b"i1.5e",
        b"i12",
        b"5:abc",
        b"01:a",
        b"1_0:aaaaaaaaaa",
        b"-1:a",
        b"4spam",
        b"l",
        b"li1e",
        b"d",
        b"d1:a",
        b"d1:ai1e",
        b"di1ei2ee",
        b"dlei1ee",
        b"d1:bi1e1:ai2ee",
        b"d1:ai1e1:ai2ee",
        b"i1ei2e",
        b"4:spamX",
        b"e",
    ],
)
def test_bdecode_rejects_malformed_input(garbage: bytes) -> None:
    with pytest.raises(BencodeError):
        bdecode(garbage)


def test_bdecode_rejects_deep_nesting_with_bencode_error() -> None:
    with pytest.raises(BencodeError):
        bdecode(b"l" * 100_000 + b"e" * 100_000)


def test_bencode_error_is_a_value_error() -> None:
    assert issubclass(BencodeError, ValueError)


@given(values)
def test_round_trip(value: object) -> None:
    assert bdecode(bencode(value)) == value


@given(values)
def test_encoding_is_canonical(value: object) -> None:
    encoded = bencode(value)
    assert bencode(bdecode(encoded)) == encoded


@given(st.binary())
def test_bdecode_of_arbitrary_bytes_returns_or_raises_bencode_error(data: bytes) -> None:
    try:
        value = bdecode(data)
    except BencodeError:
        return
    assert bencode(value) == data


@given(st.text(alphabet="ilde0123456789:-", max_size=40).map(str.encode))
def test_bdecode_of_bencode_like_bytes_is_strict(data: bytes) -> None:
    try:
        value = bdecode(data)
    except BencodeError:
        return
    assert bencode(value) == data
