"""Which origin and repository a registry API request is for.

Runtimes name the upstream registry of a mirror request in different ways:

* containerd appends ``?ns=<registry host>`` (``docker.io`` for Docker Hub);
* podman and skopeo (``registries.conf`` mirrors) cannot add a query, but a mirror
  location may carry a path, so ``AGENT/eagle-ns/<origin slug>`` prefixes the
  repository with ``eagle-ns/<slug>/``; the slug is the origin's ``host[:port]``
  with ``:`` written as ``-`` (repository names cannot hold a colon);
* Docker's ``registry-mirrors`` only ever mirror Docker Hub and send neither: such
  requests go to the default (first) origin;
* in proxy mode the origin is the host the client connected to, fixed by the proxy
  before routing (:data:`ORIGIN_KEY`).
"""

from __future__ import annotations

from aiohttp import web

from eagle.core.digest import check_repository
from eagle.core.errors import NotAllowed
from eagle.registry.client import Origin, OriginSet

NS_PREFIX = "eagle-ns"
ORIGIN_KEY = web.RequestKey("eagle.origin", Origin)
"""Request key under which the proxy stores the :class:`Origin` a request must go to."""

# containerd and registries.conf call Docker Hub "docker.io"; its API lives elsewhere.
DOCKER_HUB = "docker.io"
DOCKER_HUB_API_HOSTS = ("registry-1.docker.io", "index.docker.io", DOCKER_HUB)


def origin_slug(origin: Origin) -> str:
    """The origin's name inside a repository path: ``host[:port]`` with ``-`` for ``:``."""
    return origin.host.replace("[", "").replace("]", "").replace(":", "-")


def registry_name(origin: Origin) -> str:
    """The name runtimes give the origin in image references (``docker.io`` for Hub)."""
    return DOCKER_HUB if origin.host in DOCKER_HUB_API_HOSTS else origin.host


def resolve_ns(origins: OriginSet, ns: str | None) -> Origin:
    """The origin named by containerd's ``ns`` query (the default one when absent)."""
    try:
        return origins.resolve(ns)
    except NotAllowed:
        if ns == DOCKER_HUB:
            for origin in origins.origins:
                if origin.host in DOCKER_HUB_API_HOSTS:
                    return origin
        raise


def resolve_slug(origins: OriginSet, slug: str) -> Origin:
    """The configured origin whose :func:`origin_slug` is ``slug``."""
    for origin in origins.origins:
        if origin_slug(origin) == slug:
            return origin
    raise NotAllowed(f"no configured origin is called {slug[:100]!r} in {NS_PREFIX}/")


def target_of(request: web.Request, origins: OriginSet) -> tuple[Origin, str]:
    """``(origin, repository)`` of a ``/v2/<name>/...`` request; names are checked."""
    name: str = request.match_info["name"]
    fixed = request.get(ORIGIN_KEY)
    if fixed is not None:
        return fixed, check_repository(name)
    head, _, rest = name.partition("/")
    if head == NS_PREFIX:
        slug, _, repo = rest.partition("/")
        return resolve_slug(origins, slug), check_repository(repo)
    return resolve_ns(origins, request.query.get("ns")), check_repository(name)
