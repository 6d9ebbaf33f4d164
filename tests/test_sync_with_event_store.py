"""The pipeline with the real `events` plugin as its store (cross-plugin integration)."""

from __future__ import annotations

import re

import pytest
from sqlalchemy import event

from chronos.db.sync_models import SyncRun
from chronos.testing import FakeSource, fake_source_plugin
from sync_support import RecordingSink, UpperEnricher, draft

pytestmark = pytest.mark.exercises_hook("register_sources", "register_enrichers", "register_sinks")

WRITE_RE = re.compile(r'^\s*(?:INSERT\s+(?:OR\s+\w+\s+)?INTO|UPDATE|DELETE\s+FROM)\s+"?(?:\w+"?\.)?"?(\w+)', re.I)


def plugins(src, **stages):
    from kernel_support import make_plugin

    hooks = {f"register_{kind}": (lambda r: lambda: list(r))(records) for kind, records in stages.items()}
    return ["events", fake_source_plugin(src), *([("fakesync", make_plugin(**hooks))] if hooks else [])]


async def run(app, **kw) -> SyncRun:
    run_id = await app.state.runtime.pipeline.run("fake", "cal", **kw)
    async with app.state.chronos.db.read() as s:
        return await s.get(SyncRun, run_id)


async def stored(client) -> dict[str, dict]:
    r = await client.get(
        "/api/v1/events",
        params={"calendar_id": "cal", "from": "2026-01-01T00:00:00Z", "to": "2027-01-01T00:00:00Z", "limit": 500},
    )
    assert r.status_code == 200, r.text
    return {e["uid"]: e for e in r.json()["items"]}


class WriteLog:
    """Tables written by every statement on the app's write engine."""

    def __init__(self, app) -> None:
        self.tables: list[str] = []
        engine = app.state.chronos.db.writer.sync_engine

        @event.listens_for(engine, "before_cursor_execute")
        def _log(conn, cursor, statement, params, context, executemany):
            m = WRITE_RE.match(statement)
            if m:
                self.tables.append(m.group(1).lower())


async def test_crash_resume_deletions_and_unchanged_items_with_the_real_store(chronos_app, api_client):
    src = FakeSource(page=2)
    src.replace(*(draft(f"e{i}", f"Meeting {i}", hours=i) for i in range(9)))
    src.fail_at = 3
    async with chronos_app(plugins=plugins(src)) as app:
        c = await api_client(app, scopes=["events.read"])
        first = await run(app)
        assert first.status == "error" and first.added == 6 and len(await stored(c)) == 6
        src.fail_at = None
        second = await run(app)
        assert (second.status, second.added, second.unchanged) == ("ok", 3, 6)
        assert sorted(await stored(c)) == sorted(f"e{i}" for i in range(9))

        log = WriteLog(app)
        third = await run(app, full=True)
        assert (third.unchanged, third.added, third.updated) == (9, 0, 0)
        # No event row was written (the job runner's heartbeat may beat meanwhile).
        assert set(log.tables) - {"job_heartbeats"} <= {"sync_runs", "sync_state"}, log.tables

        src.replace(draft("e0", "Meeting 0 moved", hours=40), *src.entries()[1:4])
        fourth = await run(app)
        assert (fourth.updated, fourth.deleted, fourth.unchanged) == (1, 5, 3)
        events = await stored(c)
        assert sorted(events) == ["e0", "e1", "e2", "e3"] and events["e0"]["title"] == "Meeting 0 moved"


async def test_failure_isolation_with_the_real_store(chronos_app, api_client):
    src = FakeSource(page=2)
    src.replace(draft("a", "fine"), draft("b", "boom"), draft("c", "explode"), draft("d", "ok too"))
    src.page = 4
    sink = RecordingSink()
    sink.trigger = "EXPLODE"  # the sink sees titles after the enricher upper-cased them
    async with chronos_app(plugins=plugins(src, enrichers=[UpperEnricher()], sinks=[sink])) as app:
        result = await run(app)
        assert (result.status, result.added, result.failed) == ("partial", 2, 2)
        assert {(e["uid"], e["stage"]) for e in result.errors} == {("b", "enrich"), ("c", "sink")}
        events = await stored(await api_client(app, scopes=["events.read"]))
        assert sorted(events) == ["a", "d"] and events["a"]["title"] == "FINE"
        assert sorted(sink.seen_added) == ["a", "d"]
