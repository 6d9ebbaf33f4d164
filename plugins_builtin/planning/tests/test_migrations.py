"""planning0005 carries every pair between the wide table (surrogate id, timestamps, calendars and
reason as text) and the narrow one (keyed by the pair, whole seconds, reason codes), both ways."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import sqlalchemy as sa

from chronos import testing as kit
from planning_support import PLUGINS, config, create, z

from chronos_events.plugin import register_migrations as events_migrations
from chronos_planning.plugin import register_migrations

T = datetime(2030, 3, 4, 9, 0, tzinfo=UTC)
H = timedelta(hours=1)
WEEK = (T - timedelta(days=1), T + timedelta(days=6))
CFG = config(calendars={"home": {"report_all_overlaps": True}})


async def listing(c) -> list[dict]:
    r = await c.get("/api/v1/conflicts", params={"from": z(WEEK[0]), "to": z(WEEK[1])})
    assert r.status_code == 200, r.text
    return r.json()["items"]


async def test_pairs_survive_a_downgrade_and_the_upgrade(chronos_app, api_client, database):
    migs = [*events_migrations(), *register_migrations()]
    async with chronos_app(plugins=PLUGINS, config=CFG) as app:
        c = await api_client(app, scopes=["events.read", "events.write"])
        planned = await create(c, "Planned", T, T + 2 * H, mode="auto-plan")
        # Sub-second times: the stored overlap is widened to whole seconds, the listing stays exact.
        odd = await create(c, "Odd", T + H + timedelta(microseconds=250_000), T + 2 * H + timedelta(seconds=1.5))
        a = await create(c, "Home A", T + 5 * H, T + 6 * H, calendar="home")
        b = await create(c, "Home B", T + 5 * H, T + 7 * H, calendar="home")
        before = await listing(c)
        assert sorted((*i["event_ids"], i["reason"]) for i in before) == [
            (planned, odd, "auto-plan"),
            (a, b, "all-overlaps"),
        ]
        assert next(i for i in before if i["event_ids"] == [planned, odd])["overlap"] == {
            "start": "2030-03-04T10:00:00.250000Z",
            "end": "2030-03-04T11:00:00Z",
        }
        assert [i["id"] for i in before] == [f"{i['event_ids'][0]}:{i['event_ids'][1]}" for i in before]

    await kit.downgrade_database(database, migs, "planning", "planning0004")
    async with chronos_app(plugins=PLUGINS, config=CFG | {"database": {"migrate_on_start": False}}) as app:
        async with app.state.chronos.db.read() as s:
            rows = (
                await s.execute(
                    sa.text(
                        "SELECT event_a, event_b, calendar_a, calendar_b, overlap_start, overlap_end, reason"
                        " FROM planning_conflicts ORDER BY event_a"
                    )
                )
            ).all()
        got = [(r[0], r[1], r[2], r[3], r[6]) for r in rows]
        assert got == [(planned, odd, "work", "work", "auto-plan"), (a, b, "home", "home", "all-overlaps")]
        starts = [r[4] if isinstance(r[4], datetime) else datetime.fromisoformat(f"{r[4]}+00:00") for r in rows]
        assert [s.replace(tzinfo=UTC) if s.tzinfo is None else s for s in starts] == [T + H, T + 5 * H]

    assert "planning" in await kit.migrate_database(database, migs)
    async with chronos_app(plugins=PLUGINS, config=CFG) as app:
        c = await api_client(app, scopes=["events.read", "events.write"])
        after = await listing(c)
        assert [{k: v for k, v in i.items() if k != "detected_at"} for i in after] == [
            {k: v for k, v in i.items() if k != "detected_at"} for i in before
        ]
        # the moment of detection is kept to the second
        for old, new in zip(before, after, strict=True):
            assert new["detected_at"][:19] == old["detected_at"][:19]
        # planning_planned was rebuilt from the events: a new free event meets the planned one.
        late = await create(c, "Late", T + timedelta(minutes=30), T + H, calendar="gym")
        assert (planned, late, "auto-plan") in [(*i["event_ids"], i["reason"]) for i in await listing(c)]
