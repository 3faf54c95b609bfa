"""What is particular to each backend and to choosing one: faults, config errors, lazy loading."""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from eagle.core.digest import Digest
from eagle.core.errors import ConfigError, StorageError
from eagle.storage import (
    NotFound,
    StorageConfig,
    StorageUnavailable,
    open_storage,
    register_backend,
)
from eagle.storage.fs import FsStorage
from eagle.storage.registry import BACKENDS, split_location
from eagle.storage.s3 import S3Storage
from eagle.testing.s3 import MotoS3
from eagle.utils.net import free_port

from .test_conformance import chunks_of, payload

MiB = 1 << 20


# -- choosing a backend ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("location", "expected"),
    [
        ("fs:/data/blobs", ("fs", "/data/blobs")),
        ("/data/blobs", ("fs", "/data/blobs")),
        ("s3://bucket/a/prefix", ("s3", "bucket/a/prefix")),
        ("s3://bucket", ("s3", "bucket")),
    ],
)
def test_locations_name_their_backend(location: str, expected: tuple[str, str]) -> None:
    assert split_location(location) == expected


@pytest.mark.parametrize("location", ["nonsense", "gcs://bucket", ":x"])
def test_bad_locations_are_config_errors(location: str) -> None:
    with pytest.raises(ConfigError, match="storage"):
        open_storage(StorageConfig(location=location))


def test_bad_bucket_name_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="bucket"):
        open_storage(StorageConfig(location="s3://Not_A_Bucket/x"))


def test_choosing_fs_does_not_import_the_s3_library() -> None:
    code = (
        "import sys\n"
        "from eagle.storage import StorageConfig, open_storage\n"
        "open_storage(StorageConfig(location='fs:/tmp/x'))\n"
        "print(any(m.split('.')[0] in ('aiobotocore', 'botocore') for m in sys.modules))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_backends_register_by_name(tmp_path: Path) -> None:
    register_backend("mine", "eagle.storage.fs:FsStorage")
    try:
        storage = open_storage(StorageConfig(location=f"mine:{tmp_path}"))
        assert isinstance(storage, FsStorage) and storage.root == tmp_path
    finally:
        del BACKENDS["mine"]
    register_backend("broken", "eagle.storage.fs:NoSuchClass")
    try:
        with pytest.raises(ConfigError, match="does not exist"):
            open_storage(StorageConfig(location="broken:/x"))
    finally:
        del BACKENDS["broken"]


# -- fs faults ------------------------------------------------------------------------------


@contextlib.contextmanager
def tiny_tmpfs(path: Path, size: str) -> Iterator[Path]:
    """A small tmpfs mounted at ``path`` (needs root), always unmounted afterwards."""
    path.mkdir(parents=True)
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)],
        capture_output=True,
        check=False,
    )
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {mounted.stderr.decode().strip()}")
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], check=False)


async def test_fs_full_is_a_clear_error_and_leaves_nothing(tmp_path: Path) -> None:
    if os.geteuid() != 0:
        pytest.skip("mounting a small file system needs root")
    with tiny_tmpfs(tmp_path / "small", "2m") as root:
        storage = FsStorage(root)
        await storage.start()
        data = payload(3 * MiB)
        digest = Digest.of(data)
        with pytest.raises(StorageError, match="storage full"):
            await storage.write(digest, chunks_of(data), len(data))
        with pytest.raises(NotFound):
            await storage.stat(digest)
        assert list(storage.tmp_dir.iterdir()) == []
        # Room is back: a blob that fits is stored.
        small = payload(100_000)
        await storage.write(Digest.of(small), chunks_of(small), len(small))


async def test_fs_unwritable_root_fails_at_start(tmp_path: Path) -> None:
    blocker = tmp_path / "not-a-dir"
    blocker.write_text("a file where the storage directory should be")
    with pytest.raises(StorageError, match="storage"):
        await FsStorage(blocker / "store").start()


# -- s3 faults ------------------------------------------------------------------------------


async def test_s3_missing_bucket_fails_at_start(moto_s3: MotoS3, no_aws_env: None) -> None:
    storage = S3Storage("no-such-bucket-here", "", moto_s3.options())
    with pytest.raises(StorageError, match="does not exist"):
        await storage.start()


async def test_s3_endpoint_down_is_unavailable(moto_s3: MotoS3, no_aws_env: None) -> None:
    # Start against a port nobody listens on: start() only warns, every call then fails
    # with StorageUnavailable (a seeder turns that into "ask someone else").
    dead = moto_s3.options(endpoint=f"http://127.0.0.1:{free_port()}", connect_timeout=0.5)
    storage = S3Storage("bucket", "p", dead)
    await storage.start()
    try:
        digest = Digest.of(b"x")
        with pytest.raises(StorageUnavailable, match="unreachable"):
            await storage.stat(digest)
        with pytest.raises(StorageUnavailable):
            await storage.write(digest, chunks_of(b"x"), 1)
    finally:
        await storage.close()


async def test_s3_missing_credentials_are_a_clear_error(
    moto_s3: MotoS3, no_aws_env: None, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # No key configured and none in the (emptied) environment or AWS files.
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "none"))
    storage = S3Storage(
        moto_s3.bucket(), "p", moto_s3.options(access_key_id=None, secret_access_key=None)
    )
    with pytest.raises(StorageError, match="credentials"):
        await storage.start()


async def test_fs_adopts_a_file_of_its_own_file_system_by_hard_link(tmp_path: Path) -> None:
    storage = FsStorage(tmp_path / "store")
    await storage.start()
    data = os.urandom(100_000)
    digest = Digest.of(data)
    local = tmp_path / "copy"
    local.write_bytes(data)

    assert storage.adopts_from(tmp_path)
    assert await storage.adopt(digest, local) is not None
    # One file on disk, two names: no second copy of the blob.
    assert storage.path(digest).stat().st_ino == local.stat().st_ino
    assert local.stat().st_nlink == 2


async def test_fs_declines_a_file_of_another_file_system(tmp_path: Path) -> None:
    storage = FsStorage(tmp_path / "store")
    await storage.start()
    data = os.urandom(1000)
    digest = Digest.of(data)
    with tempfile.TemporaryDirectory(dir="/dev/shm") as other:  # tmpfs, not tmp_path's disk
        local = Path(other) / "copy"
        local.write_bytes(data)
        assert not storage.adopts_from(Path(other))
        assert await storage.adopt(digest, local) is None
    with pytest.raises(NotFound):
        await storage.stat(digest)
    assert list(storage.tmp_dir.iterdir()) == []
