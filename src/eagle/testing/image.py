"""Container images built, pushed and pulled locally, with no internet.

:func:`build_oci_layout` writes a deterministic OCI image layout whose layers are
incompressible (so a layer's blob is about the size asked for); :func:`push_image` and
:func:`pull_image` move images with the real ``skopeo``, run in an environment cut off
from the host's ``/etc/containers`` and ``$HOME``.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import logging
import os
import random
import subprocess
import tarfile
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO, cast

log = logging.getLogger(__name__)

SKOPEO = "skopeo"
MANIFEST_MEDIA_TYPE = "application/vnd.oci.image.manifest.v1+json"
CONFIG_MEDIA_TYPE = "application/vnd.oci.image.config.v1+json"
LAYER_MEDIA_TYPE = "application/vnd.oci.image.layer.v1.tar+gzip"
_REF_NAME = "org.opencontainers.image.ref.name"
_CHUNK = 1 << 16  # random bytes are made in fixed chunks so output never depends on reads


@dataclass(frozen=True)
class BlobInfo:
    """A content-addressed blob: ``sha256:<hex>`` digest and size in bytes."""

    digest: str
    size: int

    @property
    def hex(self) -> str:
        """The digest without its ``sha256:`` prefix (skopeo's ``dir:`` file name)."""
        return self.digest.partition(":")[2]


@dataclass(frozen=True)
class ImageInfo:
    """What :func:`build_oci_layout` wrote: one image manifest, its config and layers."""

    layout_dir: Path
    tag: str
    manifest: BlobInfo
    config: BlobInfo
    layers: tuple[BlobInfo, ...]

    @property
    def manifest_digest(self) -> str:
        """The manifest's digest, as registries name the image by digest."""
        return self.manifest.digest

    @property
    def config_digest(self) -> str:
        """The image config blob's digest."""
        return self.config.digest

    @property
    def layer_digests(self) -> tuple[str, ...]:
        """Layer digests, base layer first."""
        return tuple(layer.digest for layer in self.layers)

    @property
    def blobs(self) -> tuple[BlobInfo, ...]:
        """Every blob a pull fetches from ``/blobs/``: the config, then the layers."""
        return (self.config, *self.layers)

    @property
    def total_blob_bytes(self) -> int:
        """Bytes of config and layers together (the manifest is not a blob)."""
        return sum(blob.size for blob in self.blobs)

    def blob_path(self, digest: str) -> Path:
        """Where the layout keeps the blob (or manifest) with this digest."""
        algorithm, _, hexpart = digest.partition(":")
        return self.layout_dir / "blobs" / algorithm / hexpart


class SkopeoError(RuntimeError):
    """skopeo exited with an error; the message carries its stderr."""


# -- building -------------------------------------------------------------------------------


class _RandomStream:
    """A readable stream of ``size`` pseudo-random bytes, the same for the same seed."""

    def __init__(self, seed: str, size: int) -> None:
        self._rng = random.Random(seed)
        self._left = size
        self._buffer = b""

    def read(self, n: int = -1) -> bytes:
        if n < 0:
            n = self._left + len(self._buffer)
        while len(self._buffer) < n and self._left > 0:
            chunk = min(_CHUNK, self._left)
            self._buffer += self._rng.randbytes(chunk)
            self._left -= chunk
        out, self._buffer = self._buffer[:n], self._buffer[n:]
        return out


class _HashingWriter:
    """Passes writes on to ``sink`` while hashing and counting them."""

    def __init__(self, sink: BinaryIO | gzip.GzipFile) -> None:
        self._sink = sink
        self.sha256 = hashlib.sha256()
        self.size = 0

    def write(self, data: bytes) -> int:
        self.sha256.update(data)
        self.size += len(data)
        self._sink.write(data)
        return len(data)

    def flush(self) -> None:
        self._sink.flush()


def _write_layer(blobs_dir: Path, seed: str, size: int, name: str) -> tuple[BlobInfo, str]:
    """Write one gzip'ed tar layer holding ``name``; return its blob and its diff_id."""
    fd, tmp_name = tempfile.mkstemp(prefix=".layer-", dir=blobs_dir)
    tmp = Path(tmp_name)
    try:
        with os.fdopen(fd, "wb") as raw:
            compressed = _HashingWriter(raw)
            # mtime=0 and no file name in the gzip header keep the blob deterministic;
            # level 1 because the payload is incompressible anyway.
            with gzip.GzipFile(fileobj=compressed, mode="wb", compresslevel=1, mtime=0) as gz:
                uncompressed = _HashingWriter(gz)
                # Stream mode ("w|") only ever calls write(), all _HashingWriter has.
                tar_sink = cast(BinaryIO, uncompressed)
                with tarfile.open(fileobj=tar_sink, mode="w|", format=tarfile.PAX_FORMAT) as tar:
                    info = tarfile.TarInfo(name)
                    info.size = size
                    info.mode = 0o644
                    info.mtime = 0
                    tar.addfile(info, _RandomStream(seed, size))
        blob = BlobInfo("sha256:" + compressed.sha256.hexdigest(), compressed.size)
        tmp.chmod(0o644)  # mkstemp's 0600 would hide the blob from other users' servers
        os.replace(tmp, blobs_dir / blob.hex)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return blob, "sha256:" + uncompressed.sha256.hexdigest()


def _write_json_blob(blobs_dir: Path, document: Mapping[str, Any]) -> BlobInfo:
    data = json.dumps(document, sort_keys=True, separators=(",", ":")).encode()
    blob = BlobInfo("sha256:" + hashlib.sha256(data).hexdigest(), len(data))
    (blobs_dir / blob.hex).write_bytes(data)
    return blob


def _write_manifest(blobs_dir: Path, config: BlobInfo, layers: Sequence[BlobInfo]) -> BlobInfo:
    """An OCI image manifest naming ``config`` and ``layers``, written as a blob."""
    return _write_json_blob(
        blobs_dir,
        {
            "schemaVersion": 2,
            "mediaType": MANIFEST_MEDIA_TYPE,
            "config": {
                "mediaType": CONFIG_MEDIA_TYPE,
                "digest": config.digest,
                "size": config.size,
            },
            "layers": [
                {"mediaType": LAYER_MEDIA_TYPE, "digest": layer.digest, "size": layer.size}
                for layer in layers
            ],
        },
    )


def build_oci_layout(
    directory: Path, layer_sizes: Sequence[int], seed: int = 0, tag: str = "latest"
) -> ImageInfo:
    """Write an OCI image layout in ``directory`` holding one image tagged ``tag``.

    Each size in ``layer_sizes`` becomes a gzip'ed tar layer holding one file of that
    many pseudo-random bytes; the same ``seed`` gives the same bytes and digests. Other
    tags already in the layout's ``index.json`` are kept, so one layout can hold several
    images (they share no layers unless seeds collide).
    """
    blobs_dir = directory / "blobs" / "sha256"
    blobs_dir.mkdir(parents=True, exist_ok=True)
    layers: list[BlobInfo] = []
    diff_ids: list[str] = []
    for index, size in enumerate(layer_sizes):
        if size < 0:
            raise ValueError(f"layer size must not be negative: {size}")
        blob, diff_id = _write_layer(
            blobs_dir, f"eagle-layer:{seed}:{index}", size, f"eagle/layer-{seed}-{index}.bin"
        )
        layers.append(blob)
        diff_ids.append(diff_id)

    config = _write_json_blob(
        blobs_dir,
        {
            "architecture": "amd64",
            "os": "linux",
            "config": {"Cmd": ["/bin/true"]},
            "rootfs": {"type": "layers", "diff_ids": diff_ids},
            "history": [{"created_by": f"eagle.testing layer {i}"} for i in range(len(layers))],
        },
    )
    manifest = _write_manifest(blobs_dir, config, layers)
    _add_to_index(directory, manifest, tag)
    info = ImageInfo(directory, tag, manifest, config, tuple(layers))
    log.info(
        "built image layout=%s tag=%s manifest=%s layers=%d bytes=%d",
        directory, tag, manifest.digest, len(layers), info.total_blob_bytes,
    )  # fmt: skip
    return info


INDEX_MEDIA_TYPE = "application/vnd.oci.image.index.v1+json"


@dataclass(frozen=True)
class IndexInfo:
    """What :func:`build_multiarch_layout` wrote: an image index over one image a platform."""

    layout_dir: Path
    tag: str
    index: BlobInfo
    images: dict[str, ImageInfo]  # "os/arch" -> that platform's image


def build_multiarch_layout(
    directory: Path,
    platforms: Sequence[str],
    layer_sizes: Sequence[int],
    seed: int = 0,
    tag: str = "latest",
) -> IndexInfo:
    """Write an OCI layout whose ``tag`` is an image index with one image per ``os/arch``.

    Each platform's image has its own layers (of ``layer_sizes``) and a config naming its
    platform; push it with ``push_image(..., all_platforms=True)``.
    """
    blobs_dir = directory / "blobs" / "sha256"
    blobs_dir.mkdir(parents=True, exist_ok=True)
    images: dict[str, ImageInfo] = {}
    entries = []
    for number, platform in enumerate(platforms):
        os_name, _, arch = platform.partition("/")
        layers: list[BlobInfo] = []
        diff_ids: list[str] = []
        for position, size in enumerate(layer_sizes):
            label = f"{seed}:{platform}:{position}"
            blob, diff_id = _write_layer(
                blobs_dir, f"eagle-layer:{label}", size, f"eagle/layer-{number}-{position}.bin"
            )
            layers.append(blob)
            diff_ids.append(diff_id)
        config = _write_json_blob(
            blobs_dir,
            {
                "architecture": arch,
                "os": os_name,
                "config": {"Cmd": ["/bin/true"]},
                "rootfs": {"type": "layers", "diff_ids": diff_ids},
            },
        )
        manifest = _write_manifest(blobs_dir, config, layers)
        images[platform] = ImageInfo(directory, tag, manifest, config, tuple(layers))
        entries.append(
            {
                "mediaType": MANIFEST_MEDIA_TYPE,
                "digest": manifest.digest,
                "size": manifest.size,
                "platform": {"architecture": arch, "os": os_name},
            }
        )
    index = _write_json_blob(
        blobs_dir, {"schemaVersion": 2, "mediaType": INDEX_MEDIA_TYPE, "manifests": entries}
    )
    _add_to_index(directory, index, tag, INDEX_MEDIA_TYPE)
    log.info("built image index layout=%s tag=%s platforms=%s", directory, tag, list(platforms))
    return IndexInfo(directory, tag, index, images)


def _add_to_index(
    directory: Path, manifest: BlobInfo, tag: str, media_type: str = MANIFEST_MEDIA_TYPE
) -> None:
    (directory / "oci-layout").write_text(json.dumps({"imageLayoutVersion": "1.0.0"}))
    index_path = directory / "index.json"
    index: dict[str, Any] = {"schemaVersion": 2, "manifests": []}
    if index_path.exists():
        index = json.loads(index_path.read_text())
    index["manifests"] = [
        entry
        for entry in index.get("manifests", [])
        if entry.get("annotations", {}).get(_REF_NAME) != tag
    ]
    index["manifests"].append(
        {
            "mediaType": media_type,
            "digest": manifest.digest,
            "size": manifest.size,
            "annotations": {_REF_NAME: tag},
        }
    )
    index_path.write_text(json.dumps(index, indent=2))


# -- moving with skopeo ---------------------------------------------------------------------


def skopeo(
    args: Sequence[str],
    *,
    env: Mapping[str, str] | None = None,
    timeout: float = 300.0,
) -> str:
    """Run ``skopeo ARGS`` cut off from the host's container configuration; return stdout.

    A temporary directory supplies an accept-anything signature policy, an empty
    registries.conf and registries.d, an empty auth file, HOME, XDG dirs and TMPDIR, so
    neither ``/etc/containers`` nor a read-only ``$HOME`` matter. ``env`` is added to the
    environment (for example ``HTTPS_PROXY``). Raise :class:`SkopeoError` on failure.
    """
    with tempfile.TemporaryDirectory(prefix="eagle-skopeo-") as tmp_name:
        tmp = Path(tmp_name)
        policy = tmp / "policy.json"
        policy.write_text(json.dumps({"default": [{"type": "insecureAcceptAnything"}]}))
        registries_conf = tmp / "registries.conf"
        registries_conf.write_text("")
        (tmp / "registries.d").mkdir()
        for sub in ("home", "run", "tmp"):
            (tmp / sub).mkdir()
        child_env = {
            key: value
            for key, value in os.environ.items()
            if not key.startswith(("CONTAINERS_", "REGISTRY_AUTH_FILE", "REGISTRIES_CONFIG"))
        }
        child_env.update(
            HOME=str(tmp / "home"),
            XDG_RUNTIME_DIR=str(tmp / "run"),
            XDG_CONFIG_HOME=str(tmp / "home" / ".config"),
            XDG_DATA_HOME=str(tmp / "home" / ".local" / "share"),
            TMPDIR=str(tmp / "tmp"),
            CONTAINERS_REGISTRIES_CONF=str(registries_conf),
            REGISTRY_AUTH_FILE=str(tmp / "auth.json"),
        )
        child_env.update(env or {})
        argv = [
            SKOPEO,
            "--policy", str(policy),
            "--registries.d", str(tmp / "registries.d"),
            "--tmpdir", str(tmp / "tmp"),
            *args,
        ]  # fmt: skip
        log.debug("running skopeo %s", _redacted(args))
        try:
            done = subprocess.run(
                argv, env=child_env, capture_output=True, text=True, timeout=timeout, check=False
            )
        except subprocess.TimeoutExpired as exc:
            raise SkopeoError(f"skopeo {_redacted(args)} timed out after {timeout:.0f}s") from exc
        if done.returncode != 0:
            raise SkopeoError(
                f"skopeo {_redacted(args)} failed ({done.returncode}): {done.stderr.strip()}"
            )
        return done.stdout


def _redacted(args: Sequence[str]) -> str:
    """The command line for messages, with passwords blanked out."""
    shown = list(args)
    for i, arg in enumerate(shown[:-1]):
        if arg in ("--src-creds", "--dest-creds", "--creds"):
            user = shown[i + 1].partition(":")[0]
            shown[i + 1] = f"{user}:***"
    return " ".join(shown)


def push_image(
    layout_dir: Path,
    registry: str,
    repo: str,
    tag: str,
    creds: str | None = None,
    *,
    tls_verify: bool = False,
    env: Mapping[str, str] | None = None,
    all_platforms: bool = False,
) -> None:
    """Copy ``oci:LAYOUT_DIR:TAG`` to ``docker://REGISTRY/REPO:TAG`` byte for byte.

    ``registry`` is ``HOST:PORT``; ``creds`` is ``USER:PASSWORD``. ``--preserve-digests``
    makes skopeo fail rather than re-compress or convert anything. ``all_platforms``
    copies every image of an index (``skopeo copy --all``), not just the host's.
    """
    args = [
        "copy", "--quiet", "--preserve-digests",
        f"--dest-tls-verify={str(tls_verify).lower()}",
    ]  # fmt: skip
    if all_platforms:
        args.append("--all")
    if creds is not None:
        args += ["--dest-creds", creds]
    args += [f"oci:{layout_dir}:{tag}", f"docker://{registry}/{repo}:{tag}"]
    skopeo(args, env=env)
    log.info("pushed image layout=%s to=%s/%s:%s", layout_dir, registry, repo, tag)


def pull_image(
    source: str,
    repo: str,
    tag: str,
    dest_dir: Path,
    tls_verify: bool = False,
    env: Mapping[str, str] | None = None,
    creds: str | None = None,
) -> dict[str, Path]:
    """Pull ``docker://SOURCE/REPO:TAG`` into ``dir:DEST_DIR``; map digest hex to blob file.

    ``source`` is ``HOST:PORT`` of an origin or of an agent acting as a mirror; ``tag``
    may also be ``@sha256:...`` to pull by digest. The map holds every blob file skopeo
    wrote (config and layers, named by hex digest), not ``manifest.json``.
    """
    reference = f"{repo}{tag}" if tag.startswith("@") else f"{repo}:{tag}"
    args = ["copy", "--quiet", f"--src-tls-verify={str(tls_verify).lower()}"]
    if creds is not None:
        args += ["--src-creds", creds]
    dest_dir.mkdir(parents=True, exist_ok=True)
    args += [f"docker://{source}/{reference}", f"dir:{dest_dir}"]
    skopeo(args, env=env)
    blobs = {
        path.name: path
        for path in dest_dir.iterdir()
        if len(path.name) == 64 and all(c in "0123456789abcdef" for c in path.name)
    }
    log.info("pulled image from=%s/%s blobs=%d dir=%s", source, reference, len(blobs), dest_dir)
    return blobs
