"""The :class:`chronos.plugin.SignedRequests` implementation: inbound clients from the settings.

A client is found by its signature: every configured client's secrets are
tried (constant-time comparisons), so a request needs no client header. A
request signed with Standard Webhooks headers is known by its ``webhook-id``;
one with only ``X-Signature``/``X-Timestamp`` by its signature (an exact
replay repeats it). Receipts older than twice the timestamp tolerance are
deleted as new ones arrive: a replay older than that is refused by its
timestamp anyway.
"""

from __future__ import annotations

import os
import time
from collections.abc import Mapping
from datetime import timedelta

from sqlalchemy import delete, select, update
from sqlalchemy.exc import IntegrityError

from chronos.plugin import (
    Conflict,
    NotAuthenticated,
    PluginContext,
    Principal,
    SignedAnswer,
    SignedCall,
    SignedRequests,
    utcnow,
    webhook_signing,
)

from chronos_webhooks.models import InboundReceipt
from chronos_webhooks.settings import InboundClient, WebhooksSettings


def client_keys(client: InboundClient) -> list[bytes]:
    """The client's keys, read now (a rotated secret takes effect without a restart)."""
    if client.secret_env is not None:
        raw = os.environ.get(client.secret_env, "")
    else:
        assert client.secret_file is not None
        try:
            raw = client.secret_file.read_text(encoding="utf-8")
        except OSError:
            raw = ""
    keys = []
    for secret in raw.split():
        try:
            keys.append(webhook_signing.secret_key(secret))
        except ValueError:
            continue
    return keys


class InboundClients(SignedRequests):
    def __init__(self, ctx: PluginContext) -> None:
        self.ctx = ctx

    @property
    def settings(self) -> WebhooksSettings:
        return self.ctx.section(WebhooksSettings)

    async def authenticate(self, headers: Mapping[str, str], body: bytes) -> SignedCall:
        settings = self.settings
        reason = "no inbound client is configured"
        now = time.time()
        for client in settings.inbound_clients:
            keys = client_keys(client)
            if not keys:
                continue
            try:
                webhook_id, _ts = webhook_signing.verify(
                    keys, headers, body, now=now, tolerance=settings.inbound_tolerance_seconds
                )
            except ValueError as exc:
                reason = str(exc)
                continue
            if not webhook_id:
                signature = next((v for k, v in headers.items() if k.lower() == "x-signature"), "")
                webhook_id = "x-signature:" + signature.split()[0][:128] if signature.split() else None
            principal = Principal(
                key_id=f"client:{client.name}",
                name=client.name,
                scopes=frozenset(client.scopes),
                systems=frozenset(client.systems),
            )
            return SignedCall(principal, webhook_id[:200] if webhook_id else None)
        raise NotAuthenticated(reason)

    async def claim(self, call: SignedCall) -> SignedAnswer | None:
        assert call.webhook_id is not None
        client = call.principal.name
        try:
            async with self.ctx.db.write() as s:
                s.add(InboundReceipt(client=client, webhook_id=call.webhook_id, received_at=utcnow()))
            return None
        except IntegrityError:
            pass
        async with self.ctx.db.read() as s:
            row = (
                await s.execute(
                    select(InboundReceipt).where(
                        InboundReceipt.client == client, InboundReceipt.webhook_id == call.webhook_id
                    )
                )
            ).scalar()
        if row is None:  # released meanwhile (its first answer was an error): the client may try again
            return await self.claim(call)
        if row.status_code is None:
            raise Conflict(
                f"The request with webhook id {call.webhook_id!r} is still being answered; try again shortly",
                type="signed-request-in-progress",
            )
        return SignedAnswer(row.status_code, row.body or b"", row.media_type or "application/json")

    async def remember(self, call: SignedCall, answer: SignedAnswer) -> None:
        client = call.principal.name
        where = (InboundReceipt.client == client, InboundReceipt.webhook_id == call.webhook_id)
        cutoff = utcnow() - timedelta(seconds=2 * self.settings.inbound_tolerance_seconds)
        async with self.ctx.db.write() as s:
            if answer.status_code >= 500:
                await s.execute(delete(InboundReceipt).where(*where))
            else:
                await s.execute(
                    update(InboundReceipt)
                    .where(*where)
                    .values(status_code=answer.status_code, body=answer.body, media_type=answer.media_type[:200])
                )
            await s.execute(delete(InboundReceipt).where(InboundReceipt.received_at < cutoff))
