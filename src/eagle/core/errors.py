"""The exception tree of Eagle.

Every error Eagle raises on purpose is an :class:`EagleError`. Errors from the
libraries we wrap (aiohttp, libtorrent, the file system) are converted where
they enter, with ``raise ... from exc``; wire formats are produced from this
tree in exactly one place per protocol (``registry.errors`` for OCI JSON,
``tracker.server`` for bencoded failures).

    EagleError
    ├── InvalidInput               the caller sent something malformed        (400)
    │   ├── DigestInvalid          not ``sha256:<64 hex>``
    │   ├── NameInvalid            not an OCI repository name
    │   └── AnnounceInvalid        a tracker announce we cannot use
    ├── NotAllowed                 e.g. an origin that is not configured      (403)
    ├── BlobUnknown                the origin has no such blob                (404)
    ├── DigestMismatch             bytes did not hash to the digest asked for (502)
    ├── OriginError                the origin failed or could not be reached  (502)
    │   └── OriginStatus           the origin answered with an error status
    ├── PeerError                  p2p could not deliver (always recoverable)
    │   ├── SeederUnavailable      no seeder gave us metainfo
    │   ├── SwarmStalled           the swarm made no progress for too long
    │   └── UseSwarm               a seeder will not stream a blob over HTTP  (409)
    ├── StorageError               local or remote storage failed             (500)
    └── ConfigError                configuration rejected at start-up
"""

from __future__ import annotations


class EagleError(Exception):
    """Root of every error Eagle raises on purpose.

    ``headers`` are passed on with the wire error (e.g. an origin's
    ``WWW-Authenticate``, so a client can authenticate and retry).
    """

    status: int = 500
    code: str = "UNKNOWN"
    headers: dict[str, str] = {}


class InvalidInput(EagleError):
    status = 400
    code = "UNSUPPORTED"


class DigestInvalid(InvalidInput):
    code = "DIGEST_INVALID"


class NameInvalid(InvalidInput):
    code = "NAME_INVALID"


class AnnounceInvalid(InvalidInput):
    code = "ANNOUNCE_INVALID"


class NotAllowed(EagleError):
    status = 403
    code = "DENIED"


class BlobUnknown(EagleError):
    status = 404
    code = "BLOB_UNKNOWN"


class DigestMismatch(EagleError):
    status = 502
    code = "DIGEST_INVALID"


class OriginError(EagleError):
    status = 502
    code = "UNAVAILABLE"


class OriginStatus(OriginError):
    """The origin answered, with a status we pass on as our own."""

    def __init__(self, message: str, status: int, headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.headers = headers or {}
        if status == 404:
            self.code = "BLOB_UNKNOWN"
        elif status in (401, 403):
            self.code = "DENIED" if status == 403 else "UNAUTHORIZED"


class PeerError(EagleError):
    status = 503
    code = "UNAVAILABLE"


class SeederUnavailable(PeerError):
    pass


class SwarmStalled(PeerError):
    pass


class UseSwarm(PeerError):
    """A seeder declines to stream a blob over HTTP: it is seeded already, not being
    fetched, or every stream slot is taken. The blob comes from the swarm instead."""

    status = 409
    code = "USE_SWARM"


class StorageError(EagleError):
    status = 500
    code = "UNKNOWN"


class ConfigError(EagleError):
    """Raised at start-up; the message names the offending key."""
