"""The Eagle CA: `eagle ca init`, loading, and leaf certificates real TLS clients accept."""

from __future__ import annotations

import asyncio
import ssl
import stat
import subprocess
import sys
from pathlib import Path

import pytest
from cryptography import x509

from eagle.ca import CaFiles, CertificateAuthority, LeafContexts, init_ca
from eagle.core.errors import ConfigError


def test_init_writes_a_ca_with_a_private_key_and_refuses_to_overwrite(tmp_path: Path) -> None:
    files = init_ca(tmp_path / "ca", common_name="Test CA", days=30)
    assert stat.S_IMODE(files.key.stat().st_mode) == 0o600
    cert = x509.load_pem_x509_certificate(files.cert.read_bytes())
    constraints = cert.extensions.get_extension_for_class(x509.BasicConstraints).value
    assert constraints.ca
    with pytest.raises(ConfigError, match="--force"):
        init_ca(tmp_path / "ca")
    before = files.cert.read_bytes()
    again = init_ca(tmp_path / "ca", force=True)
    assert again.cert.read_bytes() != before


def test_cli_ca_init(tmp_path: Path) -> None:
    argv = [sys.executable, "-m", "eagle", "ca", "init", "--dir", str(tmp_path / "ca")]
    done = subprocess.run(argv, capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stderr
    assert (tmp_path / "ca/ca.crt").is_file() and (tmp_path / "ca/ca.key").is_file()
    done = subprocess.run(argv, capture_output=True, text=True, check=False)
    assert done.returncode == 2 and "already exists" in done.stderr


def test_loading_errors_name_the_file(tmp_path: Path) -> None:
    missing = CaFiles.in_dir(tmp_path / "nope")
    with pytest.raises(ConfigError, match="eagle ca init"):
        CertificateAuthority.load(missing)
    a = init_ca(tmp_path / "a")
    b = init_ca(tmp_path / "b")
    with pytest.raises(ConfigError, match="is not the key of"):
        CertificateAuthority.load(CaFiles(a.cert, b.key))
    (tmp_path / "junk.crt").write_text("not a certificate")
    with pytest.raises(ConfigError, match="cannot load"):
        CertificateAuthority.load(CaFiles(tmp_path / "junk.crt", a.key))


@pytest.mark.parametrize("host", ["registry.example.com", "198.18.0.2", "2001:db8::1"])
async def test_leaf_certificates_verify_against_the_ca(tmp_path: Path, host: str) -> None:
    files = init_ca(tmp_path / "ca")
    leaves = LeafContexts(CertificateAuthority.load(files))
    server_context = leaves.context(host)
    assert leaves.context(host) is server_context  # made once, then reused

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(b"hello")
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(serve, "127.0.0.1", 0, ssl=server_context)
    port = server.sockets[0].getsockname()[1]
    client = ssl.create_default_context(cafile=str(files.cert))
    try:
        # server_hostname is what the client checks the certificate against.
        reader, writer = await asyncio.open_connection(
            "127.0.0.1", port, ssl=client, server_hostname=host
        )
        assert await reader.read() == b"hello"
        assert writer.get_extra_info("ssl_object").selected_alpn_protocol() in (None, "http/1.1")
        writer.close()
        other = ssl.create_default_context()  # the system CAs do not know the Eagle CA
        with pytest.raises(ssl.SSLCertVerificationError):
            await asyncio.open_connection("127.0.0.1", port, ssl=other, server_hostname=host)
    finally:
        server.close()
        await server.wait_closed()
