"""Schema: migrations match the models, FTS survives batch rebuilds, window queries use an index."""

from __future__ import annotations

import re
from datetime import timedelta

from sqlalchemy import text

from chronos import testing as kit
from events_support import T0, apply, ev

from chronos_events.query import EventQuery, QueryBuilder
from chronos_events.search import ensure_sqlite_fts

PLUGINS = ["events"]


async def test_models_match_migrations(chronos_app, database):
    async with chronos_app(plugins=PLUGINS):
        pass
    # Other installed plugins' models are loaded too but not migrated here.
    assert await kit.schema_drift(database, OWN_TABLES) == []


OWN_TABLES = {"events", "event_links", "events_tombstones", "events_spans", "events_feed_tokens"}


async def _plan(app, compiled) -> str:
    ctx = app.state.chronos
    async with ctx.db.read() as s:
        if ctx.db.is_sqlite:
            rows = (await s.execute(text("EXPLAIN QUERY PLAN " + compiled.sql), compiled.params)).all()
            return "\n".join(str(r[-1]) for r in rows)
        # A handful of test rows would make any plan cheap: forbid sequential scans
        # so the plan shows which index the query can use.
        await s.execute(text("SET LOCAL enable_seqscan = off"))
        rows = (await s.execute(text("EXPLAIN " + compiled.sql), compiled.params)).all()
        return "\n".join(r[0] for r in rows)


async def test_window_queries_use_an_index(chronos_app):
    async with chronos_app(plugins=PLUGINS) as app:
        await apply(app, [ev(f"e{i}", T0 + timedelta(hours=i), calendar=f"c{i % 3}") for i in range(60)])
        builder = QueryBuilder(app.state.chronos.db.dialect)
        one = builder.page(EventQuery(start=T0, end=T0 + timedelta(days=7), calendars=["c1"], limit=50))
        allc = builder.page(EventQuery(start=T0, end=T0 + timedelta(days=1), limit=50))
        past = builder.page(EventQuery(start=T0 + timedelta(days=2), direction="past", limit=50))
        text_q = builder.page(EventQuery(start=T0, end=T0 + timedelta(days=30), text="event*", limit=50))
        sqlite = app.state.chronos.db.is_sqlite
        plan_one = await _plan(app, one)
        plan_all = await _plan(app, allc)
        plan_past = await _plan(app, past)
        plan_text = await _plan(app, text_q)
        if sqlite:
            assert "USING INDEX ix_events_calendar_start (calendar_id=? AND start_utc>? AND start_utc<?)" in plan_one, (
                plan_one
            )
            assert "USING INDEX ix_events_start (start_utc>? AND start_utc<?)" in plan_all, plan_all
            assert (
                "SCAN events USING INDEX ix_events_start" in plan_past
                or "SEARCH events USING INDEX ix_events_start" in plan_past
            ), plan_past
            assert "TEMP B-TREE" not in plan_one + plan_all + plan_past
            # text in a window: the start index drives, the FTS matches are built once
            assert "USING INDEX ix_events_start (start_utc>? AND start_utc<?)" in plan_text, plan_text
            assert "VIRTUAL TABLE INDEX" in plan_text and not re.search(r"SCAN events(?!_fts)", plan_text), plan_text
            # text without a window: the FTS matches drive
            plan_all_time = await _plan(app, builder.page(EventQuery(direction="all", text="event*", limit=50)))
            assert "INTEGER PRIMARY KEY" in plan_all_time and "VIRTUAL TABLE INDEX" in plan_all_time, plan_all_time
        else:
            # (with a handful of rows PostgreSQL may prefer either start index; both bound the range)
            for plan in (plan_one, plan_all):
                assert re.search(r"Index Scan (Backward )?using ix_events_(calendar_)?start on events", plan), plan
                assert re.search(r"Index Cond: .*start_utc >= ", plan), plan
            assert "ix_events_start" in plan_past or "ix_events_calendar_start" in plan_past, plan_past
            assert "ix_events_search" in plan_text or "ix_events_start" in plan_text, plan_text
            assert "Seq Scan on events " not in plan_one + plan_all + plan_past


async def test_fts_triggers_are_recreated_after_a_rebuild(chronos_app, database):
    if database.backend != "sqlite":
        return  # PostgreSQL keeps its expression index through ALTER TABLE
    async with chronos_app(plugins=PLUGINS) as app:
        await apply(app, [ev("a", T0, title="alpha")])
        ctx = app.state.chronos
        # What a batch migration does to the table: its triggers disappear.
        async with ctx.db.write() as s:
            for name in ("events_fts_ai", "events_fts_ad", "events_fts_au"):
                await s.execute(text(f"DROP TRIGGER {name}"))
        await apply(app, [ev("b", T0, title="bravo")])  # written while the triggers were gone
        engine = ctx.db.writer
        async with engine.begin() as conn:
            await conn.run_sync(ensure_sqlite_fts)
            await conn.run_sync(ensure_sqlite_fts)  # idempotent
        await apply(app, [ev("c", T0, title="charlie")])
        async with ctx.db.read() as s:
            found = {
                w: (
                    await s.execute(text("SELECT count(*) FROM events_fts WHERE events_fts MATCH :q"), {"q": w})
                ).scalar()
                for w in ("alpha", "bravo", "charlie")
            }
            triggers = (
                await s.execute(
                    text("SELECT count(*) FROM sqlite_master WHERE type='trigger' AND name LIKE 'events_fts_%'")
                )
            ).scalar()
        assert found == {"alpha": 1, "bravo": 1, "charlie": 1} and triggers == 3
