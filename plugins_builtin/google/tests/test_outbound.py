"""An overridden API address (``google.api_base_url``): every connection goes only to an address the
outbound guard checked when connecting, never to one httplib2 would find by resolving the name again."""

from __future__ import annotations

import json
import re
import socket
import ssl
import threading
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import urlsplit

import pytest

from chronos.plugin import OutboundPolicy, OutboundRefused
from google_support import config, soon, sync, timed

from chronos_google.client import GuardedHttp

PLUGINS = ["events", "normalize", "google"]
CAL = "team@group.calendar.google.com"


@pytest.fixture
def lookups(monkeypatch):
    """Names under ``.google.test`` answered from a table (each name's answers in turn, the last one repeated);
    the answers given are recorded by name. The system resolver does not know these names."""
    system_lookup = socket.getaddrinfo
    table: dict[str, list[str]] = {}
    given: dict[str, list[str]] = {}

    def lookup(host, port, *args, **kwargs):
        if not isinstance(host, str) or not host.endswith(".google.test"):
            return system_lookup(host, port, *args, **kwargs)
        answers = given.setdefault(host, [])
        wanted = table[host]
        answers.append(wanted[min(len(answers), len(wanted) - 1)])
        return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", (answers[-1], int(port)))]

    monkeypatch.setattr(socket, "getaddrinfo", lookup)
    return table, given


def named_config(fake, tmp_path, api_host: str, allow: list[str]) -> dict:
    """The fake server under host names: the API at ``api_host``, the token endpoint at ``token.google.test``."""
    port = urlsplit(fake.base).port
    cfg = config(fake, tmp_path, {"id": "team"})
    key = cfg["google"]["credentials"]["service_account_file"]
    with open(key) as f:
        info = json.load(f)
    info["token_uri"] = f"http://token.google.test:{port}/token"
    with open(key, "w") as f:
        json.dump(info, f)
    cfg["google"]["api_base_url"] = f"http://{api_host}:{port}"
    cfg["network"] = {"allow": allow}
    return cfg


async def test_the_connection_goes_to_the_address_the_guard_checked(chronos_app, fake_google, tmp_path, lookups):
    """The names resolve only through the guard: the run succeeds because the connections use its addresses."""
    table, given = lookups
    table["api.google.test"] = ["127.0.0.1"]
    table["token.google.test"] = ["127.0.0.1"]
    fake_google.put(CAL, timed("t1", soon(1)))
    cfg = named_config(fake_google, tmp_path, "api.google.test", ["127.0.0.1/32"])
    async with chronos_app(plugins=PLUGINS, config=cfg) as app:
        run = await sync(app, "team")
        assert run.status == "ok", run.error
        assert run.added == 1
        assert len(fake_google.list_requests()) == 1
        assert given["api.google.test"] and given["token.google.test"]


async def test_a_name_that_rebinds_to_a_refused_address_after_the_check_is_not_connected(
    chronos_app, fake_google, tmp_path, lookups
):
    """The check before the run sees an allowed address; every later lookup answers loopback (refused).
    The client connects only to addresses the guard checked at connect time, so nothing reaches the API."""
    table, given = lookups
    table["api.google.test"] = ["127.0.0.2", "127.0.0.1"]
    table["token.google.test"] = ["127.0.0.1"]  # allow-listed by name: trusted with what it resolves to
    fake_google.put(CAL, timed("t1", soon(1)))
    cfg = named_config(fake_google, tmp_path, "api.google.test", ["127.0.0.2/32", "token.google.test"])
    async with chronos_app(plugins=PLUGINS, config=cfg) as app:
        run = await sync(app, "team")
        assert run.status == "error", run
        assert "refused by the outbound network policy" in run.error, run.error
        assert re.search(r"api\.google\.test \(127\.0\.0\.1\) is a loopback address", run.error), run.error
        assert given["api.google.test"][:2] == ["127.0.0.2", "127.0.0.1"]  # checked before the run, then at connect
        assert fake_google.list_requests() == []


# -- the connections themselves -----------------------------------------------------------------


class Answer(BaseHTTPRequestHandler):
    """200 "pong" on /ping; /away redirects to the ``Location`` the server was given."""

    def do_GET(self) -> None:
        if self.path == "/away":
            self.send_response(302)
            self.send_header("Location", self.server.location)  # type: ignore[attr-defined]
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        self.server.hits.append(self.path)  # type: ignore[attr-defined]
        self.send_response(200)
        self.send_header("Content-Length", "4")
        self.end_headers()
        self.wfile.write(b"pong")

    def log_message(self, *args) -> None:
        pass


@contextmanager
def serving(tls: ssl.SSLContext | None = None, location: str = ""):
    server = ThreadingHTTPServer(("127.0.0.1", 0), Answer)
    server.hits = []  # type: ignore[attr-defined]
    server.location = location  # type: ignore[attr-defined]
    if tls is not None:
        server.socket = tls.wrap_socket(server.socket, server_side=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()


def certificate(directory, name: str) -> tuple[ssl.SSLContext, str]:
    """A self-signed certificate for ``name``: the server's TLS context and the file a client trusts."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    now = datetime.now(UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(days=1))
        .not_valid_after(now + timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName(name)]), critical=False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_file, key_file = directory / "cert.pem", directory / "key.pem"
    cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_file.write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert_file, key_file)
    return context, str(cert_file)


def resolving(table: dict[str, str]):
    async def resolve(host: str, port: int) -> list[str]:
        return [table[host]]

    return resolve


def test_https_connects_to_the_checked_address_and_checks_the_certificate_against_the_name(tmp_path):
    tls, trusted = certificate(tmp_path, "api.google.test")
    names = {"api.google.test": "127.0.0.1", "other.google.test": "127.0.0.1"}
    policy = OutboundPolicy.from_entries(["127.0.0.1/32"], resolver=resolving(names))
    with serving(tls) as server:
        port = server.server_address[1]
        http = GuardedHttp(policy, timeout=5)
        http.ca_certs = trusted
        response, body = http.request(f"https://api.google.test:{port}/ping")
        assert (response.status, body) == (200, b"pong")
        # The same address under a name the certificate does not carry: the name is what TLS checks.
        with pytest.raises(ssl.SSLCertVerificationError):
            GuardedHttp(policy, timeout=5).request(f"https://other.google.test:{port}/ping")
        assert server.hits == ["/ping"]


def test_a_redirect_to_a_refused_address_is_not_followed():
    policy = OutboundPolicy.from_entries(["api.google.test"], resolver=resolving({"api.google.test": "127.0.0.1"}))
    with serving() as target, serving() as first:
        first.location = f"http://127.0.0.1:{target.server_address[1]}/ping"  # type: ignore[attr-defined]
        http = GuardedHttp(policy, timeout=5)
        with pytest.raises(OutboundRefused, match=r"127\.0\.0\.1 is a loopback address"):
            http.request(f"http://api.google.test:{first.server_address[1]}/away")
        assert target.hits == []
