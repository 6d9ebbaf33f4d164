"""The :class:`chronos.plugin.Outbox` implementation: one INSERT in the caller's transaction."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import secrets
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import event
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncSession

from chronos.plugin import EventType, JobBusy, Outbox, PluginContext, Publication, Resource, utcnow

from chronos_webhooks.models import OutboxRow
from chronos_webhooks.sink import subscribed

DISPATCH_JOB = "webhooks.dispatch"


def new_webhook_id() -> str:
    """``msg_`` and 24 random base32 characters (120 bits): unique, with no '.' (it is part of the signed content)."""
    return "msg_" + base64.b32encode(secrets.token_bytes(15)).decode("ascii").lower()


@dataclass
class DispatchRequests:
    """Set when something is published: a dispatcher run under way looks once more before it ends."""

    pending: bool = False
    rerun_after: asyncio.Task[Any] | None = None


DISPATCH_REQUESTS: Resource[DispatchRequests] = Resource("webhooks.dispatch_requests", lambda ctx: DispatchRequests())


def kick_dispatcher(ctx: PluginContext) -> None:
    """Start the dispatcher now; a busy run is told to look again (and restarted if it had already looked)."""
    jobs = ctx.jobs
    if jobs is None:  # a command-line tool: the service's dispatcher picks the work up on its schedule
        return
    requests = ctx.resource(DISPATCH_REQUESTS)
    requests.pending = True
    if DISPATCH_JOB not in jobs.jobs or jobs.stopping:
        return
    try:
        jobs.run_now(DISPATCH_JOB)
    except JobBusy:
        busy = jobs.running.get(DISPATCH_JOB)
        if busy is not None and not busy.done() and requests.rerun_after is not busy:
            requests.rerun_after = busy
            busy.add_done_callback(lambda task: _rerun_if_pending(ctx, task))


def _rerun_if_pending(ctx: PluginContext, finished: asyncio.Task[Any]) -> None:
    requests = ctx.resource(DISPATCH_REQUESTS)
    if requests.rerun_after is finished:
        requests.rerun_after = None
    jobs = ctx.jobs
    if finished.cancelled() or jobs is None or jobs.stopping or not requests.pending:
        return
    with contextlib.suppress(JobBusy):
        jobs.run_now(DISPATCH_JOB)


class SqlOutbox(Outbox):
    """Messages go to ``webhooks_outbox``; the ``webhooks.dispatch`` job fans them out and delivers them."""

    def __init__(self, ctx: PluginContext) -> None:
        self.ctx = ctx
        self._statement: Any = None

    def event_types(self) -> Mapping[str, EventType]:
        return self.ctx.event_types

    async def subscribed(self, session: AsyncSession, event_type: str, calendar_id: str | None = None) -> bool:
        return bool(await subscribed(session, self.ctx, (event_type,), calendar_id))

    async def enqueue(
        self,
        session: AsyncSession,
        event_type: str,
        payload: Mapping[str, Any],
        *,
        dedupe_key: str | None = None,
        calendar_id: str | None = None,
    ) -> None:
        await self.enqueue_many(session, [Publication(event_type, payload, dedupe_key, calendar_id)])

    async def enqueue_many(self, session: AsyncSession, messages: Sequence[Publication]) -> None:
        if not messages:
            return
        known = self.ctx.event_types
        now = utcnow()
        rows = []
        for m in messages:
            if m.event_type not in known:
                raise ValueError(
                    f"event type {m.event_type!r} is not declared (return an EventType from register_schemas)"
                )
            rows.append(
                {
                    "webhook_id": new_webhook_id(),
                    "event_type": m.event_type,
                    "payload": dict(m.payload),
                    "calendar_id": m.calendar_id,
                    "dedupe_key": m.dedupe_key,
                    "endpoint_id": None,
                    "fanned_out": False,
                    "created_at": now,
                }
            )
        await session.execute(self._insert(), rows)
        self._wake_after_commit(session)

    def _insert(self) -> Any:
        """One statement, built once (its compiled form is cached): a duplicate dedupe key is skipped,
        never an error that would abort the caller's transaction."""
        if self._statement is None:
            insert = sqlite.insert if self.ctx.db.is_sqlite else postgresql.insert
            self._statement = insert(OutboxRow.__table__).on_conflict_do_nothing(index_elements=["dedupe_key"])
        return self._statement

    def _wake_after_commit(self, session: AsyncSession) -> None:
        sync = session.sync_session
        if sync.info.get("webhooks.wake"):
            return
        sync.info["webhooks.wake"] = True
        ctx = self.ctx

        def wake(s: Any) -> None:
            s.info.pop("webhooks.wake", None)
            with contextlib.suppress(RuntimeError):  # no running loop (a synchronous tool): the schedule picks it up
                kick_dispatcher(ctx)

        def forget(s: Any) -> None:
            s.info.pop("webhooks.wake", None)

        event.listen(sync, "after_commit", wake, once=True)
        event.listen(sync, "after_rollback", forget, once=True)
