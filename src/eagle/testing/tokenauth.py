"""The Docker registry token flow for tests: a token server and the registry config that trusts it.

Docker Hub, Harbor and GitLab answer ``401`` with ``WWW-Authenticate: Bearer realm=…``
and hand out JWTs at the realm. :class:`TokenServer` plays that auth server (ES256
tokens with an ``x5c`` certificate chain, basic credentials checked), and
:meth:`TokenServer.registry_auth` is the ``auth:`` section that makes Docker
Distribution verify its tokens -- so the flow is checked against the real registry.
"""

from __future__ import annotations

import base64
import datetime as dt
import json
import logging
import secrets
import time
from pathlib import Path

from aiohttp import web
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature
from cryptography.x509.oid import NameOID

from eagle.testing.registry import BasicAuth
from eagle.utils.net import free_port

log = logging.getLogger(__name__)

ISSUER = "eagle-test-issuer"
SERVICE = "eagle-test-registry"


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


class TokenServer:
    """An auth server on ``127.0.0.1:<free port>`` issuing tokens to ``credentials`` only.

    Run it in the test's event loop with ``async with``. ``requests`` counts token requests.
    """

    def __init__(self, directory: Path, credentials: BasicAuth, lifetime: float = 300.0) -> None:
        self.credentials = credentials
        self.lifetime = lifetime
        self.port = free_port()
        self.requests = 0
        self.key = ec.generate_private_key(ec.SECP256R1())
        name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "eagle test token issuer")])
        now = dt.datetime.now(dt.UTC)
        self.certificate = (
            x509.CertificateBuilder()
            .subject_name(name)
            .issuer_name(name)
            .public_key(self.key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(minutes=5))
            .not_valid_after(now + dt.timedelta(days=1))
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .sign(self.key, hashes.SHA256())
        )
        directory.mkdir(parents=True, exist_ok=True)
        self.bundle = directory / "token-issuer.pem"
        self.bundle.write_bytes(self.certificate.public_bytes(serialization.Encoding.PEM))
        self._runner: web.AppRunner | None = None

    @property
    def realm(self) -> str:
        return f"http://127.0.0.1:{self.port}/token"

    def registry_auth(self) -> dict[str, object]:
        """The registry's ``auth:`` config section: trust tokens this server signs."""
        return {
            "token": {
                "realm": self.realm,
                "service": SERVICE,
                "issuer": ISSUER,
                "rootcertbundle": str(self.bundle),
            }
        }

    def token(self, subject: str, scope: str | None) -> str:
        """A signed JWT granting the actions ``scope`` asks for."""
        access = []
        if scope:
            kind, _, rest = scope.partition(":")
            name, _, actions = rest.rpartition(":")
            access.append({"type": kind, "name": name, "actions": actions.split(",")})
        now = int(time.time())
        claims = {
            "iss": ISSUER,
            "sub": subject,
            "aud": SERVICE,
            "exp": now + int(self.lifetime),
            "nbf": now - 10,
            "iat": now,
            "jti": secrets.token_hex(8),
            "access": access,
        }
        der = self.certificate.public_bytes(serialization.Encoding.DER)
        header = {"typ": "JWT", "alg": "ES256", "x5c": [base64.b64encode(der).decode("ascii")]}
        signing_input = (
            _b64url(json.dumps(header).encode()) + "." + _b64url(json.dumps(claims).encode())
        )
        r, s = decode_dss_signature(
            self.key.sign(signing_input.encode(), ec.ECDSA(hashes.SHA256()))
        )
        signature = r.to_bytes(32, "big") + s.to_bytes(32, "big")
        return f"{signing_input}.{_b64url(signature)}"

    async def _handle(self, request: web.Request) -> web.Response:
        self.requests += 1
        if request.headers.get("Authorization") != self.credentials.header:
            return web.json_response({"details": "bad credentials"}, status=401)
        token = self.token(self.credentials.username, request.query.get("scope"))
        return web.json_response({"token": token, "expires_in": int(self.lifetime)})

    async def __aenter__(self) -> TokenServer:
        app = web.Application()
        app.router.add_get("/token", self._handle)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        await web.TCPSite(self._runner, "127.0.0.1", self.port).start()
        log.info("token server up realm=%s", self.realm)
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None
