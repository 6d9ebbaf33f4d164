"""The backfill: pairs between events stored before planning saw them (plugin enabled late,
conflict settings changed), computed in batches that resume where they stopped."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import sqlalchemy as sa

from planning_support import LOCAL, PLUGINS, config, create, pairs

from chronos_planning import backfill
from chronos_planning.models import BACKFILL

T = datetime(2030, 3, 4, 9, 0, tzinfo=UTC)
H = timedelta(hours=1)
WEEK = (T - timedelta(days=1), T + timedelta(days=6))
EVENTS_ONLY = {"events": {"local_calendars": LOCAL}}


async def progress(app) -> tuple[int, bool]:
    async with app.state.chronos.db.read() as s:
        row = (await s.execute(sa.select(BACKFILL))).one()
    return row.after_id, row.finished_at is not None


async def test_events_stored_before_planning_get_their_pairs_in_resumable_batches(chronos_app, api_client):
    async with chronos_app(plugins=["events"], config=EVENTS_ONLY) as app:
        c = await api_client(app, scopes=["events.write"])
        a = await create(c, "Planned", T, T + 2 * H, mode="auto-plan")
        b = await create(c, "Free", T + H, T + 3 * H, calendar="home")
        await create(c, "Alone", T + 4 * H, T + 5 * H)
        d = await create(c, "Late", T + 5 * H, T + 6 * H, calendar="gym")
        e = await create(c, "Planned too", T + 5 * H + H / 2, T + 7 * H, calendar="home", mode="auto-plan")
    async with chronos_app(plugins=PLUGINS, config=config()) as app:
        c = await api_client(app, scopes=["events.read", "events.write", "admin"])
        assert "planning.backfill" in {j["name"] for j in (await c.get("/api/v1/jobs")).json()}
        assert await pairs(c, *WEEK) == []  # planning has not seen them yet
        ctx = app.state.chronos
        assert await backfill.run(ctx, batch=2, batches=1) == {"events": 2}
        assert await progress(app) == (b, False)
        assert await pairs(c, *WEEK) == [(a, b, "auto-plan")]
        # A stop here loses nothing: the next run starts after the last batch.
        assert await backfill.run(ctx, batch=2) == {"events": 3}
        assert await progress(app) == (e, True)
        assert await pairs(c, *WEEK) == [(a, b, "auto-plan"), (d, e, "auto-plan")]
        # An event synced from now on is the sink's work, as always.
        f = await create(c, "New", T + 6 * H, T + 8 * H, calendar="work")
        assert await pairs(c, *WEEK) == [(a, b, "auto-plan"), (d, e, "auto-plan"), (e, f, "auto-plan")]
        assert await backfill.run(ctx) == {"events": 0}
    # A restart with the same settings starts no second pass.
    async with chronos_app(plugins=PLUGINS, config=config()) as app:
        assert await progress(app) == (e, True)


async def test_changed_conflict_settings_recompute_the_pairs(chronos_app, api_client):
    async with chronos_app(plugins=PLUGINS, config=config()) as app:
        c = await api_client(app, scopes=["events.read", "events.write"])
        a = await create(c, "One", T, T + 2 * H)
        b = await create(c, "Two", T + H, T + 3 * H)
        assert await pairs(c, *WEEK) == []  # two free events
        assert await progress(app) == (0, True)  # planning saw every event: nothing to do
    planned = config(calendars={"work": {"default_mode": "auto-plan"}})
    async with chronos_app(plugins=PLUGINS, config=planned) as app:
        c = await api_client(app, scopes=["events.read"])
        assert await progress(app) == (0, False)
        await backfill.run(app.state.chronos)
        assert await pairs(c, *WEEK) == [(a, b, "auto-plan")]
    async with chronos_app(plugins=PLUGINS, config=config()) as app:
        c = await api_client(app, scopes=["events.read"])
        await backfill.run(app.state.chronos)
        assert await pairs(c, *WEEK) == []
