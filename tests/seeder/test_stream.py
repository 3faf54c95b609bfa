"""``GET /v1/blob``: a cold blob streams to its first requester while the seeder fetches it.

Real origin registry (behind a rate-limited relay, so a fetch lasts long enough to act
during it), real storage, the seeder's real HTTP API.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from eagle.core.digest import Digest
from eagle.core.errors import UseSwarm
from eagle.core.metainfo import Metainfo, build_metainfo
from eagle.p2p.growing import GrowingBlob
from eagle.seeder.server import SeederServer
from eagle.seeder.streams import BlobStreams
from eagle.testing import OriginRegistry
from eagle.testing.slowlink import SlowLink

from .conftest import REPO, MiB, SeederFactory, random_blob, upload_blob


def sample(server: SeederServer, name: str, **labels: str) -> float:
    value = server.registry.get_sample_value(name, labels)
    return 0.0 if value is None else float(value)


def corrupt_in_origin(origin: OriginRegistry, digest: Digest, offset: int) -> None:
    """Flip a byte of the blob as the registry stores it: it then serves wrong bytes."""
    path = origin.directory / "data/docker/registry/v2/blobs/sha256" / digest.hex[:2]
    data = path / digest.hex / "data"
    raw = bytearray(data.read_bytes())
    raw[offset] ^= 0xFF
    data.write_bytes(bytes(raw))


async def start_fetch(http: aiohttp.ClientSession, seeder: SeederServer, query: Any) -> None:
    """Ask for the metainfo once, like an agent: the seeder starts fetching (202)."""
    params = {k: v for k, v in query.items() if k != "wait"}  # answer at once
    async with http.get(f"{seeder.url}/v1/metainfo", params=params) as resp:
        assert resp.status == 202, await resp.read()


async def fetched(http: aiohttp.ClientSession, seeder: SeederServer, query: Any) -> Metainfo:
    """The metainfo, once the seeder's fetch is over (it holds each request up to 5 s)."""
    async with asyncio.timeout(30):
        while True:
            params = {**query, "wait": 5}
            async with http.get(f"{seeder.url}/v1/metainfo", params=params) as resp:
                if resp.status == 200:
                    return Metainfo.from_bytes(await resp.read())
                assert resp.status == 202, await resp.read()


async def refusal(resp: aiohttp.ClientResponse) -> str:
    """The message of a 409 USE_SWARM answer (fails the test on anything else)."""
    body = await resp.json()
    assert resp.status == 409, body
    assert body["errors"][0]["code"] == "USE_SWARM", body
    return str(body["errors"][0]["message"])


async def test_a_cold_blob_streams_while_the_seeder_fetches_it(
    origin: OriginRegistry, seeder_factory: SeederFactory
) -> None:
    data = random_blob(4 * MiB)
    digest = upload_blob(origin, data)
    with SlowLink(origin.port, 4 * MiB) as link:  # about a second of fetching
        seeder = await seeder_factory(origin, origin_options={"url": link.url})
        query = {"origin": link.url, "repo": REPO, "digest": str(digest)}
        async with aiohttp.ClientSession() as http:
            await start_fetch(http, seeder, query)
            async with http.get(f"{seeder.url}/v1/blob", params={**query, "wait": 5}) as resp:
                assert resp.status == 200
                assert resp.content_length == len(data)
                assert resp.headers["Docker-Content-Digest"] == str(digest)
                body = await resp.content.readany()
                # Bytes arrive while the seeder still answers "fetching": a stream, not
                # a copy handed over at the end.
                async with http.get(f"{seeder.url}/v1/metainfo", params=query) as meta:
                    assert meta.status == 202
                body += await resp.read()
            assert body == data

            meta = await fetched(http, seeder, query)
            # Once seeded, the swarm is the way.
            async with http.get(f"{seeder.url}/v1/blob", params=query) as resp:
                assert "not being fetched" in await refusal(resp)

    assert meta.infohash == build_metainfo(digest, data).infohash
    assert origin.blob_gets(digest) == 1
    assert sample(seeder, "eagle_seeder_stream_bytes_total") == len(data)
    assert sample(seeder, "eagle_seeder_stream_requests_total", answer="granted") == 1
    assert sample(seeder, "eagle_seeder_stream_requests_total", answer="not_fetching") == 1


async def test_stream_slots_bound_the_streams_of_one_blob(
    origin: OriginRegistry, seeder_factory: SeederFactory
) -> None:
    data = random_blob(4 * MiB)
    digest = upload_blob(origin, data)
    with SlowLink(origin.port, 4 * MiB) as link:
        seeder = await seeder_factory(origin, origin_options={"url": link.url}, stream_slots=1)
        query = {"origin": link.url, "repo": REPO, "digest": str(digest), "wait": 5}
        async with aiohttp.ClientSession() as http:
            await start_fetch(http, seeder, query)
            async with http.get(f"{seeder.url}/v1/blob", params=query) as first:
                assert first.status == 200
                body = await first.content.readany()
                async with http.get(f"{seeder.url}/v1/blob", params=query) as second:
                    assert "slot" in await refusal(second)
                body += await first.read()
            assert body == data
            # The slot is free again once the first stream ended, but so is the fetch.
            await fetched(http, seeder, query)

    assert origin.blob_gets(digest) == 1
    assert sample(seeder, "eagle_seeder_stream_requests_total", answer="busy") == 1
    assert sample(seeder, "eagle_seeder_stream_bytes_total") == len(data)


async def test_stream_slots_zero_turns_streams_off(
    origin: OriginRegistry, seeder_factory: SeederFactory
) -> None:
    data = random_blob(MiB)
    digest = upload_blob(origin, data)
    seeder = await seeder_factory(origin, stream_slots=0)
    query = {"origin": origin.url, "repo": REPO, "digest": str(digest), "wait": 5}
    async with aiohttp.ClientSession() as http:
        await start_fetch(http, seeder, query)
        async with http.get(f"{seeder.url}/v1/blob", params=query) as resp:
            assert "stream-slots 0" in await refusal(resp)
        await fetched(http, seeder, query)
    assert sample(seeder, "eagle_seeder_stream_requests_total", answer="off") == 1
    assert sample(seeder, "eagle_seeder_stream_bytes_total") == 0


@pytest.mark.parametrize("where", ["last byte", "first byte"])
async def test_a_wrong_blob_from_the_origin_never_streams_complete(
    origin: OriginRegistry, seeder_factory: SeederFactory, where: str
) -> None:
    data = random_blob(2 * MiB)
    digest = upload_blob(origin, data)
    corrupt_in_origin(origin, digest, len(data) - 1 if where == "last byte" else 0)
    with SlowLink(origin.port, 4 * MiB) as link:
        seeder = await seeder_factory(origin, origin_options={"url": link.url})
        query = {"origin": link.url, "repo": REPO, "digest": str(digest), "wait": 5}
        got = bytearray()
        async with aiohttp.ClientSession() as http:
            await start_fetch(http, seeder, query)
            async with http.get(f"{seeder.url}/v1/blob", params=query) as resp:
                assert resp.status == 200
                # Everything but the held-back last byte, then a broken connection.
                with pytest.raises(aiohttp.ClientPayloadError):
                    async for chunk in resp.content.iter_any():
                        got += chunk
            async with http.get(f"{seeder.url}/v1/metainfo", params=query) as resp:
                assert resp.status == 502
                assert (await resp.json())["errors"][0]["code"] == "DIGEST_INVALID"

    assert len(got) == len(data) - 1
    assert seeder.copies.digests() == []


async def test_an_origin_failing_mid_fetch_breaks_the_stream(
    origin: OriginRegistry, seeder_factory: SeederFactory
) -> None:
    data = random_blob(4 * MiB)
    digest = upload_blob(origin, data)
    with SlowLink(origin.port, 4 * MiB) as link:
        seeder = await seeder_factory(origin, origin_options={"url": link.url})
        query = {"origin": link.url, "repo": REPO, "digest": str(digest), "wait": 5}
        async with aiohttp.ClientSession() as http:
            await start_fetch(http, seeder, query)
            async with http.get(f"{seeder.url}/v1/blob", params=query) as resp:
                assert resp.status == 200
                got = bytearray(await resp.content.readany())
                link.cut()  # the origin's connection drops half-way through the blob
                with pytest.raises(aiohttp.ClientPayloadError):
                    async for chunk in resp.content.iter_any():
                        got += chunk

    assert 0 < len(got) < len(data)
    assert data.startswith(bytes(got))
    assert seeder.copies.digests() == []


@pytest.mark.parametrize(
    ("query", "status", "code"),
    [
        ({"repo": REPO, "digest": "sha256:12"}, 400, "DIGEST_INVALID"),
        ({"repo": "Bad//Name", "digest": "sha256:" + "0" * 64}, 400, "NAME_INVALID"),
        ({"repo": REPO, "digest": "sha256:" + "0" * 64, "origin": None}, 400, "UNSUPPORTED"),
        (
            {"repo": REPO, "digest": "sha256:" + "0" * 64, "origin": "http://unknown:1"},
            403,
            "DENIED",
        ),
        ({"repo": REPO, "digest": "sha256:" + "0" * 64, "wait": "soon"}, 400, "UNSUPPORTED"),
        # Nothing known about it: no stream, the swarm (after /v1/metainfo) is the way.
        ({"repo": REPO, "digest": "sha256:" + "0" * 64}, 409, "USE_SWARM"),
    ],
)
async def test_bad_stream_requests_get_oci_errors(
    origin: OriginRegistry,
    seeder_factory: SeederFactory,
    query: dict[str, str | None],
    status: int,
    code: str,
) -> None:
    seeder = await seeder_factory(origin)
    params = {"origin": origin.url, **query}
    params = {k: v for k, v in params.items() if v is not None}
    async with (
        aiohttp.ClientSession() as http,
        http.get(f"{seeder.url}/v1/blob", params=params) as resp,
    ):
        assert resp.status == status
        assert resp.headers["Content-Type"] == "application/json"
        body = await resp.json()
    assert body["errors"][0]["code"] == code
    assert body["errors"][0]["message"]


async def test_a_stream_is_for_one_agent_only_and_revoked_when_another_asks(
    tmp_path: Path,
) -> None:
    streams = BlobStreams(slots=1)
    data = random_blob(1000)
    digest = Digest.of(data)
    streams.expect(digest)
    growing = GrowingBlob(digest, len(data), tmp_path)
    streams.publish(growing)

    async with streams.claim(digest, wait=0, agent="a") as grant:
        streams.note(digest, "a")  # the same agent asking again changes nothing
        assert not grant.revoked
        streams.note(digest, "b")  # another agent wants the blob: the swarm is the way
        assert grant.revoked
        with pytest.raises(UseSwarm, match="other agents"):
            async with streams.claim(digest, wait=0, agent="b"):
                pass
    # A fetch that ended with its stream is forgotten.
    streams.end(digest)
    with pytest.raises(UseSwarm, match="not being fetched"):
        async with streams.claim(digest, wait=0, agent="a"):
            pass
