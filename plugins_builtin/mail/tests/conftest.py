"""A real SMTP server (aiosmtpd) in the test process, and helpers to drive the send job."""

from __future__ import annotations

import email
import logging
import socket
from dataclasses import dataclass, field
from email import policy
from typing import Any

import pytest
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult, LoginPassword

# aiosmtpd logs every connection at INFO from its own thread, which can outlive
# the captured stream of the test that configured logging; keep it to warnings.
logging.getLogger("mail.log").setLevel(logging.WARNING)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class Received:
    mail_from: str
    rcpt_tos: list[str]
    raw: bytes

    @property
    def message(self) -> Any:
        return email.message_from_bytes(self.raw, policy=policy.default)


@dataclass
class Mailbox:
    """What the server accepted; ``data_replies`` are answered to DATA, in order, before "250"."""

    received: list[Received] = field(default_factory=list)
    data_replies: list[str] = field(default_factory=list)
    rcpt_replies: dict[str, str] = field(default_factory=dict)
    logins: list[tuple[bytes, bytes]] = field(default_factory=list)
    data_attempts: int = 0

    async def handle_RCPT(self, server, session, envelope, address, rcpt_options):  # noqa: N802
        if address in self.rcpt_replies:
            return self.rcpt_replies[address]
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server, session, envelope):  # noqa: N802
        self.data_attempts += 1
        if self.data_replies:
            return self.data_replies.pop(0)
        self.received.append(Received(envelope.mail_from, list(envelope.rcpt_tos), bytes(envelope.original_content)))
        return "250 2.0.0 Message accepted"


@dataclass
class SmtpServer:
    host: str
    port: int
    mailbox: Mailbox


@pytest.fixture
def smtpd():
    """A running aiosmtpd server on a free port; ``.mailbox`` holds what it accepted."""
    mailbox = Mailbox()
    controller = Controller(mailbox, hostname="127.0.0.1", port=free_port())
    controller.start()
    try:
        yield SmtpServer(controller.hostname, controller.port, mailbox)
    finally:
        controller.stop()


@pytest.fixture
def smtpd_auth():
    """An aiosmtpd server that requires AUTH (user ``chronos``, password ``s3cret-pw``)."""
    mailbox = Mailbox()

    def authenticator(server, session, envelope, mechanism, auth_data):
        if isinstance(auth_data, LoginPassword):
            mailbox.logins.append((auth_data.login, auth_data.password))
            ok = auth_data.login == b"chronos" and auth_data.password == b"s3cret-pw"
            return AuthResult(success=ok, handled=False)  # unhandled failure: the server answers 535
        return AuthResult(success=False, handled=False)

    controller = Controller(
        mailbox,
        hostname="127.0.0.1",
        port=free_port(),
        authenticator=authenticator,
        auth_required=True,
        auth_require_tls=False,
    )
    controller.start()
    try:
        yield SmtpServer(controller.hostname, controller.port, mailbox)
    finally:
        controller.stop()


def mail_config(server: SmtpServer | None = None, **extra: Any) -> dict[str, Any]:
    smtp = {
        "host": server.host if server else "127.0.0.1",
        "port": server.port if server else free_port(),
        "starttls": False,
        "timeout_seconds": 5,
    }
    smtp.update(extra.pop("smtp", {}))
    cfg = {"from": "Chronos <chronos@example.com>", "smtp": smtp, "retry": {"base_seconds": 0, "max_attempts": 3}}
    cfg.update(extra)
    return {"mail": cfg}


async def drain(app) -> Any:
    """Let a running send job finish, then run it once more and return its counts."""
    runner = app.state.chronos.jobs
    task = runner.running.get("mail.send")
    if task is not None and not task.done():
        await task
    return await runner.run_now("mail.send")


@pytest.fixture(name="mail_config")
def _mail_config_fixture():
    """``mail_config(server, **extra)`` -> the ``mail`` config section for a test."""
    return mail_config


@pytest.fixture(name="drain")
def _drain_fixture():
    """``await drain(app)`` -> run the send job to completion."""
    return drain
