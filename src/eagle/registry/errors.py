"""OCI error JSON: the one place where :class:`EagleError` becomes a registry API answer."""

from __future__ import annotations

import json
import logging
from collections.abc import Awaitable, Callable

from aiohttp import web

from eagle.core.errors import EagleError

log = logging.getLogger(__name__)

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def oci_error(
    status: int, code: str, message: str, headers: dict[str, str] | None = None
) -> web.Response:
    """An error response in the distribution spec's format."""
    body = {"errors": [{"code": code, "message": message, "detail": None}]}
    return web.Response(
        status=status,
        body=json.dumps(body).encode(),
        headers={
            **(headers or {}),
            "Content-Type": "application/json",
            "Docker-Distribution-API-Version": "registry/2.0",
        },
    )


@web.middleware
async def oci_error_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Turn Eagle errors and unexpected failures into OCI error JSON; never a bare 500 page."""
    try:
        return await handler(request)
    except EagleError as exc:
        log.info(
            "request failed method=%s path=%s status=%d code=%s error=%s",
            request.method,
            request.path,
            exc.status,
            exc.code,
            exc,
        )
        return oci_error(exc.status, exc.code, str(exc), exc.headers)
    except web.HTTPException as exc:
        if exc.status == 404:
            return oci_error(404, "NOT_FOUND", "no such route")
        if exc.status == 405:
            return oci_error(405, "UNSUPPORTED", "this mirror serves pulls only")
        raise
    except Exception:
        log.exception("unexpected error method=%s path=%s", request.method, request.path)
        return oci_error(500, "UNKNOWN", "internal error")
