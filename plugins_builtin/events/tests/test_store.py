"""The EventStore contract: bulk upserts, unchanged hashes, tombstones, local edits."""

from __future__ import annotations

from datetime import timedelta

from sqlalchemy import func, select

from chronos.plugin import EventKey, EventStore
from events_support import T0, apply, ev

PLUGINS = ["events"]


async def test_apply_inserts_updates_skips_and_deletes(chronos_app):
    async with chronos_app(plugins=PLUGINS) as app:
        r = await apply(app, [ev("a", T0), ev("b", T0 + timedelta(hours=1)), ev("a", T0, title="A last wins")])
        assert [s.event.uid for s in r.added] == ["a", "b"] and r.added[0].event.title == "A last wins"
        assert r.added[0].id and r.added[1].id and r.added[0].id != r.added[1].id

        r = await apply(app, [ev("a", T0, title="A last wins"), ev("b", T0 + timedelta(hours=1), title="B2")])
        assert r.unchanged == 1 and [s.event.title for s in r.updated] == ["B2"]
        b_id = r.updated[0].id
        assert r.previous[b_id].title == "Event b"

        r = await apply(app, [], [EventKey("ics", "work", "a"), EventKey("ics", "work", "missing")])
        assert [d.event.uid for d in r.deleted] == ["a"]
        ctx = app.state.chronos
        store = ctx.service(EventStore)
        async with ctx.db.read() as s:
            assert await store.keys(s, "ics", "work") == {EventKey("ics", "work", "b")}
            got = await store.get(s, b_id)
        assert got is not None and got.event.title == "B2" and got.content_hash == got.event.content_hash()


async def test_apply_uses_a_fixed_number_of_statements(chronos_app):
    from sqlalchemy import event as sa_event

    async with chronos_app(plugins=PLUGINS) as app:
        await apply(app, [ev(f"u{i}", T0 + timedelta(minutes=i)) for i in range(300)])
        ctx = app.state.chronos
        statements: list[str] = []

        def count(conn, cursor, statement, *args):  # noqa: ANN001
            statements.append(statement)

        sa_event.listen(ctx.db.writer.sync_engine, "before_cursor_execute", count)
        try:
            batch = [
                ev(f"u{i}", T0 + timedelta(minutes=i), title="changed" if i % 2 else f"Event u{i}") for i in range(300)
            ]
            batch += [ev(f"n{i}", T0) for i in range(200)]
            r = await apply(app, batch, [EventKey("ics", "work", f"u{i}") for i in range(250, 260)])
        finally:
            sa_event.remove(ctx.db.writer.sync_engine, "before_cursor_execute", count)
        assert (len(r.added), len(r.updated), r.unchanged) == (200, 150, 150)
        # select existing + tombstones, insert, update (executemany), select + delete, spans: no per-row trips
        data = [s for s in statements if "events" in s]
        assert len(data) <= 10, data


async def test_tombstone_suppresses_reimport(chronos_app):
    async with chronos_app(plugins=PLUGINS) as app:
        r = await apply(app, [ev("consumed", T0)])
        ctx = app.state.chronos
        store = ctx.service(EventStore)
        async with ctx.db.write() as s:
            assert await store.remove(s, r.added[0].id, tombstone=True, reason="consumed by a command")
            assert not await store.remove(s, r.added[0].id, tombstone=True, reason="again")
        r = await apply(app, [ev("consumed", T0, title="changed upstream"), ev("other", T0)])
        assert r.suppressed == 1 and [a.event.uid for a in r.added] == ["other"]
        async with ctx.db.read() as s:
            assert await store.keys(s, "ics", "work") == {EventKey("ics", "work", "other")}


async def test_local_edits_survive_resync(chronos_app):
    async with chronos_app(plugins=PLUGINS) as app:
        base = ev(
            "m", T0, description="[ ] one\n[ ] two", sub_tasks=[{"id": "1", "text": "one"}, {"id": "2", "text": "two"}]
        )
        r = await apply(app, [base])
        eid = r.added[0].id
        ctx = app.state.chronos
        store = ctx.service(EventStore)
        async with ctx.db.write() as s:
            await store.update_metadata(s, eid, {"command_id": 7})
            row = await store.row(s, eid)
            await store.patch(s, row, sub_tasks_done={"1": True, "2": True})
        async with ctx.db.read() as s:
            got = await store.get(s, eid)
        assert got.event.all_done and got.event.metadata == {"command_id": 7}
        # Same source version: unchanged, local edits stay.
        r = await apply(app, [base])
        assert r.unchanged == 1
        # New source version: re-applied on top.
        r = await apply(app, [base.model_copy(update={"title": "Renamed upstream"})])
        assert len(r.updated) == 1
        stored = r.updated[0].event
        assert stored.title == "Renamed upstream" and stored.all_done and stored.metadata == {"command_id": 7}
        async with ctx.db.write() as s:
            await store.update_metadata(s, eid, {"command_id": None})
            got = await store.get(s, eid)
        assert got.event.metadata == {}


async def test_spans_track_longest_duration(chronos_app):
    from chronos_events.models import EventSpan

    async with chronos_app(plugins=PLUGINS) as app:
        await apply(app, [ev("short", T0, 30), ev("long", T0, 60 * 24 * 3), ev("h", T0, 120, calendar="home")])
        await apply(app, [ev("shorter", T0, 10)])
        ctx = app.state.chronos
        async with ctx.db.read() as s:
            rows = dict((await s.execute(select(EventSpan.calendar_id, EventSpan.max_duration_seconds))).all())
            n = (await s.execute(select(func.count()).select_from(EventSpan))).scalar()
        assert rows == {"work": 3 * 86400, "home": 7200} and n == 2


def test_sqlite_rows_of_new_events_match_their_column_values():
    """A full sync builds SQLite rows straight from the events; they hold exactly what the
    column values would (same order, same conversions)."""
    from datetime import date

    from chronos.plugin import utcnow
    from events_support import all_day

    from chronos_events.store import INSERT_COLUMNS, _sqlite_new_row, _sqlite_row, _sqlite_time, row_values

    events = [
        ev("plain", T0),
        ev(
            "rich",
            T0,
            description="[ ] one\n[x] two",
            tags=["a", "b"],
            timezone="Europe/Berlin",
            location="Here",
            sub_tasks=[{"id": "1", "text": "one"}, {"id": "2", "text": "two", "done": True}],
            metadata={"series": {"uid": "s"}, "n": 1},
            status="tentative",
            transparency="free",
            mode="auto-plan",
        ),
        all_day("day", date(2030, 3, 4), days=2, recurrence_id="20300304"),
    ]
    now = utcnow()
    for e in events:
        h = e.content_hash()
        values = {**row_values(e), "content_hash": h, "source_hash": h, "local_overrides": None}
        values.update(created_at=now, updated_at=now)
        assert _sqlite_new_row(e, h, _sqlite_time(now)) == _sqlite_row(values, INSERT_COLUMNS)
