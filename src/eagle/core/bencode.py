"""Bencoding (BEP 3): the encoding of torrents and tracker responses."""

from __future__ import annotations

import re


class BencodeError(ValueError):
    """The input is not valid bencoding."""


# Canonical forms only (BEP 3): no sign but '-', no leading zeros, no "-0", ASCII digits.
_INTEGER = re.compile(rb"0|-?[1-9][0-9]*")
_LENGTH = re.compile(rb"0|[1-9][0-9]*")


def bencode(value: object) -> bytes:
    """Encode ints, bytes, str (as UTF-8), lists and dicts (keys sorted as raw bytes)."""
    out: list[bytes] = []
    _encode(value, out)
    return b"".join(out)


def _encode(value: object, out: list[bytes]) -> None:
    if isinstance(value, bool):
        raise TypeError("bencode has no booleans")
    if isinstance(value, int):
        out.append(b"i%de" % value)
    elif isinstance(value, bytes):
        out.append(b"%d:" % len(value))
        out.append(value)
    elif isinstance(value, str):
        _encode(value.encode(), out)
    elif isinstance(value, list | tuple):
        out.append(b"l")
        for item in value:
            _encode(item, out)
        out.append(b"e")
    elif isinstance(value, dict):
        items = [(k.encode() if isinstance(k, str) else k, v) for k, v in value.items()]
        out.append(b"d")
        for key, item in sorted(items, key=lambda kv: kv[0]):
            if not isinstance(key, bytes):
                raise TypeError(f"bencode dict keys must be str or bytes, not {type(key)}")
            _encode(key, out)
            _encode(item, out)
        out.append(b"e")
    else:
        raise TypeError(f"cannot bencode {type(value).__name__}")


def bdecode(data: bytes) -> object:
    """Decode one complete bencoded value; trailing bytes are an error."""
    try:
        value, end = _decode(data, 0)
    except (IndexError, ValueError) as exc:
        raise BencodeError(str(exc) or "truncated input") from exc
    except RecursionError as exc:
        raise BencodeError("nested too deeply") from exc
    if end != len(data):
        raise BencodeError(f"trailing data at offset {end}")
    return value


def _decode(data: bytes, i: int) -> tuple[object, int]:
    lead = data[i : i + 1]
    if lead == b"i":
        end = data.index(b"e", i)
        text = data[i + 1 : end]
        if not _INTEGER.fullmatch(text):
            raise BencodeError(f"bad integer at offset {i}")
        return int(text), end + 1
    if lead == b"l":
        items: list[object] = []
        i += 1
        while data[i : i + 1] != b"e":
            item, i = _decode(data, i)
            items.append(item)
        return items, i + 1
    if lead == b"d":
        result: dict[bytes, object] = {}
        i += 1
        previous: bytes | None = None
        while data[i : i + 1] != b"e":
            key, i = _decode(data, i)
            if not isinstance(key, bytes):
                raise BencodeError("dict key is not a byte string")
            if previous is not None and key <= previous:
                raise BencodeError(f"dict keys not sorted or repeated at offset {i}")
            previous = key
            result[key], i = _decode(data, i)
        return result, i + 1
    if lead.isdigit():
        colon = data.index(b":", i)
        if not _LENGTH.fullmatch(data[i:colon]):
            raise BencodeError(f"bad string length at offset {i}")
        length = int(data[i:colon])
        start = colon + 1
        if start + length > len(data):
            raise BencodeError("string runs past the end")
        return data[start : start + length], start + length
    raise BencodeError(f"unexpected byte {lead!r} at offset {i}")
