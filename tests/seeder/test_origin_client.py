"""The origin client the seeder uses: auth per origin, redirects, retries, custom CAs.

Auth and TLS run against the real Docker Distribution; redirects and retries need an
origin that misbehaves on purpose, so small aiohttp servers play that part.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import asynccontextmanager
from pathlib import Path

import pytest
from aiohttp import web

from eagle.core.digest import Digest
from eagle.core.errors import OriginError, OriginStatus
from eagle.registry.auth import Challenge, OriginAuth, scope_for_path
from eagle.registry.client import OriginClient, OriginConfig, OriginSet, iter_body
from eagle.testing import BasicAuth, OriginRegistry, self_signed_tls
from eagle.testing.tokenauth import TokenServer
from eagle.utils.net import free_port

from .conftest import REPO, SeederFactory, random_blob, resolve, upload_blob

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@asynccontextmanager
async def serving(handler: Handler) -> AsyncIterator[str]:
    """An aiohttp server on a free loopback port answering every path with ``handler``."""
    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", handler)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        await runner.cleanup()


async def fetch(client: OriginClient, url: str, digest: Digest, credentials: bool = True) -> bytes:
    origin = client.origins.resolve(url)
    async with client.open_blob(origin, REPO, digest, credentials=credentials) as resp:
        return b"".join([chunk async for chunk in iter_body(resp)])


def client_for(config: OriginConfig, **options: object) -> OriginClient:
    return OriginClient(OriginSet([config]), 2.0, 10.0, auth=OriginAuth(), **options)  # type: ignore[arg-type]


# -- auth against a real registry -----------------------------------------------------------


@pytest.fixture(scope="module")
def htpasswd_origin(tmp_path_factory: pytest.TempPathFactory) -> Iterator[OriginRegistry]:
    auth = BasicAuth("puller", "s3cret-pass")
    with OriginRegistry(tmp_path_factory.mktemp("htpasswd-origin"), auth=auth) as registry:
        yield registry


async def test_basic_auth_with_configured_credentials(htpasswd_origin: OriginRegistry) -> None:
    data = random_blob(300_000)
    digest = upload_blob(htpasswd_origin, data)
    config = OriginConfig(url=htpasswd_origin.url, username="puller", password="s3cret-pass")
    client = client_for(config)
    try:
        assert await fetch(client, htpasswd_origin.url, digest) == data
        # Known to want Basic: the next request carries it up front (no second 401).
        assert await fetch(client, htpasswd_origin.url, digest) == data
    finally:
        await client.close()
    # The registry's access log (combined format) has the 401s its app log leaves out.
    # It writes a request's line just after the response, so give the last one a moment.
    ok_line = f'/blobs/{digest} HTTP/1.1" 200'
    deadline = time.monotonic() + 5
    log = htpasswd_origin.log_path.read_text()
    while log.count(ok_line) < 2 and time.monotonic() < deadline:
        await asyncio.sleep(0.05)
        log = htpasswd_origin.log_path.read_text()
    assert log.count(f'/blobs/{digest} HTTP/1.1" 401') == 1
    assert log.count(ok_line) == 2


async def test_missing_or_wrong_credentials_are_clear_401s(htpasswd_origin: OriginRegistry) -> None:
    digest = upload_blob(htpasswd_origin, random_blob(1000))
    for config in (
        OriginConfig(url=htpasswd_origin.url),
        OriginConfig(url=htpasswd_origin.url, username="puller", password="wrong"),
    ):
        client = client_for(config)
        try:
            with pytest.raises(OriginStatus) as caught:
                await fetch(client, htpasswd_origin.url, digest)
        finally:
            await client.close()
        assert caught.value.status == 401
        assert caught.value.code == "UNAUTHORIZED"
        assert "Basic" in caught.value.headers["WWW-Authenticate"]


async def test_seeder_pulls_from_an_htpasswd_origin(
    htpasswd_origin: OriginRegistry, seeder_factory: SeederFactory
) -> None:
    data = random_blob(500_000)
    digest = upload_blob(htpasswd_origin, data)
    seeder = await seeder_factory(htpasswd_origin)  # credentials from the origin's config
    await resolve(seeder, htpasswd_origin, digest)
    assert seeder.copies.blobs.path(digest).read_bytes() == data


async def test_client_credentials_are_passed_through_untouched(
    htpasswd_origin: OriginRegistry,
) -> None:
    # The agent forwards a client's own Authorization and must not add the configured one.
    digest = upload_blob(htpasswd_origin, random_blob(1000))
    config = OriginConfig(url=htpasswd_origin.url, username="puller", password="s3cret-pass")
    client = client_for(config)
    origin = client.origins.default
    try:
        headers = {"Authorization": BasicAuth("puller", "nope").header}
        with pytest.raises(OriginStatus):
            async with client.open_blob(origin, REPO, digest, headers, credentials=True):
                pass
    finally:
        await client.close()


# -- TLS with a custom CA -------------------------------------------------------------------


async def test_custom_ca_bundle_verifies_a_private_origin(tmp_path: Path) -> None:
    tls = self_signed_tls(tmp_path / "tls")
    with OriginRegistry(tmp_path / "origin", tls=tls) as registry:
        data = random_blob(10_000)
        digest = upload_blob(registry, data, ca=tls.certificate)
        trusted = client_for(OriginConfig(url=registry.url, ca_bundle=tls.certificate))
        untrusted = client_for(OriginConfig(url=registry.url))
        try:
            assert await fetch(trusted, registry.url, digest) == data
            with pytest.raises(OriginError, match="certificate"):
                await fetch(untrusted, registry.url, digest)
        finally:
            await trusted.close()
            await untrusted.close()


# -- redirects ------------------------------------------------------------------------------


async def test_redirect_to_object_storage_drops_authorization() -> None:
    data = random_blob(200_000)
    digest = Digest.of(data)
    seen_by_store: list[dict[str, str]] = []
    auth = BasicAuth("puller", "pw")

    async def store(request: web.Request) -> web.StreamResponse:
        seen_by_store.append(dict(request.headers))
        return web.Response(body=data)

    async with serving(store) as store_url:

        async def registry(request: web.Request) -> web.StreamResponse:
            if request.headers.get("Authorization") != auth.header:
                return web.Response(status=401, headers={"WWW-Authenticate": 'Basic realm="r"'})
            # Like Distribution on S3: a signed URL on another host for the blob bytes.
            raise web.HTTPTemporaryRedirect(f"{store_url}/bucket/blob?X-Amz-Signature=abc")

        async with serving(registry) as origin_url:
            config = OriginConfig(url=origin_url, username="puller", password="pw")
            client = client_for(config)
            try:
                assert await fetch(client, origin_url, digest) == data
            finally:
                await client.close()
    assert len(seen_by_store) == 1
    assert "Authorization" not in seen_by_store[0]


# -- retries --------------------------------------------------------------------------------


async def test_transient_errors_are_retried_with_backoff() -> None:
    data = random_blob(5000)
    digest = Digest.of(data)
    answers = [503, 429, 502, 200]
    calls: list[float] = []

    async def flaky(request: web.Request) -> web.StreamResponse:
        calls.append(time.monotonic())
        status = answers[min(len(calls) - 1, len(answers) - 1)]
        if status == 429:
            return web.Response(status=429, headers={"Retry-After": "0"})
        return web.Response(status=status, body=data if status == 200 else b"busy")

    async with serving(flaky) as url:
        client = client_for(OriginConfig(url=url), retries=3, backoff=0.05)
        try:
            assert await fetch(client, url, digest) == data
        finally:
            await client.close()
        assert len(calls) == 4
        assert calls[1] - calls[0] >= 0.03  # backed off

        calls.clear()
        impatient = client_for(OriginConfig(url=url), retries=0)
        try:
            with pytest.raises(OriginStatus) as caught:
                await fetch(impatient, url, digest)
        finally:
            await impatient.close()
        assert caught.value.status == 503 and len(calls) == 1


async def test_not_found_is_not_retried() -> None:
    calls = 0

    async def missing(request: web.Request) -> web.StreamResponse:
        nonlocal calls
        calls += 1
        return web.Response(status=404)

    async with serving(missing) as url:
        client = client_for(OriginConfig(url=url), retries=3, backoff=0.01)
        try:
            with pytest.raises(OriginStatus) as caught:
                await fetch(client, url, Digest.of(b"x"))
        finally:
            await client.close()
    assert caught.value.code == "BLOB_UNKNOWN" and calls == 1


async def test_unreachable_origin_is_retried_then_an_origin_error() -> None:
    url = f"http://127.0.0.1:{free_port()}"
    client = client_for(OriginConfig(url=url), retries=2, backoff=0.05)
    started = time.monotonic()
    try:
        with pytest.raises(OriginError, match="failed"):
            await fetch(client, url, Digest.of(b"x"))
    finally:
        await client.close()
    assert 0.05 < time.monotonic() - started < 5


# -- challenge parsing ----------------------------------------------------------------------


def test_challenges_and_scopes_parse() -> None:
    challenge = Challenge.parse(
        'Bearer realm="https://auth.example/token",service="registry.example",'
        'scope="repository:library/demo:pull"'
    )
    assert challenge is not None and challenge.scheme == "bearer"
    assert challenge.params == {
        "realm": "https://auth.example/token",
        "service": "registry.example",
        "scope": "repository:library/demo:pull",
    }
    assert Challenge.parse('Basic realm="x"') == Challenge("basic", {"realm": "x"})
    assert Challenge.parse("") is None
    assert scope_for_path(f"/v2/library/demo/blobs/{Digest.of(b'')}") == (
        "repository:library/demo:pull"
    )
    assert scope_for_path("/v2/") is None


# -- the Docker token flow against a registry with token auth -------------------------------


async def test_bearer_token_flow_against_a_token_auth_registry(tmp_path: Path) -> None:
    creds = BasicAuth("puller", "token-pass")
    async with TokenServer(tmp_path / "tokens", creds) as tokens:
        with OriginRegistry(tmp_path / "origin", auth_config=tokens.registry_auth()) as registry:
            data = random_blob(250_000)
            push = tokens.token("puller", f"repository:{REPO}:pull,push")
            digest = await asyncio.to_thread(
                upload_blob, registry, data, authorization=f"Bearer {push}"
            )
            tokens.requests = 0

            client = client_for(
                OriginConfig(url=registry.url, username="puller", password="token-pass")
            )
            try:
                assert await fetch(client, registry.url, digest) == data
                assert await fetch(client, registry.url, digest) == data
            finally:
                await client.close()
            assert tokens.requests == 1  # the token is cached for its scope

            for config in (
                OriginConfig(url=registry.url, username="puller", password="wrong"),
                OriginConfig(url=registry.url),  # anonymous: this token server says no
            ):
                refused = client_for(config)
                try:
                    with pytest.raises(OriginStatus, match="token server") as caught:
                        await fetch(refused, registry.url, digest)
                finally:
                    await refused.close()
                assert caught.value.status == 401
