"""The pairs of new events are written by one INSERT … SELECT in the database: they must be exactly
the pairs the per-pair rules (``pairs_for``, the path of updates, backfill and announcements)
find, under every calendar policy."""

from __future__ import annotations

import random
from datetime import UTC, date, datetime, timedelta

import sqlalchemy as sa

from chronos import testing as kit
from chronos.plugin import CalendarSpec, EventDraft
from planning_support import PLUGINS, config

from chronos_planning import backfill
from chronos_planning.models import BACKFILL, REASONS

T = datetime(2030, 3, 4, 0, 0, tzinfo=UTC)
CALENDARS = ["a-planned", "b-reports", "c-ignored", "d-all-day", "e-plain"]
POLICIES = {
    "a-planned": {"default_mode": "auto-plan"},
    "b-reports": {"report_all_overlaps": True},
    "c-ignored": {"counts_for_conflicts": False},
    "d-all-day": {"all_day_blocks": True},
}


def drafts(seed: int, n: int) -> list[tuple[str, EventDraft]]:
    rng = random.Random(seed)
    out = []
    for i in range(n):
        cal = rng.choice(CALENDARS)
        if rng.random() < 0.1:
            day = date(2030, 3, 4) + timedelta(days=rng.randrange(3))
            start: object = day
            end: object = day + timedelta(days=rng.choice((1, 2)))
        else:
            start = T + timedelta(minutes=15 * rng.randrange(3 * 96))
            end = start + timedelta(minutes=15 * rng.choice((0, 1, 2, 4, 8, 20)))  # type: ignore[operator]
        draft = EventDraft(
            uid=f"e{i}",
            start=start,
            end=end,
            title=f"Event {i}",
            mode=rng.choice(("auto-plan", "free", None, None)),
            transparency="free" if rng.random() < 0.1 else "busy",
            status="cancelled" if rng.random() < 0.05 else "confirmed",
        )
        out.append((cal, draft))
    return out


async def stored_pairs(app) -> set[tuple]:
    async with app.state.chronos.db.read() as s:
        rows = await s.execute(
            sa.text(
                "SELECT p.event_a, p.event_b, a.calendar_id, b.calendar_id, p.overlap_start, p.overlap_end, p.reason"
                " FROM planning_pairs AS p JOIN events AS a ON a.id = p.event_a JOIN events AS b ON b.id = p.event_b"
            )
        )
        return {(a, b, ca, cb, os, oe, REASONS[reason]) for a, b, ca, cb, os, oe, reason in rows.all()}


async def test_new_pairs_written_in_sql_match_the_rules(chronos_app):
    source = kit.FakeSource([CalendarSpec(c, read_only=True) for c in CALENDARS])
    plugins = [*PLUGINS, kit.fake_source_plugin(source)]
    async with chronos_app(plugins=plugins, config=config(calendars=POLICIES)) as app:
        for cal, draft in drafts(13, 240):
            source.add(draft, calendar=cal)
        for cal in CALENDARS:  # calendar by calendar: later batches meet the pairs of earlier ones
            run = await kit.sync_now(app, "fake", cal)
            assert run.status == "ok", run
        written = await stored_pairs(app)
        reasons = {p[-1] for p in written}
        assert reasons == {"auto-plan", "all-overlaps"}  # the data exercises both kinds
        assert not any("c-ignored" in p[2:4] for p in written)
        # The same events through the per-pair rules: the backfill recomputes every pair in Python.
        ctx = app.state.chronos
        async with ctx.db.write() as s:
            await s.execute(sa.text("DELETE FROM planning_pairs"))
            await s.execute(sa.update(BACKFILL).values(after_id=0, finished_at=None))
        await backfill.run(ctx, batch=37)
        assert await stored_pairs(app) == written
        assert len(written) > 50
