"""Content digests (``sha256:<hex>``) and OCI repository names: parsing and checking."""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass

from eagle.core.errors import DigestInvalid, DigestMismatch, NameInvalid

_HEX64 = re.compile(r"[0-9a-f]{64}")

# The OCI distribution spec's repository name grammar:
#   [a-z0-9]+((\.|_|__|-+)[a-z0-9]+)*(\/[a-z0-9]+((\.|_|__|-+)[a-z0-9]+)*)*
_COMPONENT = r"[a-z0-9]+(?:(?:\.|_|__|-+)[a-z0-9]+)*"
_NAME = re.compile(rf"{_COMPONENT}(?:/{_COMPONENT})*")
MAX_NAME_LENGTH = 255


@dataclass(frozen=True, order=True)
class Digest:
    """A sha256 content digest. Other algorithms are refused: every blob Eagle moves is sha256."""

    hex: str

    def __post_init__(self) -> None:
        if not _HEX64.fullmatch(self.hex):
            raise DigestInvalid(f"not a sha256 hex digest: {self.hex!r}")

    @classmethod
    def parse(cls, text: str) -> Digest:
        """Parse ``sha256:<64 lowercase hex>``; raise :class:`DigestInvalid` otherwise."""
        algorithm, sep, hexpart = text.partition(":")
        if not sep or algorithm != "sha256":
            raise DigestInvalid(f"unsupported or malformed digest: {text[:100]!r}")
        return cls(hexpart)

    @classmethod
    def of(cls, data: bytes) -> Digest:
        return cls(hashlib.sha256(data).hexdigest())

    def __str__(self) -> str:
        return f"sha256:{self.hex}"

    def verify(self, hasher: hashlib._Hash) -> None:
        """Raise :class:`DigestMismatch` unless ``hasher`` (a sha256) produced this digest."""
        got = hasher.hexdigest()
        if got != self.hex:
            raise DigestMismatch(f"expected {self} but the bytes hash to sha256:{got}")


def check_repository(name: str) -> str:
    """Return ``name`` if it is a valid OCI repository name, else raise :class:`NameInvalid`.

    The grammar already excludes ``..``, empty components, leading slashes and
    upper case, so a checked name is safe to put into a URL path.
    """
    if len(name) > MAX_NAME_LENGTH or not _NAME.fullmatch(name):
        raise NameInvalid(f"invalid repository name: {name[:100]!r}")
    return name
