"""The :class:`chronos.plugin.MailQueue` implementation: validate, store, wake the sender."""

from __future__ import annotations

import asyncio
import contextlib
import re
from dataclasses import dataclass
from datetime import UTC
from email.utils import make_msgid
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.exc import IntegrityError

from chronos.plugin import (
    AttachmentsTooLarge,
    HealthResult,
    IdempotencyConflict,
    InvalidMail,
    JobBusy,
    MailNotConfigured,
    MailQueue,
    Origin,
    OutgoingMail,
    PluginContext,
    Principal,
    QueuedDelivery,
    Resource,
    record_audit,
    utcnow,
)

from chronos_mail.addresses import header_problem, parse_address
from chronos_mail.mime import html_to_text
from chronos_mail.models import MailAttachmentRow, MailDelivery
from chronos_mail.settings import MailSettings

SEND_JOB = "mail.send"


@dataclass
class SendRequests:
    """Set when mail is queued: a send run under way looks once more before it ends.

    ``rerun_after`` is the run that was busy when mail was queued: once it has
    ended, the sender starts again if the request is still pending (the run may
    have made its last claim before the mail was stored).
    """

    pending: bool = False
    rerun_after: asyncio.Task[Any] | None = None


SEND_REQUESTS: Resource[SendRequests] = Resource("mail.send_requests", lambda ctx: SendRequests())
CONTENT_TYPE_RE = re.compile(r"^[a-z0-9][a-z0-9!#$&^_.+-]{0,62}/[a-z0-9][a-z0-9!#$&^_.+-]{0,126}$")


def owner_key(idempotency_key: str | None, principal: Principal | None) -> str | None:
    """Idempotency keys are per API key: two clients never share one."""
    if not idempotency_key:
        return None
    return f"{principal.key_id if principal else 'system'}:{idempotency_key}"


def kick_sender(ctx: PluginContext) -> None:
    """Start the send job now; a running one is told to look again before it ends.

    A run can be past its last look (claim found nothing, flag still clear)
    yet not finished: its ``run_now`` refusal would lose this request until the
    next poll. So the busy run gets a callback that starts the sender again
    when it ends, if the request is still pending then.
    """
    requests = ctx.resource(SEND_REQUESTS)
    requests.pending = True
    jobs = ctx.jobs
    if jobs is None or SEND_JOB not in jobs.jobs:
        return
    try:
        jobs.run_now(SEND_JOB)
    except JobBusy:
        busy = jobs.running.get(SEND_JOB)
        if busy is not None and not busy.done() and requests.rerun_after is not busy:
            requests.rerun_after = busy
            busy.add_done_callback(lambda task: _rerun_if_pending(ctx, task))


def _rerun_if_pending(ctx: PluginContext, finished: asyncio.Task[Any]) -> None:
    """Done callback of a busy send run: start another one if mail queued meanwhile is still waiting."""
    requests = ctx.resource(SEND_REQUESTS)
    if requests.rerun_after is finished:
        requests.rerun_after = None
    jobs = ctx.jobs
    if finished.cancelled() or jobs is None or jobs.stopping or not requests.pending:
        return  # shutting down, or a run already took the request
    with contextlib.suppress(JobBusy):
        jobs.run_now(SEND_JOB)


def validate_message(message: OutgoingMail, settings: MailSettings) -> tuple[list[str], list[str], list[str], str]:
    """Normalised (to, cc, bcc, text) of a valid message; raises 422 or 413."""
    errors: list[dict[str, Any]] = []
    lists: dict[str, list[str]] = {}
    for field in ("to", "cc", "bcc"):
        out = []
        for i, raw in enumerate(getattr(message, field)):
            try:
                out.append(str(parse_address(raw)))
            except ValueError as exc:
                errors.append({"pointer": f"/{field}/{i}", "detail": str(exc)})
        lists[field] = out
    if not message.to:
        errors.append({"pointer": "/to", "detail": "at least one recipient is required"})
    total = len(message.to) + len(message.cc) + len(message.bcc)
    if total > settings.max_recipients:
        errors.append({"pointer": "/to", "detail": f"{total} recipients; the limit is {settings.max_recipients}"})
    subject_problem = header_problem(message.subject)
    if subject_problem:
        errors.append({"pointer": "/subject", "detail": subject_problem + " (header injection)"})
    if len(message.subject) > 2000:
        errors.append({"pointer": "/subject", "detail": "longer than 2000 characters"})
    if not (message.html or message.text):
        errors.append({"pointer": "/html", "detail": "give html, text or both"})
    for part in ("html", "text"):
        value = getattr(message, part)
        if value is not None and len(value) > settings.max_body_chars:
            errors.append({"pointer": f"/{part}", "detail": f"longer than {settings.max_body_chars} characters"})
    for i, att in enumerate(message.attachments):
        problem = header_problem(att.filename)
        name = att.filename
        if problem or not name.strip() or len(name) > 255 or "/" in name or "\\" in name:
            errors.append(
                {
                    "pointer": f"/attachments/{i}/filename",
                    "detail": problem or "give a plain file name (no path), at most 255 characters",
                }
            )
        if not CONTENT_TYPE_RE.match(att.content_type) or att.content_type.split("/")[0] in ("multipart", "message"):
            errors.append(
                {
                    "pointer": f"/attachments/{i}/content_type",
                    "detail": "a lower-case type/subtype, not multipart/* or message/*",
                }
            )
    if errors:
        raise InvalidMail(
            "The message is invalid: " + "; ".join(f"{e['pointer']}: {e['detail']}" for e in errors[:5]), errors
        )
    size = sum(len(a.content) for a in message.attachments)
    if size > settings.max_attachment_bytes:
        raise AttachmentsTooLarge(size, settings.max_attachment_bytes)
    text = message.text if message.text is not None else html_to_text(message.html or "")
    return lists["to"], lists["cc"], lists["bcc"], text


class SqlMailQueue(MailQueue):
    """Stores deliveries in ``mail_deliveries``; the ``mail.send`` job sends them."""

    def __init__(self, ctx: PluginContext) -> None:
        self.ctx = ctx

    @property
    def settings(self) -> MailSettings:
        return self.ctx.section(MailSettings)

    async def replay(
        self, idempotency_key: str, fingerprint: str, *, principal: Principal | None = None
    ) -> QueuedDelivery | None:
        key = owner_key(idempotency_key, principal)
        async with self.ctx.db.read() as s:
            row = (await s.execute(select(MailDelivery).where(MailDelivery.idempotency_key == key))).scalar()
        return None if row is None else _replayed(row, fingerprint)

    async def enqueue(
        self,
        message: OutgoingMail,
        *,
        idempotency_key: str | None = None,
        fingerprint: str | None = None,
        principal: Principal | None = None,
        origin: Origin | None = None,
    ) -> QueuedDelivery:
        settings = self.settings
        to, cc, bcc, text = validate_message(message, settings)
        if not settings.from_:
            raise MailNotConfigured("Mail cannot be sent: set mail.from (the sender address) in the configuration")
        fingerprint = fingerprint or message.fingerprint()
        key = owner_key(idempotency_key, principal)
        try:
            async with self.ctx.db.write() as s:
                if key is not None:
                    prior = (await s.execute(select(MailDelivery).where(MailDelivery.idempotency_key == key))).scalar()
                    if prior is not None:
                        return _replayed(prior, fingerprint)
                row = _new_delivery(message, settings, (to, cc, bcc), text)
                row.idempotency_key, row.request_hash = key, fingerprint
                row.created_by = principal.key_id if principal else None
                s.add(row)
                await s.flush()
                await record_audit(
                    s,
                    entity="mail_delivery",
                    entity_id=row.id,
                    action="queue",
                    change={
                        "recipients": len(to) + len(cc) + len(bcc),
                        "subject": message.subject[:200],
                        "template_id": message.template_id,
                        "attachments": len(message.attachments),
                    },
                    principal=principal,
                    origin=origin,
                    actor=None if principal or origin else "system:mail",
                )
                queued = QueuedDelivery(row.id, row.status, row.message_id)
        except IntegrityError:
            # Two requests with one key raced on PostgreSQL; the other one won.
            if key is None:
                raise
            async with self.ctx.db.read() as s:
                prior = (await s.execute(select(MailDelivery).where(MailDelivery.idempotency_key == key))).scalar()
            if prior is None:
                raise
            return _replayed(prior, fingerprint)
        kick_sender(self.ctx)
        return queued


def _new_delivery(
    message: OutgoingMail, settings: MailSettings, recipients: tuple[list[str], list[str], list[str]], text: str
) -> MailDelivery:
    """A queued delivery row of a validated message (with its normalised recipients and text part)."""
    sender = parse_address(settings.from_ or "", allow_single_label=True)
    domain = settings.message_id_domain or sender.domain
    to, cc, bcc = recipients
    now = utcnow()
    row = MailDelivery(
        message_id=make_msgid(domain=domain),
        status="queued",
        from_addr=settings.from_,
        to_addrs=to,
        cc_addrs=cc,
        bcc_addrs=bcc,
        subject=message.subject,
        html=message.html,
        text=text,
        template_id=message.template_id,
        template_name=message.template_name,
        attempts=0,
        next_attempt_at=now,
        created_at=now,
        updated_at=now,
    )
    row.attachments = [
        MailAttachmentRow(
            position=i, filename=a.filename, content_type=a.content_type, size=len(a.content), content=a.content
        )
        for i, a in enumerate(message.attachments)
    ]
    return row


def _replayed(row: MailDelivery, fingerprint: str) -> QueuedDelivery:
    if row.request_hash != fingerprint:
        raise IdempotencyConflict(row.id)
    return QueuedDelivery(row.id, row.status, row.message_id, replayed=True)


async def queue_health(ctx: PluginContext) -> HealthResult:
    """The ``mail.queue`` health check: degraded when due mail is not being sent."""
    settings: MailSettings = ctx.section(MailSettings)
    now = utcnow()
    async with ctx.db.read() as s:
        counts = dict(
            (
                await s.execute(
                    select(MailDelivery.status, func.count())
                    .where(MailDelivery.status.in_(("queued", "retrying")))
                    .group_by(MailDelivery.status)
                )
            ).all()
        )
        oldest = (
            await s.execute(
                select(func.min(MailDelivery.next_attempt_at)).where(MailDelivery.status.in_(("queued", "retrying")))
            )
        ).scalar()
    detail = {
        "queued": counts.get("queued", 0),
        "retrying": counts.get("retrying", 0),
        "configured": bool(settings.from_),
    }
    if oldest is not None:
        if oldest.tzinfo is None:  # SQLite's MIN() bypasses the column type
            oldest = oldest.replace(tzinfo=UTC)
        overdue = (now - oldest).total_seconds()
        detail["oldest_due_seconds"] = round(max(0.0, overdue), 1)
        if overdue > max(600.0, settings.poll_interval_seconds * 10):
            return HealthResult("degraded", {**detail, "detail": "due mail is not being sent"})
    return HealthResult("ok", detail)
