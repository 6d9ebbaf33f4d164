"""Pairs between events stored before planning saw them, computed once: when the plugin is enabled
over a database that already holds events, and again when the calendars' conflict settings change.

Startup compares the settings with those of the last pass and (re)starts it; the
``planning.backfill`` job then walks the events by id, one transaction per batch,
recording how far it got, so a stopped pass resumes where it stood. The pairs it
finds are listed like any other but not announced as ``event.conflict`` (they are
not new conflicts, and a first pass over years of events must not flood the outbox).
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

import sqlalchemy as sa

from chronos.plugin import JobContext, PluginContext, utcnow

from chronos_planning.conflicts import E_COLUMNS, _Sql, busy_of_tuple, fetch_rows, replan, upkeep
from chronos_planning.models import BACKFILL, EVENTS
from chronos_planning.settings import PlanningSettings

JOB = "planning.backfill"
NAME = "conflicts"
BATCH = 500
_POLICY = {"default_mode", "counts_for_conflicts", "report_all_overlaps", "all_day_blocks"}


def fingerprint(settings: PlanningSettings) -> str:
    """What decides which pairs exist: the calendars' conflict policies (working hours do not)."""
    doc = {
        "defaults": settings.defaults.model_dump(include=_POLICY),
        "calendars": {k: v.model_dump(include=_POLICY) for k, v in sorted(settings.calendars.items())},
    }
    return hashlib.sha256(json.dumps(doc, sort_keys=True).encode()).hexdigest()


async def plan(ctx: PluginContext) -> None:
    """At startup: start a pass over the stored events when planning has not seen them yet, or
    when the conflict settings differ from those of the last pass."""
    mark = fingerprint(ctx.section(PlanningSettings))
    async with ctx.db.write() as s:
        row = (await s.execute(sa.select(BACKFILL).where(BACKFILL.c.name == NAME))).first()
        if row is not None and row.fingerprint == mark:
            return
        if row is None:
            held = (await s.execute(sa.select(EVENTS.c.id).limit(1))).first() is not None
            await s.execute(
                sa.insert(BACKFILL).values(
                    name=NAME, fingerprint=mark, after_id=0, finished_at=None if held else utcnow()
                )
            )
        else:
            await s.execute(
                sa.update(BACKFILL)
                .where(BACKFILL.c.name == NAME)
                .values(fingerprint=mark, after_id=0, finished_at=None)
            )


async def run(ctx: PluginContext, batch: int = BATCH, batches: int | None = None) -> dict[str, Any]:
    """Work through the pending pass (at most ``batches`` batches); each batch of events commits with
    its pairs and the position reached."""
    events = rounds = 0
    while batches is None or rounds < batches:
        async with ctx.db.write() as s:
            row = (await s.execute(sa.select(BACKFILL).where(BACKFILL.c.name == NAME))).first()
            if row is None or row.finished_at is not None:
                break
            rows = await fetch_rows(
                s,
                f"SELECT {E_COLUMNS} FROM events AS e WHERE e.id > :after ORDER BY e.id LIMIT :n",
                {"after": row.after_id, "n": batch},
            )
            done = BACKFILL.update().where(BACKFILL.c.name == NAME)
            if not rows:
                await s.execute(done.values(finished_at=utcnow()))
                break
            d = _Sql(s.get_bind().dialect.name)
            found = [busy_of_tuple(d, r) for r in rows]
            ids = [b.id for b in found]
            await replan(s, ids, found)
            await upkeep(s, ctx, found, ids, publish=False)
            await s.execute(done.values(after_id=ids[-1]))
        events += len(rows)
        rounds += 1
    return {"events": events}


async def job(job: JobContext) -> dict[str, Any]:
    return await run(job.ctx)
