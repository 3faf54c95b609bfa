"""The Eagle CA: ``eagle ca init`` makes it once; the proxy signs leaf certificates with it.

In HTTPS proxy mode the agent terminates TLS for the registry hosts its rules
intercept, presenting a certificate for that host signed on the fly by this CA.
Runtimes trust the CA (``/etc/docker/certs.d/HOST/ca.crt``, containerd's
``hosts.toml`` ``ca``, ``/etc/containers/certs.d``, or the system store), never
the leaves, so leaves are short-lived and made on demand.

Keys are ECDSA P-256: every Go, OpenSSL and NSS client accepts them, and signing a
leaf takes about a millisecond.
"""

from __future__ import annotations

import datetime
import ipaddress
import logging
import os
import secrets
import ssl
import tempfile
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from eagle.core.errors import ConfigError

log = logging.getLogger(__name__)

DEFAULT_CA_DIR = Path("/etc/eagle/ca")
CA_CERT_NAME = "ca.crt"
CA_KEY_NAME = "ca.key"
LEAF_DAYS = 7
# A leaf is replaced once it has less than this left, so none expires mid-pull.
LEAF_RENEW_BEFORE = datetime.timedelta(days=1)
# Clocks of clients and agent may disagree by a few minutes.
CLOCK_SKEW = datetime.timedelta(hours=1)


@dataclass(frozen=True)
class CaFiles:
    """Where a CA's certificate and private key are (PEM)."""

    cert: Path
    key: Path

    @classmethod
    def in_dir(cls, directory: Path) -> CaFiles:
        """The standard names inside ``directory``: ``ca.crt`` and ``ca.key``."""
        return cls(directory / CA_CERT_NAME, directory / CA_KEY_NAME)


def _now() -> datetime.datetime:
    return datetime.datetime.now(datetime.UTC)


def init_ca(
    directory: Path, *, common_name: str = "Eagle CA", days: int = 3650, force: bool = False
) -> CaFiles:
    """Create a CA certificate and key in ``directory``; refuse to overwrite unless ``force``.

    The key file is created with mode 0600: whoever reads it can sign certificates
    the host's runtimes trust.
    """
    if days < 1:
        raise ConfigError(f"CA validity must be at least one day, got {days}")
    files = CaFiles.in_dir(directory)
    existing = [p for p in (files.cert, files.key) if p.exists()]
    if existing and not force:
        raise ConfigError(f"{existing[0]} already exists; pass --force to replace the CA")
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
    now = _now()
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - CLOCK_SKEW)
        .not_valid_after(now + datetime.timedelta(days=days))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )
    try:
        directory.mkdir(parents=True, exist_ok=True)
        _write_private(files.key, _key_pem(key))
        files.cert.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    except OSError as exc:
        raise ConfigError(f"cannot write the CA to {directory}: {exc}") from exc
    log.info("CA created cert=%s key=%s days=%d", files.cert, files.key, days)
    return files


def _key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def _write_private(path: Path, data: bytes) -> None:
    path.unlink(missing_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as fh:
        fh.write(data)


class CertificateAuthority:
    """A loaded CA that issues server certificates for registry hosts."""

    def __init__(self, cert: x509.Certificate, key: ec.EllipticCurvePrivateKey) -> None:
        self.cert = cert
        self.key = key

    @classmethod
    def load(cls, files: CaFiles) -> CertificateAuthority:
        """Read the CA; missing or unusable files raise :class:`ConfigError` naming them."""
        try:
            cert = x509.load_pem_x509_certificate(files.cert.read_bytes())
            key = serialization.load_pem_private_key(files.key.read_bytes(), password=None)
        except FileNotFoundError as exc:
            raise ConfigError(
                f"no Eagle CA at {exc.filename}: create one with `eagle ca init`"
                " (proxy mode signs registry certificates with it)"
            ) from exc
        except (OSError, ValueError, TypeError, UnsupportedAlgorithm) as exc:
            raise ConfigError(
                f"cannot load the Eagle CA {files.cert} / {files.key}: {exc}"
            ) from exc
        if not isinstance(key, ec.EllipticCurvePrivateKey):
            raise ConfigError(f"{files.key}: expected an EC private key (made by `eagle ca init`)")
        if cert.public_key() != key.public_key():
            raise ConfigError(f"{files.key} is not the key of {files.cert}")
        if cert.not_valid_after_utc <= _now():
            raise ConfigError(f"the Eagle CA {files.cert} expired; run `eagle ca init --force`")
        return cls(cert, key)

    def issue(
        self, host: str, key: ec.EllipticCurvePrivateKey, days: int = LEAF_DAYS
    ) -> x509.Certificate:
        """A server certificate for ``host`` (a DNS name or an IP address) on ``key``."""
        now = _now()
        not_after = min(now + datetime.timedelta(days=days), self.cert.not_valid_after_utc)
        try:
            san: x509.GeneralName = x509.IPAddress(ipaddress.ip_address(host))
        except ValueError:
            san = x509.DNSName(host)
        ski = self.cert.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
        return (
            x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, host[:64])]))
            .issuer_name(self.cert.subject)
            .public_key(key.public_key())
            .serial_number(int.from_bytes(secrets.token_bytes(16), "big") >> 1)
            .not_valid_before(now - CLOCK_SKEW)
            .not_valid_after(not_after)
            .add_extension(x509.SubjectAlternativeName([san]), critical=False)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
            .add_extension(
                x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ski),
                critical=False,
            )
            .sign(self.key, hashes.SHA256())
        )


class LeafContexts:
    """TLS server contexts for intercepted hosts, made on first use and kept while fresh.

    One leaf key serves every host (generating a key per host buys nothing: they all
    live in this process). ``ssl`` loads certificates only from files, so each leaf
    passes through a file in a private directory that is removed right after.
    """

    def __init__(self, ca: CertificateAuthority, max_hosts: int = 1024) -> None:
        self.ca = ca
        self.max_hosts = max_hosts
        self._key = ec.generate_private_key(ec.SECP256R1())
        self._contexts: OrderedDict[str, tuple[ssl.SSLContext, datetime.datetime]] = OrderedDict()

    def context(self, host: str) -> ssl.SSLContext:
        """A server-side context presenting a certificate for ``host``."""
        host = host.lower().strip("[]")
        cached = self._contexts.get(host)
        if cached is not None and cached[1] - _now() > LEAF_RENEW_BEFORE:
            self._contexts.move_to_end(host)
            return cached[0]
        cert = self.ca.issue(host, self._key)
        context = self._make_context(cert)
        self._contexts[host] = (context, cert.not_valid_after_utc)
        self._contexts.move_to_end(host)
        while len(self._contexts) > self.max_hosts:
            self._contexts.popitem(last=False)
        log.info("leaf certificate issued host=%s until=%s", host, cert.not_valid_after_utc)
        return context

    def _make_context(self, cert: x509.Certificate) -> ssl.SSLContext:
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.minimum_version = ssl.TLSVersion.TLSv1_2
        # The requests behind the TLS are served by an HTTP/1.1 server: never agree to h2.
        context.set_alpn_protocols(["http/1.1"])
        pem = cert.public_bytes(serialization.Encoding.PEM) + self.ca.cert.public_bytes(
            serialization.Encoding.PEM
        )
        with tempfile.TemporaryDirectory(prefix="eagle-leaf-") as tmp:
            path = Path(tmp) / "leaf.pem"
            _write_private(path, pem + _key_pem(self._key))
            context.load_cert_chain(path)
        return context
