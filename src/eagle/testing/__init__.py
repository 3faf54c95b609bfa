"""Real components for tests, the demo and benchmarks: an origin registry, images, processes.

Nothing here is a fake: :class:`OriginRegistry` is Docker Distribution, images move
with skopeo. Everything binds to loopback only.
"""

from __future__ import annotations

from eagle.testing.image import (
    BlobInfo,
    ImageInfo,
    IndexInfo,
    SkopeoError,
    build_multiarch_layout,
    build_oci_layout,
    pull_image,
    push_image,
    skopeo,
)
from eagle.testing.procs import ManagedProcess, http_get_status, log_tail, wait_http
from eagle.testing.registry import (
    BasicAuth,
    BlobRequest,
    OriginRegistry,
    TlsFiles,
    htpasswd_line,
    self_signed_tls,
)

__all__ = [
    "BasicAuth",
    "BlobInfo",
    "BlobRequest",
    "ImageInfo",
    "IndexInfo",
    "ManagedProcess",
    "OriginRegistry",
    "SkopeoError",
    "TlsFiles",
    "build_multiarch_layout",
    "build_oci_layout",
    "htpasswd_line",
    "http_get_status",
    "log_tail",
    "pull_image",
    "push_image",
    "self_signed_tls",
    "skopeo",
    "wait_http",
]
