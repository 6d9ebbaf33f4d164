"""The ``mail.send`` job: claim due deliveries, send them, record the outcome.

Claiming is one write transaction that stamps ``locked_by``/``locked_until``
on rows nobody holds (PostgreSQL adds ``FOR UPDATE SKIP LOCKED``; SQLite
writers are serialised anyway), so two runners — a scheduled run on the
leader and a run kicked by ``POST /mail/send`` on another replica — never
send one delivery at the same time. The lease covers a whole batch at the
send timeout; a runner that dies mid-batch leaves rows that become due again
when the lease ends (at-least-once: a crash after the server accepted a
message but before the outcome was written can send it twice; the stable
Message-ID lets receivers drop the duplicate).

A login (``smtp.username``) happens only over TLS or STARTTLS unless
``smtp.allow_plaintext_auth`` is on; a server that offers no STARTTLS gets no
password and the delivery fails at once with a message saying so.

Outcomes: 2xx -> ``sent``. 4xx replies, refused connections, timeouts and
other transport errors -> ``retrying`` with exponential back-off and jitter,
``failed`` after ``retry.max_attempts``. 5xx -> ``failed`` at once. The
server's last code and text are recorded either way.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import random
import socket
import uuid
from dataclasses import dataclass
from datetime import timedelta
from email.headerregistry import Address
from typing import Any

import aiosmtplib
import structlog
from sqlalchemy import or_, select, update
from sqlalchemy.orm import selectinload

from chronos.plugin import JobContext, PluginContext, Resource, utcnow

from chronos_mail.addresses import parse_address
from chronos_mail.mime import build_message
from chronos_mail.models import MailDelivery
from chronos_mail.outbox_events import publish_failed
from chronos_mail.queue import SEND_REQUESTS
from chronos_mail.settings import MailSettings

log = structlog.get_logger("chronos.mail")
MAX_PER_RUN = 10_000


@dataclass(frozen=True)
class _Attachment:
    filename: str
    content_type: str
    content: bytes


@dataclass(frozen=True)
class _Claimed:
    id: int
    attempts: int
    message_id: str
    from_addr: str
    to: list[str]
    cc: list[str]
    bcc: list[str]
    subject: str
    html: str | None
    text: str
    attachments: list[_Attachment]


@dataclass(frozen=True)
class Outcome:
    status: str  # sent | retry | failed
    code: int | None
    text: str
    refused: dict[str, str] | None = None


def smtp_password(settings: MailSettings) -> str | None:
    """The SMTP password from the environment or ``smtp.password_file``; read per connection so rotation works."""
    smtp = settings.smtp
    if smtp.password is not None:
        return smtp.password.get_secret_value()
    if smtp.password_file is not None:
        return smtp.password_file.read_text(encoding="utf-8").rstrip("\r\n")
    return None


class PlaintextAuthRefused(Exception):
    """A login would send the password over an unencrypted connection (``mail.smtp.allow_plaintext_auth`` is off)."""


class SmtpConnection:
    """One SMTP session reused across a batch; reopened after any error."""

    def __init__(self, settings: MailSettings) -> None:
        self.settings = settings
        self.client: aiosmtplib.SMTP | None = None

    async def _open(self) -> aiosmtplib.SMTP:
        smtp = self.settings.smtp
        client = aiosmtplib.SMTP(
            hostname=smtp.host,
            port=smtp.port,
            use_tls=smtp.tls,
            start_tls=smtp.starttls,
            validate_certs=smtp.validate_certs,
            timeout=smtp.timeout_seconds,
            local_hostname=smtp.local_hostname,
        )
        await client.connect()
        if not smtp.username:
            return client
        try:
            # Log in only once TLS is up (implicit or STARTTLS), unless plaintext is explicitly allowed.
            if client.get_transport_info("sslcontext") is None and not smtp.allow_plaintext_auth:
                raise PlaintextAuthRefused(
                    f"not logging in to {smtp.host}:{client.port}: the connection is unencrypted (the server offered"
                    " no STARTTLS); the password was not sent. Enable TLS on the server or set"
                    " mail.smtp.tls / mail.smtp.starttls, or mail.smtp.allow_plaintext_auth: true"
                )
            await client.login(smtp.username, smtp_password(self.settings) or "")
        except BaseException:
            client.close()
            raise
        return client

    async def send(self, message: Any, sender: str, recipients: list[str]) -> tuple[dict[str, Any], str]:
        if self.client is None or not self.client.is_connected:
            self.client = await self._open()
        return await self.client.send_message(message, sender=sender, recipients=recipients)

    def reset(self) -> None:
        if self.client is not None:
            with contextlib.suppress(Exception):  # closing a broken session
                self.client.close()
        self.client = None

    async def close(self) -> None:
        if self.client is not None and self.client.is_connected:
            with contextlib.suppress(Exception):  # QUIT is a courtesy
                await asyncio.wait_for(self.client.quit(), self.settings.smtp.timeout_seconds)
        self.reset()


def classify(exc: BaseException) -> Outcome:
    """Map an aiosmtplib error to retry (temporary) or failed (permanent)."""
    if isinstance(exc, PlaintextAuthRefused):
        return Outcome("failed", None, str(exc))
    if isinstance(exc, aiosmtplib.SMTPRecipientsRefused):
        refused = {r.recipient: f"{r.code} {r.message}" for r in exc.recipients}
        codes = [r.code for r in exc.recipients]
        first = exc.recipients[0] if exc.recipients else None
        temporary = any(400 <= c < 500 for c in codes)
        return Outcome(
            "retry" if temporary else "failed",
            first.code if first else None,
            "; ".join(f"{k}: {v}" for k, v in refused.items()),
            refused,
        )
    if isinstance(exc, aiosmtplib.SMTPResponseException) and exc.code >= 0:
        status = "failed" if 500 <= exc.code < 600 else "retry"
        return Outcome(status, exc.code, exc.message)
    # Connection refused, timeouts, a dropped session, TLS problems: try again later.
    return Outcome("retry", None, f"{type(exc).__name__}: {exc}"[:1000])


def backoff_seconds(attempts: int, settings: MailSettings) -> float:
    """Exponential back-off with "equal jitter": half fixed, half random."""
    delay = min(settings.retry.max_seconds, settings.retry.base_seconds * (2 ** max(0, attempts - 1)))
    return delay / 2 + random.uniform(0, delay / 2)


class MailSender:
    """The job function and its helpers; one per app."""

    def __init__(self, ctx: PluginContext) -> None:
        self.ctx = ctx
        self.runner_id = f"{socket.gethostname()[:40]}-{os.getpid()}-{uuid.uuid4().hex[:8]}"

    @property
    def settings(self) -> MailSettings:
        return self.ctx.section(MailSettings)

    async def run(self, job: JobContext) -> dict[str, int]:
        settings = self.settings
        if not settings.from_:
            return {"sent": 0, "retrying": 0, "failed": 0}
        counts = {"sent": 0, "retrying": 0, "failed": 0}
        conn = SmtpConnection(settings)
        requests = self.ctx.resource(SEND_REQUESTS)
        processed = 0
        try:
            while processed < MAX_PER_RUN:
                # A delivery queued while this run was finishing sets the flag
                # (its run_now met JobBusy): look once more before returning.
                requests.pending = False
                batch = await self.claim(settings.batch_size)
                if not batch:
                    if requests.pending:
                        continue
                    break
                for claimed in batch:
                    status = await self.deliver(claimed, conn)
                    counts[status] += 1
                    processed += 1
        finally:
            await conn.close()
        return counts

    async def claim(self, limit: int) -> list[_Claimed]:
        settings = self.settings
        now = utcnow()
        lease = now + timedelta(seconds=limit * settings.send_timeout_seconds + 60)
        async with self.ctx.db.write() as s:
            q = (
                select(MailDelivery.id)
                .where(
                    MailDelivery.status.in_(("queued", "retrying")),
                    MailDelivery.next_attempt_at <= now,
                    or_(MailDelivery.locked_until.is_(None), MailDelivery.locked_until < now),
                )
                .order_by(MailDelivery.next_attempt_at, MailDelivery.id)
                .limit(limit)
            )
            if not self.ctx.db.is_sqlite:
                q = q.with_for_update(skip_locked=True)
            ids = list((await s.execute(q)).scalars())
            if not ids:
                return []
            await s.execute(
                update(MailDelivery)
                .where(MailDelivery.id.in_(ids))
                .values(
                    locked_by=self.runner_id,
                    locked_until=lease,
                    attempts=MailDelivery.attempts + 1,
                    last_attempt_at=now,
                    updated_at=now,
                )
                .execution_options(synchronize_session=False)
            )
            rows = (
                (
                    await s.execute(
                        select(MailDelivery)
                        .options(selectinload(MailDelivery.attachments))
                        .where(MailDelivery.id.in_(ids))
                        .order_by(MailDelivery.next_attempt_at, MailDelivery.id)
                        .execution_options(populate_existing=True)
                    )
                )
                .scalars()
                .all()
            )
            return [
                _Claimed(
                    r.id,
                    r.attempts,
                    r.message_id,
                    r.from_addr,
                    list(r.to_addrs),
                    list(r.cc_addrs or []),
                    list(r.bcc_addrs or []),
                    r.subject,
                    r.html,
                    r.text,
                    [_Attachment(a.filename, a.content_type, a.content) for a in r.attachments],
                )
                for r in rows
            ]

    async def deliver(self, d: _Claimed, conn: SmtpConnection) -> str:
        settings = self.settings
        try:
            sender = parse_address(d.from_addr, allow_single_label=True)
            to = [parse_address(a) for a in d.to]
            cc = [parse_address(a) for a in d.cc]
            bcc = [parse_address(a) for a in d.bcc]
            message = build_message(
                sender=sender,
                to=to,
                cc=cc,
                subject=d.subject,
                html=d.html,
                text=d.text,
                attachments=d.attachments,
                message_id=d.message_id,
                date=utcnow(),
            )
        except Exception as exc:  # noqa: BLE001 - validated on enqueue; a stored row that no longer builds is permanent
            return await self.record(d, Outcome("failed", None, f"message could not be built: {exc}"[:1000]))
        recipients = list(dict.fromkeys(_addr_spec(a) for a in (*to, *cc, *bcc)))
        try:
            async with asyncio.timeout(settings.send_timeout_seconds):
                refused, reply = await conn.send(message, _addr_spec(sender), recipients)
            outcome = Outcome(
                "sent",
                250,
                (reply or "OK")[:1000],
                {k: f"{v.code} {v.message}" for k, v in refused.items()} if refused else None,
            )
        except asyncio.CancelledError:
            conn.reset()
            raise
        except Exception as exc:  # noqa: BLE001 - every failure is recorded on the delivery
            conn.reset()
            outcome = classify(exc)
        return await self.record(d, outcome)

    async def record(self, d: _Claimed, outcome: Outcome) -> str:
        settings = self.settings
        now = utcnow()
        values: dict[str, Any] = {
            "last_smtp_code": outcome.code,
            "last_smtp_text": outcome.text,
            "updated_at": now,
            "locked_by": None,
            "locked_until": None,
        }
        if outcome.refused is not None:
            values["refused_recipients"] = outcome.refused
        if outcome.status == "sent":
            status = "sent"
            values.update(status="sent", sent_at=now, next_attempt_at=None)
        elif outcome.status == "retry" and d.attempts < settings.retry.max_attempts:
            status = "retrying"
            values.update(
                status="retrying", next_attempt_at=now + timedelta(seconds=backoff_seconds(d.attempts, settings))
            )
        else:
            status = "failed"
            values.update(status="failed", next_attempt_at=None)
        async with self.ctx.db.write() as s:
            result = await s.execute(
                update(MailDelivery)
                .where(MailDelivery.id == d.id, MailDelivery.locked_by == self.runner_id)
                .values(**values)
                .execution_options(synchronize_session=False)
            )
            if status == "failed" and result.rowcount:  # type: ignore[attr-defined]
                await publish_failed(self.ctx, s, d.id, d.message_id, d.attempts, outcome.code, outcome.text)
        log.info("mail_delivery", delivery_id=d.id, status=status, attempt=d.attempts, smtp_code=outcome.code)
        return status


def _addr_spec(addr: Address) -> str:
    return addr.addr_spec


SENDER: Resource[MailSender] = Resource("mail.sender", MailSender)
