"""One calendar never starves the others: run budget, fair expansion threads, a POST that answers,
and a message on every failed run.

The slow parts here block on events the test releases (never on time), and
every wait is bounded; the assertions are about order and outcome.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator
from typing import Any

import pytest
from sqlalchemy import text

from chronos import testing as kit
from chronos.contracts import ical
from chronos.db.sync_models import SyncRun, SyncState
from chronos.plugin import CalendarSpec, EventDraft, Job, Source, SourceBatch, SourceError
from chronos.testing import FakeSource
from kernel_support import make_plugin
from sync_support import RecordingSink, TableStore, draft, pipeline_plugins, stored_rows

WAIT = 60  # the bound of every wait below: a hang fails the test instead of stalling the suite


class StallingSource(FakeSource):
    """A FakeSource whose listing of the calendars in ``stall`` stops before batch ``stall_from``
    until ``release`` is set (forever when it is never set), or raises ``raise_exc`` there."""

    def __init__(self, *args: Any, **kw: Any) -> None:
        super().__init__(*args, **kw)
        self.stall: set[str] = set()
        self.stall_from = 0
        self.release = asyncio.Event()
        self.stalled = asyncio.Event()
        self.raise_exc: BaseException | None = None

    async def fetch(self, calendar: CalendarSpec, cursor: dict[str, Any] | None) -> AsyncIterator[SourceBatch]:
        index = 0
        async for batch in super().fetch(calendar, cursor):
            if calendar.id in self.stall and index >= self.stall_from:
                if self.raise_exc is not None:
                    raise self.raise_exc
                self.stalled.set()
                await self.release.wait()
            index += 1
            yield batch


def stalling(*calendars: str, page: int = 1) -> StallingSource:
    src = StallingSource(calendars=calendars, page=page)
    for c in calendars:
        src.add(draft(f"{c}-1", "Standup"), draft(f"{c}-2", "Review", hours=2), draft(f"{c}-3", "Retro"), calendar=c)
    return src


async def run_row(app: Any, run_id: int) -> SyncRun:
    async with app.state.chronos.db.read() as s:
        row = await s.get(SyncRun, run_id)
    assert row is not None
    return row


async def finished(app: Any, run_id: int) -> SyncRun:
    """The run once it is no longer running (bounded)."""
    for _ in range(WAIT * 20):
        row = await run_row(app, run_id)
        if row.status != "running":
            return row
        await asyncio.sleep(0.05)
    raise AssertionError(f"run {run_id} still running after {WAIT} s")


# -- the run budget ----------------------------------------------------------------------------


async def test_a_run_over_budget_fails_with_advice_and_keeps_the_last_good_data(chronos_app):
    src = stalling("cal")
    async with chronos_app(plugins=pipeline_plugins(src), config={"sync": {"run_budget_seconds": 1}}) as app:
        first = await kit.sync_now(app, "fake", "cal")
        assert first.status == "ok" and first.added == 3
        async with app.state.chronos.db.read() as s:
            cursor = (await s.get(SyncState, ("fake", "cal"))).cursor

        # The entry is gone at the source, but the listing that would show it never completes.
        src.remove("cal-2", calendar="cal")
        src.stall, src.stall_from = {"cal"}, 1
        run = await asyncio.wait_for(kit.sync_now(app, "fake", "cal"), WAIT)
        assert run.status == "error"
        assert run.error == (
            "calendar 'cal' (fake): sync stopped after 1 s (sync.run_budget_seconds) while waiting for the source"
            " (after 1 batch(es)); the last good data is kept; raise sync.run_budget_seconds or shorten the"
            " calendar's window (horizon_days)"
        )
        assert set(await stored_rows(app)) == {("cal-1", ""), ("cal-2", ""), ("cal-3", "")}
        async with app.state.chronos.db.read() as s:
            state = await s.get(SyncState, ("fake", "cal"))
        assert state.cursor == cursor and state.last_status == "error" and state.last_error == run.error
        assert not runtime_pipeline(app).is_running("fake", "cal")  # the lock is free again

        src.stall = set()
        again = await kit.sync_now(app, "fake", "cal")
        assert again.status == "ok" and again.deleted == 1


def runtime_pipeline(app: Any) -> Any:
    return kit.runtime_of(app).pipeline


# -- every failed run says why ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("exc", "expected"),
    [
        (SourceError(""), "SourceError: raised without a message; the service log has its traceback"),
        (TimeoutError(), "TimeoutError: an operation timed out without saying which"),
        (ConnectionResetError(), "ConnectionResetError: a connection was lost without details"),
        (RuntimeError(), "RuntimeError: raised without a message; the service log has its traceback"),
        (SourceError("HTTP 500 from https://example.com"), "HTTP 500 from https://example.com"),
    ],
)
async def test_a_failed_run_always_carries_a_message(chronos_app, exc, expected):
    src = stalling("cal")
    src.stall, src.stall_from, src.raise_exc = {"cal"}, 0, exc
    async with chronos_app(plugins=pipeline_plugins(src)) as app:
        run = await kit.sync_now(app, "fake", "cal")
        assert run.status == "error"
        assert run.error.startswith(expected), run.error


async def test_a_run_cancelled_mid_batch_says_so(chronos_app):
    src = stalling("cal")
    src.stall, src.stall_from = {"cal"}, 1
    async with chronos_app(plugins=pipeline_plugins(src)) as app:
        pipeline = runtime_pipeline(app)
        run_id = await pipeline.start("fake", "cal")
        await asyncio.wait_for(src.stalled.wait(), WAIT)
        await pipeline.stop(timeout=0.01)
        row = await finished(app, run_id)
        assert row.status == "error" and row.error and "stopped" in row.error


# -- fair expansion ----------------------------------------------------------------------------


class HeavySource(Source):
    """One calendar whose every chunk blocks an expansion thread until ``release`` is set."""

    name = "heavy"

    def __init__(self, chunks: int = 4) -> None:
        self.chunks = chunks
        self.release = threading.Event()
        self.entered = threading.Event()
        self.peak = 0
        self._lock = threading.Lock()
        self._inside = 0

    def calendars(self) -> list[CalendarSpec]:
        return [CalendarSpec("huge", interval_seconds=3600)]

    def _expand(self, i: int) -> list[EventDraft]:
        with self._lock:
            self._inside += 1
            self.peak = max(self.peak, self._inside)
        self.entered.set()
        try:
            if not self.release.wait(WAIT):
                raise TimeoutError("the test never released the heavy calendar")
            return [draft(f"heavy-{i}", "Series instance")]
        finally:
            with self._lock:
                self._inside -= 1

    async def fetch(self, calendar: CalendarSpec, cursor: dict[str, Any] | None) -> AsyncIterator[SourceBatch]:
        expansion = ical.expansion()
        key = (self.name, calendar.id)
        # Every chunk asked for at once, as a source parsing in parallel does.
        work = [asyncio.ensure_future(expansion.run(key, self._expand, i)) for i in range(self.chunks)]
        try:
            for i, chunk in enumerate(work):
                yield SourceBatch(drafts=await chunk, full=True, complete=i == self.chunks - 1)
        finally:
            for chunk in work:
                chunk.cancel()


def weekly_ics(uid: str) -> str:
    return (
        "BEGIN:VCALENDAR\r\nVERSION:2.0\r\nPRODID:-//test//EN\r\nBEGIN:VEVENT\r\n"
        f"UID:{uid}\r\nDTSTAMP:20260101T000000Z\r\nDTSTART;TZID=Europe/Berlin:20260105T090000\r\n"
        "DTEND;TZID=Europe/Berlin:20260105T100000\r\nRRULE:FREQ=WEEKLY;COUNT=10\r\nSUMMARY:Weekly\r\n"
        f"END:VEVENT\r\nBEGIN:VEVENT\r\nUID:{uid}-single\r\nDTSTAMP:20260101T000000Z\r\n"
        "DTSTART:20260110T090000Z\r\nDTEND:20260110T100000Z\r\nSUMMARY:Once\r\nEND:VEVENT\r\nEND:VCALENDAR\r\n"
    )


async def test_a_calendar_expanding_slowly_never_holds_every_thread(chronos_app, tmp_path):
    heavy = HeavySource()
    files = []
    for n in range(3):
        path = tmp_path / f"normal{n}.ics"
        path.write_text(weekly_ics(f"normal{n}"))
        files.append({"id": f"normal{n}", "path": str(path), "past_days": 3650, "horizon_days": 3650})
    job_done = asyncio.Event()

    async def other_plugins_job(job: Any) -> dict[str, Any]:
        # Another plugin's job using the default thread pool, as backups do.
        result = await asyncio.to_thread(lambda: 42)
        job_done.set()
        return {"result": result}

    plugins = [
        *pipeline_plugins(),
        ("heavysource", make_plugin(register_sources=lambda: [heavy])),
        ("otherjobs", make_plugin(register_jobs=lambda ctx: [Job("other.work", other_plugins_job)])),
        "ics",
    ]
    config = {"sync": {"expansion_threads": 2}, "ics": {"calendars": files, "parse_workers": 0}}
    async with chronos_app(plugins=plugins, config=config) as app:
        pipeline = runtime_pipeline(app)
        expansion = ical.expansion()
        assert (expansion.threads, expansion.per_calendar) == (2, 1)
        try:
            heavy_run = await pipeline.start("heavy", "huge")
            assert await asyncio.to_thread(heavy.entered.wait, WAIT)
            started, skipped = await pipeline.start_many(pipeline.select("ics"))
            assert not skipped and len(started) == 3
            for _ref, run_id in started:
                row = await finished(app, run_id)
                assert row.status == "ok" and row.added == 11, (row.status, row.error)
            # Another plugin's job runs too.
            await asyncio.wait_for(app.state.chronos.jobs.run_now("other.work"), WAIT)
            assert job_done.is_set()
            # … all while the heavy calendar is still at its first chunk, on one thread only.
            assert (await run_row(app, heavy_run)).status == "running"
            assert expansion.busy(("heavy", "huge")) == 1
        finally:
            heavy.release.set()
        row = await finished(app, heavy_run)
        assert row.status == "ok" and row.added == 4
        assert heavy.peak == 1


async def test_expansion_serves_waiting_calendars_in_turn():
    """With one calendar's chunks queued, another calendar's chunk still gets a thread; a slot is
    freed only when its thread is done, not when the caller gives up."""
    expansion = ical.Expansion(2)
    gate = threading.Event()

    def work(name: str) -> str:
        gate.wait(WAIT)
        return name

    a = [asyncio.create_task(expansion.run("a", work, f"a{i}")) for i in range(3)]
    b1 = asyncio.create_task(expansion.run("b", work, "b1"))
    for _ in range(100):
        await asyncio.sleep(0)
    assert (expansion.busy("a"), expansion.busy("b")) == (1, 1)  # b1 came last but did not wait for a1..a2
    a[0].cancel()
    for _ in range(100):
        await asyncio.sleep(0)
    assert expansion.busy("a") == 1  # a0's thread is still working
    gate.set()
    assert await asyncio.wait_for(asyncio.gather(b1, *a[1:]), WAIT) == ["b1", "a1", "a2"]
    for _ in range(100):
        await asyncio.sleep(0)
    assert expansion.busy("a") == expansion.busy("b") == 0


# -- POST /api/v1/events/sync answers at once ---------------------------------------------------


async def test_post_sync_answers_while_a_sync_is_stuck_in_its_source(chronos_app, api_client):
    src = stalling("cal", "other")
    src.stall, src.stall_from = {"cal"}, 1
    async with chronos_app(plugins=pipeline_plugins(src)) as app:
        c = await api_client(app, scopes=["events.write", "events.read"])
        stuck = await asyncio.wait_for(c.post("/api/v1/events/sync", json={"calendar_id": "cal"}), 10)
        assert stuck.status_code == 202
        stuck_id = stuck.json()["runs"][0]["id"]
        await asyncio.wait_for(src.stalled.wait(), WAIT)

        r = await asyncio.wait_for(c.post("/api/v1/events/sync"), 10)
        assert r.status_code == 202, r.text
        assert [x["calendar_id"] for x in r.json()["runs"]] == ["other"]
        assert r.json()["skipped"][0]["run_id"] == stuck_id
        again = await asyncio.wait_for(c.post("/api/v1/events/sync", json={"calendar_id": "cal"}), 10)
        assert again.status_code == 409
        assert again.json()["running"] == [{"source": "fake", "calendar_id": "cal", "run_id": stuck_id}]
        src.release.set()
        await runtime_pipeline(app).wait()
        assert (await run_row(app, stuck_id)).status == "ok"


async def test_post_sync_answers_while_a_sync_holds_the_database(chronos_app, api_client, db_backend):
    src = FakeSource(calendars=("cal", "other"))
    for cal in ("cal", "other"):
        src.add(draft(f"{cal}-1", "Standup"), calendar=cal)
    sink = RecordingSink()
    sink.gate = asyncio.Event()
    async with chronos_app(plugins=pipeline_plugins(src, TableStore(), sinks=[sink])) as app:
        c = await api_client(app, scopes=["events.write", "events.read"])
        pipeline = runtime_pipeline(app)
        blocked = await pipeline.start("fake", "cal")
        await asyncio.wait_for(sink.entered.wait(), WAIT)  # inside the batch's write transaction
        try:
            r = await asyncio.wait_for(c.post("/api/v1/events/sync", json={"calendar_id": "other"}), 10)
        finally:
            sink.gate.set()
        if db_backend == "sqlite":
            # One writer at a time: the answer says so instead of waiting behind the batch.
            assert r.status_code == 503, r.text
            assert r.headers["retry-after"] == "5" and "nothing was started" in r.json()["detail"]
            assert not pipeline.is_running("fake", "other")
        else:
            assert r.status_code == 202, r.text
        await pipeline.wait()
        assert (await run_row(app, blocked)).status == "ok"
        r = await asyncio.wait_for(c.post("/api/v1/events/sync", json={"calendar_id": "other"}), 10)
        assert r.status_code == 202
        await pipeline.wait()


async def test_more_running_syncs_than_database_connections_leave_post_sync_answering(chronos_app, api_client):
    calendars = [f"c{n:02d}" for n in range(14)]  # more than the pool's connections (database.pool_size 5, +5)
    src = stalling(*calendars, "spare")
    src.stall, src.stall_from = set(calendars), 1
    config = {"sync": {"max_concurrent_runs": 20}}
    async with chronos_app(plugins=pipeline_plugins(src), config=config) as app:
        c = await api_client(app, scopes=["events.write", "events.read"])
        pipeline = runtime_pipeline(app)
        started, skipped = await pipeline.start_many(pipeline.select("fake", None)[:-1])
        assert len(started) == 14 and not skipped
        for _ in range(WAIT * 20):  # every run has stored its first batch and waits in its source
            rows = [await run_row(app, run_id) for _ref, run_id in started]
            if all(r.batches == 1 for r in rows):
                break
            await asyncio.sleep(0.05)
        r = await asyncio.wait_for(c.post("/api/v1/events/sync", json={"calendar_id": "spare"}), 10)
        assert r.status_code == 202, r.text
        src.release.set()
        await pipeline.wait()
        assert {(await run_row(app, run_id)).status for _ref, run_id in started} == {"ok"}


@pytest.mark.backends("postgresql")  # the run locks are advisory locks on one connection there only
async def test_run_locks_survive_a_broken_lock_connection(chronos_app):
    src = stalling("cal")
    async with chronos_app(plugins=pipeline_plugins(src)) as app:
        pipeline = runtime_pipeline(app)
        assert (await kit.sync_now(app, "fake", "cal")).status == "ok"
        pid = (await pipeline._advisory.conn.execute(text("SELECT pg_backend_pid()"))).scalar()
        await pipeline._advisory.conn.commit()
        async with app.state.chronos.db.reader.connect() as conn:
            assert (await conn.execute(text("SELECT pg_terminate_backend(:p)"), {"p": pid})).scalar()
            await conn.commit()
        run = await kit.sync_now(app, "fake", "cal")  # the next lock takes a new connection
        assert run.status == "ok"
        assert (await pipeline._advisory.conn.execute(text("SELECT pg_backend_pid()"))).scalar() != pid
        await pipeline._advisory.conn.commit()


async def test_runs_beyond_max_concurrent_runs_wait_their_turn(chronos_app, api_client):
    src = stalling("a", "b", "c", "spare")
    src.stall, src.stall_from = {"a", "b", "c"}, 1
    async with chronos_app(plugins=pipeline_plugins(src), config={"sync": {"max_concurrent_runs": 2}}) as app:
        c = await api_client(app, scopes=["events.write", "events.read"])
        pipeline = runtime_pipeline(app)
        started, _ = await pipeline.start_many([pipeline.calendar("fake", x) for x in ("a", "b", "c")])
        ids = [run_id for _ref, run_id in started]
        for _ in range(WAIT * 20):  # two have stored a batch and wait in their source
            batches = [(await run_row(app, run_id)).batches for run_id in ids]
            if sorted(batches) == [0, 1, 1]:
                break
            await asyncio.sleep(0.05)
        assert sorted(batches) == [0, 1, 1]  # one waits for a slot, its run row says "running"
        r = await asyncio.wait_for(c.post("/api/v1/events/sync", json={"calendar_id": "spare"}), 10)
        assert r.status_code == 202, r.text  # starting a run never waits for a slot
        src.release.set()
        await pipeline.wait()
        assert [(await run_row(app, run_id)).status for run_id in ids] == ["ok", "ok", "ok"]
