"""The OCI distribution pull API (``/v2/...``) as routes over a blob source and an origin.

Pure request checking lives here too: names, references and digests are
validated before anything is fetched or forwarded.
"""

from __future__ import annotations

import re

from eagle.core.digest import Digest
from eagle.core.errors import InvalidInput

API_VERSION_HEADER = {"Docker-Distribution-API-Version": "registry/2.0"}
_TAG = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}")
MAX_MANIFEST_BYTES = 16 * 1024 * 1024
# Response headers of the origin a client needs to see, for manifests and tags.
PASS_RESPONSE_HEADERS = (
    "Content-Type",
    "Docker-Content-Digest",
    "WWW-Authenticate",
    "ETag",
    "Link",
    "Docker-Distribution-API-Version",
    "Content-Length",
)


def check_reference(reference: str) -> str:
    """A tag or a digest; anything else is ``MANIFEST_INVALID``-worthy input."""
    if reference.startswith("sha256:"):
        return str(Digest.parse(reference))
    if not _TAG.fullmatch(reference):
        err = InvalidInput(f"invalid tag or digest: {reference[:100]!r}")
        err.code = "TAG_INVALID"
        raise err
    return reference
