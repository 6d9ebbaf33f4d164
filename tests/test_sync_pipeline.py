"""The sync pipeline engine: batches, cursors, reconciliation, failure isolation, locking."""

from __future__ import annotations

import asyncio
import fcntl
from datetime import UTC, date, datetime

import pytest
from sqlalchemy import text

from chronos.db.sync_models import SyncRun, SyncState
from chronos.pipeline import SyncBusy, UnknownCalendar, job_name, sqlite_lock_file
from chronos.plugin import WHOLE_SERIES, EventDraft, EventIntake, InvalidInput
from chronos.testing import FakeSource, fake_source_plugin
from sync_support import (
    RaisingNormalizer,
    RecordingSink,
    TableStore,
    UpperEnricher,
    draft,
    pipeline_plugins,
    row_count,
    stored_rows,
)

pytestmark = pytest.mark.exercises_hook(
    "register_sources", "register_normalizers", "register_enrichers", "register_sinks"
)


def pipeline_of(app):
    return app.state.runtime.pipeline


async def get_run(app, run_id: int) -> SyncRun:
    async with app.state.chronos.db.read() as s:
        return await s.get(SyncRun, run_id)


async def get_state(app, source="fake", cal="cal") -> SyncState:
    async with app.state.chronos.db.read() as s:
        return await s.get(SyncState, (source, cal))


def items(n: int, prefix: str = "e") -> list[EventDraft]:
    return [draft(f"{prefix}{i}", f"Meeting {i}", hours=i) for i in range(n)]


async def test_full_sync_stores_the_listing_and_records_the_run(chronos_app):
    src = FakeSource(page=2)
    src.replace(*items(5))
    sink = RecordingSink()
    async with chronos_app(plugins=pipeline_plugins(src, sinks=[sink])) as app:
        pipe = pipeline_of(app)
        run_id = await pipe.run("fake", "cal")
        run = await get_run(app, run_id)
        assert (run.status, run.added, run.updated, run.unchanged, run.deleted, run.failed) == ("ok", 5, 0, 0, 0, 0)
        assert run.batches == 3 and run.cursor == {"version": 1} and run.trigger == "manual"
        assert run.finished_at is not None and run.duration_ms is not None and run.errors == []
        rows = await stored_rows(app)
        assert sorted(rows) == [(f"e{i}", "") for i in range(5)]
        assert rows[("e2", "")]["start_utc"].startswith("2026-03-02T11:00:00")
        assert sorted(sink.seen_added) == [f"e{i}" for i in range(5)]
        assert all(b.run_id == run_id and b.source == "fake" and b.calendar_id == "cal" for b in sink.batches)
        state = await get_state(app)
        assert state.cursor == {"version": 1} and state.last_status == "ok" and state.last_run_id == run_id

        # Nothing changed at the source: the saved cursor makes it a no-op run.
        run2 = await get_run(app, await pipe.run("fake", "cal"))
        assert run2.status == "ok" and run2.not_modified and run2.batches == 0
        assert src.fetched[-1] == {"version": 1}


async def test_changes_deletions_and_unchanged_items(chronos_app):
    src = FakeSource(page=2)
    src.replace(*items(4))
    store = TableStore()
    sink = RecordingSink()
    async with chronos_app(plugins=pipeline_plugins(src, store, sinks=[sink])) as app:
        pipe = pipeline_of(app)
        await pipe.run("fake", "cal")
        writes, seen = store.writes, len(sink.batches)
        src.replace(draft("e0", "Meeting 0 moved", hours=30), *items(4)[1:3], draft("new", "Fresh"))
        run = await get_run(app, await pipe.run("fake", "cal"))
        assert (run.added, run.updated, run.unchanged, run.deleted, run.failed) == (1, 1, 2, 1, 0)
        assert store.writes - writes == 3  # one insert, one update, one delete: unchanged rows are not written
        rows = await stored_rows(app)
        assert sorted(rows) == [("e0", ""), ("e1", ""), ("e2", ""), ("new", "")]
        assert rows[("e0", "")]["title"] == "Meeting 0 moved"
        last = sink.batches[seen:]
        assert [s.event.uid for b in last for s in b.deleted] == ["e3"]
        updated = [s for b in last for s in b.updated]
        assert [s.event.uid for s in updated] == ["e0"]
        assert [b.previous[updated[0].id].title for b in last if b.updated] == ["Meeting 0"]

        # A forced full resync of identical content: every item unchanged, no write, no sink call.
        before_writes, before_batches = store.writes, len(sink.batches)
        run = await get_run(app, await pipe.run("fake", "cal", full=True))
        assert (run.full, run.unchanged, run.added, run.updated, run.deleted) == (True, 4, 0, 0, 0)
        assert store.writes == before_writes and len(sink.batches) == before_batches
        assert src.fetched[-1] is None  # the cursor was not sent


async def test_full_listing_deletes_nothing_until_complete(chronos_app):
    src = FakeSource(page=2)
    src.replace(*items(6))
    async with chronos_app(plugins=pipeline_plugins(src)) as app:
        pipe = pipeline_of(app)
        await pipe.run("fake", "cal")
        # The source now lists only two events, but fails after the first page.
        src.replace(*items(2))
        src.page = 1
        src.fail_at = 1
        run = await get_run(app, await pipe.run("fake", "cal"))
        assert run.status == "error" and "connection lost" in run.error and run.deleted == 0
        assert len(await stored_rows(app)) == 6
        state = await get_state(app)
        assert state.last_status == "error" and "connection lost" in state.last_error
        assert state.cursor == {"version": 1}  # the old cursor: the listing is not skipped next time
        src.fail_at = None
        run = await get_run(app, await pipe.run("fake", "cal"))
        assert (run.status, run.deleted) == ("ok", 4)
        assert sorted(await stored_rows(app)) == [("e0", ""), ("e1", "")]


@pytest.mark.parametrize("fail_at", [1, 2])
async def test_crash_between_batches_then_resync_converges(chronos_app, fail_at):
    src = FakeSource(page=2)
    src.replace(*items(7))
    src.fail_at = fail_at
    async with chronos_app(plugins=pipeline_plugins(src)) as app:
        pipe = pipeline_of(app)
        run = await get_run(app, await pipe.run("fake", "cal"))
        assert run.status == "error" and run.added == 2 * fail_at
        assert await row_count(app) == 2 * fail_at  # the committed batches stay
        assert (await get_state(app)).cursor is None
        src.fail_at = None
        run = await get_run(app, await pipe.run("fake", "cal"))
        assert run.status == "ok" and (run.added, run.unchanged) == (7 - 2 * fail_at, 2 * fail_at)
        assert sorted(await stored_rows(app)) == sorted((f"e{i}", "") for i in range(7))
        assert await row_count(app) == 7


async def test_incremental_source_resumes_from_the_last_committed_page(chronos_app):
    src = FakeSource(page=2, mode="log")
    src.add(*items(5))
    src.remove("e1")
    src.put("e0", "renamed")
    src.fail_at = 2
    async with chronos_app(plugins=pipeline_plugins(src)) as app:
        pipe = pipeline_of(app)
        run = await get_run(app, await pipe.run("fake", "cal"))
        assert run.status == "error" and run.cursor == {"pos": 4}
        src.fail_at = None
        run = await get_run(app, await pipe.run("fake", "cal"))
        assert src.fetched[-1] == {"pos": 4}  # resumed, not restarted
        assert (run.status, run.added, run.updated, run.deleted) == ("ok", 1, 1, 1)
        rows = await stored_rows(app)
        assert sorted(rows) == [("e0", ""), ("e2", ""), ("e3", ""), ("e4", "")]
        assert rows[("e0", "")]["title"] == "renamed"


async def test_a_whole_series_tombstone_deletes_every_entry_of_its_uid(chronos_app):
    src = FakeSource(page=10, mode="log")
    src.add(*(draft("s", f"Weekly {i}", hours=24 * 7 * i, recurrence_id=f"2026010{i + 1}T090000Z") for i in range(3)))
    src.add(draft("s-other", "Not part of it"), draft("single", "One-off"))
    async with chronos_app(plugins=pipeline_plugins(src)) as app:
        pipe = pipeline_of(app)
        await pipe.run("fake", "cal")
        src.changes["cal"].append(("delete", ("s", WHOLE_SERIES)))
        src.changes["cal"].append(("delete", ("single", "")))
        src._dirty.add("cal")
        run = await get_run(app, await pipe.run("fake", "cal"))
        assert (run.status, run.deleted) == ("ok", 4)
        assert sorted(await stored_rows(app)) == [("s-other", "")]


async def test_cancelled_mid_batch_rolls_the_batch_back(chronos_app):
    src = FakeSource(page=2)
    src.replace(*items(4))
    sink = RecordingSink()
    async with chronos_app(plugins=pipeline_plugins(src, sinks=[sink])) as app:
        pipe = pipeline_of(app)
        sink.gate = asyncio.Event()  # the first batch's sink call blocks
        run_id = await pipe.start("fake", "cal")
        await asyncio.wait_for(sink.entered.wait(), 10)
        await pipe.stop(timeout=0)  # shutdown: the run is cancelled inside its batch transaction
        run = await get_run(app, run_id)
        assert run.status == "error" and "cancelled" in run.error
        assert await row_count(app) == 0
        assert not pipe.is_running("fake", "cal")
        sink.gate = None
        run = await get_run(app, await pipe.run("fake", "cal"))
        assert run.status == "ok" and await row_count(app) == 4


async def test_a_raising_enricher_fails_only_its_items(chronos_app):
    src = FakeSource(page=2)
    src.replace(draft("a", "fine"), draft("b", "boom here"), draft("c", "also fine"))
    src.page = 3
    enricher = UpperEnricher()
    sink = RecordingSink()
    async with chronos_app(plugins=pipeline_plugins(src, enrichers=[enricher], sinks=[sink])) as app:
        pipe = pipeline_of(app)
        run = await get_run(app, await pipe.run("fake", "cal"))
        assert (run.status, run.added, run.failed) == ("partial", 2, 1)
        [err] = run.errors
        assert err["stage"] == "enrich" and err["plugin"] == "fakesync" and err["name"] == "upper"
        assert err["uid"] == "b" and "cannot handle 'boom'" in err["message"]
        rows = await stored_rows(app)
        assert sorted(rows) == [("a", ""), ("c", "")] and rows[("a", "")]["title"] == "FINE"
        assert sorted(sink.seen_added) == ["a", "c"]
        state = await get_state(app)
        assert state.last_status == "partial" and "1 item(s) failed" in state.last_error
        assert state.cursor is None  # not saved: the failed item must come again

        enricher.trigger = "never-matches"
        run = await get_run(app, await pipe.run("fake", "cal"))
        assert (run.status, run.added, run.unchanged, run.failed) == ("ok", 1, 2, 0)
        assert sorted(await stored_rows(app)) == [("a", ""), ("b", ""), ("c", "")]


async def test_a_raising_sink_rolls_back_only_its_items(chronos_app):
    src = FakeSource(page=2)
    src.replace(draft("a", "one"), draft("b", "explode"), draft("c", "three"), draft("d", "four"))
    src.page = 4
    sink = RecordingSink()
    async with chronos_app(plugins=pipeline_plugins(src, sinks=[sink])) as app:
        run = await get_run(app, await pipeline_of(app).run("fake", "cal"))
        assert (run.status, run.added, run.failed) == ("partial", 3, 1)
        assert run.errors[0]["stage"] == "sink" and run.errors[0]["name"] == "recorder" and run.errors[0]["uid"] == "b"
        # The event the sink failed on is not stored: stored rows and sink effects stay consistent.
        assert sorted(await stored_rows(app)) == [("a", ""), ("c", ""), ("d", "")]
        assert sorted(sink.seen_added) == ["a", "c", "d"]


async def test_a_raising_normalizer_and_invalid_drafts_are_isolated(chronos_app):
    src = FakeSource(page=2)
    naive = EventDraft(uid="naive", start=datetime(2026, 3, 2, 9), end=datetime(2026, 3, 2, 10))
    backwards = EventDraft(
        uid="backwards", start=datetime(2026, 3, 2, 9, tzinfo=UTC), end=datetime(2026, 3, 2, 8, tzinfo=UTC)
    )
    allday = EventDraft(uid="holiday", start=date(2026, 3, 3), end=date(2026, 3, 4), title="Holiday")
    src.replace(draft("ok", "good"), draft("bad", "boom"), naive, backwards, allday)
    src.page = 10
    async with chronos_app(plugins=pipeline_plugins(src, normalizers=[RaisingNormalizer()])) as app:
        run = await get_run(app, await pipeline_of(app).run("fake", "cal"))
        assert (run.status, run.added, run.failed) == ("partial", 2, 3)
        by_uid = {e["uid"]: e for e in run.errors}
        assert by_uid["bad"]["stage"] == "normalize" and by_uid["bad"]["name"] == "picky_normalizer"
        assert by_uid["naive"]["stage"] == "validate" and "naive" in by_uid["naive"]["message"]
        assert by_uid["backwards"]["stage"] == "validate" and "before start" in by_uid["backwards"]["message"]
        rows = await stored_rows(app)
        assert sorted(rows) == [("holiday", ""), ("ok", "")]
        h = rows[("holiday", "")]
        assert h["all_day"] and h["start_date"] == "2026-03-03" and h["end_date"] == "2026-03-04"
        assert h["start_utc"].startswith("2026-03-03T00:00:00")


async def test_unreadable_entries_are_reported_and_their_events_kept(chronos_app):
    src = FakeSource(page=2)
    src.replace(*items(3))
    async with chronos_app(plugins=pipeline_plugins(src)) as app:
        pipe = pipeline_of(app)
        await pipe.run("fake", "cal")
        # e1 became unreadable at the source (e.g. its RRULE broke): report it, keep the last good copy.
        src.replace(items(3)[0])
        src.errors["cal"] = [("e1", "invalid RRULE: FREQ=SOMETIMES")]
        run = await get_run(app, await pipe.run("fake", "cal"))
        assert (run.status, run.failed, run.deleted) == ("partial", 1, 1)
        assert run.errors[0]["stage"] == "source" and "FREQ=SOMETIMES" in run.errors[0]["message"]
        assert sorted(await stored_rows(app)) == [("e0", ""), ("e1", "")]


async def test_runs_fail_clearly_without_an_event_store(chronos_app):
    src = FakeSource(page=2)
    src.replace(*items(1))
    async with chronos_app(plugins=[fake_source_plugin(src)]) as app:
        run = await get_run(app, await pipeline_of(app).run("fake", "cal"))
        assert run.status == "error" and "enable the `events` plugin" in run.error


async def test_one_run_per_calendar_at_a_time(chronos_app, database):
    src = FakeSource(page=2, calendars=("cal", "other"))
    src.replace(*items(2))
    src.replace(*items(2), calendar="other")
    src.gate = asyncio.Event()
    async with chronos_app(plugins=pipeline_plugins(src)) as app:
        pipe = pipeline_of(app)
        first = await pipe.start("fake", "cal")
        with pytest.raises(SyncBusy):
            await pipe.run("fake", "cal")
        other = await pipe.start("fake", "other")  # another calendar is independent
        with pytest.raises(UnknownCalendar):
            await pipe.run("fake", "nope")
        src.gate.set()
        await pipe.wait()
        assert (await get_run(app, first)).status == "ok" and (await get_run(app, other)).status == "ok"
        if database.backend == "postgresql":
            # Another process holding the advisory lock makes this one skip.
            key = pipe._pg_key(("fake", "cal"))
            async with app.state.chronos.db.reader.connect() as conn:
                assert (await conn.execute(text("SELECT pg_try_advisory_lock(:k)"), {"k": key})).scalar()
                with pytest.raises(SyncBusy, match="another process"):
                    await pipe.run("fake", "cal")
                await conn.execute(text("SELECT pg_advisory_unlock(:k)"), {"k": key})
            assert (await get_run(app, await pipe.run("fake", "cal"))).status == "ok"
        else:
            # On SQLite the cross-process part is a flock on a file beside the database.
            path = sqlite_lock_file(app.state.chronos.db.url, ("fake", "cal"))
            with open(path, "a+b") as other:
                fcntl.flock(other, fcntl.LOCK_EX | fcntl.LOCK_NB)
                with pytest.raises(SyncBusy, match="another process"):
                    await pipe.run("fake", "cal")
                assert not pipe.is_running("fake", "cal")  # a refused run holds nothing
            assert (await get_run(app, await pipe.run("fake", "cal"))).status == "ok"


async def test_a_run_left_running_by_a_dead_process_is_marked_interrupted(chronos_app):
    src = FakeSource(page=2)
    async with chronos_app(plugins=pipeline_plugins(src)) as app:
        async with app.state.chronos.db.write() as s:
            ghost = SyncRun(source="fake", calendar_id="cal", trigger="schedule", status="running", errors=[])
            s.add(ghost)
        await pipeline_of(app).run("fake", "cal")
        ghost = await get_run(app, ghost.id)
        assert ghost.status == "error" and "interrupted" in ghost.error


async def test_each_calendar_gets_a_scheduled_job(chronos_app):
    src = FakeSource(page=2, calendars=("cal", "Team Calendar!"))
    src.replace(*items(1))
    async with chronos_app(plugins=pipeline_plugins(src)) as app:
        runner = app.state.chronos.jobs
        assert {"sync.fake.cal", "sync.fake.team-calendar"} <= set(runner.jobs)
        plugin, job = runner.jobs["sync.fake.cal"]
        assert plugin == "kernel" and job.interval_seconds == 3600 and 0 < job.jitter_seconds <= 60
        result = await runner.run_now("sync.fake.cal")
        run = await get_run(app, result["run_id"])
        assert run.status == "ok" and run.trigger == "manual" and run.added == 1
    assert job_name("a" * 40, "b" * 40).startswith("sync.") and len(job_name("a" * 40, "b" * 40)) <= 63


async def test_event_intake_runs_drafts_through_every_stage(chronos_app):
    enricher = UpperEnricher()
    sink = RecordingSink()
    sink.consume = "ACTION"
    async with chronos_app(plugins=pipeline_plugins(enrichers=[enricher], sinks=[sink])) as app:
        ctx = app.state.chronos
        intake = ctx.service(EventIntake)
        stored = await intake.ingest(
            "local", "notes", [draft("x1", "plan the week"), draft("x2", "ACTION: deploy")], actor="system:test"
        )
        assert [s.event.title for s in stored] == ["PLAN THE WEEK"]  # the ACTION entry was consumed by the sink
        assert sorted(await stored_rows(app, "local", "notes")) == [("x1", "")]
        async with ctx.db.read() as s:
            actions = (await s.execute(text("SELECT actor, action, entity FROM audit_log"))).all()
        assert [tuple(a) for a in actions] == [("system:test", "create", "event")]

        with pytest.raises(InvalidInput) as err:
            await intake.ingest(
                "local", "notes", [draft("ok", "fine"), EventDraft(uid="n", start=datetime(2026, 1, 1, 9))]
            )
        assert err.value.errors is not None and err.value.errors[0]["pointer"] == "/1"
        assert sorted(await stored_rows(app, "local", "notes")) == [("x1", "")]  # all or nothing

        # Inside the caller's transaction: a later failure there rolls the ingest back too.
        with pytest.raises(RuntimeError):
            async with ctx.db.write() as s:
                await intake.ingest("local", "notes", [draft("x3", "later")], session=s)
                raise RuntimeError("caller failed")
        assert ("x3", "") not in await stored_rows(app, "local", "notes")


async def test_stages_run_in_ascending_order_then_by_name(chronos_app):
    from chronos.plugin import Enricher, Normalizer

    def normalizer(name, order):
        class Mark(Normalizer):
            async def normalize(self, drafts, ctx):
                for d in drafts:
                    d.title += f"|{self.name}"

        Mark.name, Mark.order = name, order
        return Mark()

    def enricher(name, order):
        class Mark(Enricher):
            async def enrich(self, events, session, ctx):
                for e in events:
                    e.title += f"|{self.name}"

        Mark.name, Mark.order = name, order
        return Mark()

    src = FakeSource(page=2)
    src.replace(draft("a", "t"))
    stages = {
        "normalizers": [normalizer("n_late", 200), normalizer("n_b", 100), normalizer("n_a", 100)],
        "enrichers": [enricher("e_first", 1), enricher("e_second", 2)],
    }
    async with chronos_app(plugins=pipeline_plugins(src, **stages)) as app:
        await pipeline_of(app).run("fake", "cal")
        rows = await stored_rows(app)
        assert rows[("a", "")]["title"] == "t|n_a|n_b|n_late|e_first|e_second"
