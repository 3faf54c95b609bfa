"""Image manifests and indexes: their media types and the blobs an image is made of."""

from __future__ import annotations

import json
from typing import Any

from eagle.core.digest import Digest
from eagle.core.errors import OriginError

INDEX_TYPES = (
    "application/vnd.oci.image.index.v1+json",
    "application/vnd.docker.distribution.manifest.list.v2+json",
)
IMAGE_TYPES = (
    "application/vnd.oci.image.manifest.v1+json",
    "application/vnd.docker.distribution.manifest.v2+json",
)
ACCEPT = ", ".join(INDEX_TYPES + IMAGE_TYPES)


def blobs_of(manifest: dict[str, Any]) -> list[tuple[Digest, int]]:
    """Config and layers of an image manifest: (digest, size).

    Foreign layers (those with ``urls``) are left out: clients fetch them from those
    URLs, never from the registry.
    """
    out = []
    try:
        for entry in [manifest["config"], *manifest.get("layers", [])]:
            if entry.get("urls"):
                continue
            out.append((Digest.parse(entry["digest"]), int(entry["size"])))
    except (AttributeError, KeyError, TypeError, ValueError) as exc:
        raise OriginError(f"malformed image manifest: {exc!r}") from exc
    return out


def image_manifest(body: bytes, content_type: str) -> dict[str, Any] | None:
    """The parsed document if ``body`` is a single-image manifest, else None (an index,
    another media type, or not JSON)."""
    media_type = content_type.split(";")[0].strip()
    if media_type not in IMAGE_TYPES and media_type not in ("", "application/json"):
        return None
    try:
        doc = json.loads(body)
    except ValueError:
        return None
    if not isinstance(doc, dict):
        return None
    return doc if str(doc.get("mediaType") or media_type) in IMAGE_TYPES else None
