"""Benchmark of the planning and analytics plugins (issue 13), side by side with raw SQL.

1. Full sync of N synthetic events (``bench/gen_events.py``, 20 calendars, 3 years;
   ``--auto-plan`` of them in auto-plan mode) through the whole pipeline into a
   fresh SQLite file, once with the events plugin alone and once with the
   planning plugin's conflict sink too: the sink's share of the sync. Next to
   it, raw SQL (sqlite3) finding the same pairs over the loaded table in one
   self-join.
2. Server-side p50/p95 (the service functions behind the routes, no HTTP) next
   to the same SQL run raw with sqlite3:
   * ``GET /api/v1/conflicts`` over a 7-day window;
   * ``POST /api/v1/plan/proposals`` over 5 calendars and 14 days (raw: the
     busy-time SELECT alone);
   * ``GET /api/v1/analytics/time-allocation`` over a year, by calendar and by
     local hour (raw: the same GROUP BY statement).

Prints one table. Not a test: numbers depend on the machine.

    .venv/bin/python bench/planning.py                     # 1M events
    .venv/bin/python bench/planning.py --events 100000     # quicker

``--default-set`` syncs with the plugin set the service ships with
(``config/demo.yaml``), without and with planning, instead of events alone.
``--python-pairs`` adds a sync with new events' pairs computed in Python (the
per-pair path updates take) next to the SQL one; ``--webhooks`` enables the outbox
with a delivery target taking ``event.conflict`` in every sync, so each new pair is
also published.
``--sink-side-by-side DIR/planning.db`` only times the sink's two paths, batch by
batch, on a database an earlier run kept.
"""

from __future__ import annotations

import argparse
import asyncio
import platform
import random
import sqlite3
import statistics
import sys
import tempfile
import time
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from gen_events import EPOCH, iter_events  # noqa: E402

CALENDARS = 20
YEARS = 3
SEED = 13


def _source(n: int, auto_plan: float, page: int) -> Any:
    from chronos.plugin import CalendarSpec, EventDraft, Source, SourceBatch

    class BenchSource(Source):
        """All N events, per calendar, as full listings in pages."""

        name = "bench"

        def __init__(self) -> None:
            rng = random.Random(SEED)
            self.items: dict[str, list[EventDraft]] = {}
            for item in iter_events(n, seed=SEED, calendars=CALENDARS, years=YEARS):
                start, end = item["start"], item["end"]
                if item["all_day"]:
                    start, end = start.date(), end.date()
                draft = EventDraft(
                    uid=item["uid"],
                    start=start,
                    end=end,
                    title=item["title"],
                    description=item["description"],
                    location=item["location"],
                    tags=item["tags"],
                    mode="auto-plan" if rng.random() < auto_plan else "free",
                )
                self.items.setdefault(item["calendar_id"], []).append(draft)

        def calendars(self) -> list[CalendarSpec]:
            return [CalendarSpec(c, interval_seconds=86400) for c in sorted(self.items)]

        async def fetch(self, calendar: CalendarSpec, cursor: dict[str, Any] | None) -> AsyncIterator[SourceBatch]:
            drafts = self.items[calendar.id]
            for i in range(0, len(drafts), page):
                last = i + page >= len(drafts)
                yield SourceBatch(
                    drafts=drafts[i : i + page], full=True, complete=last, cursor={"v": 1} if last else None
                )

    return BenchSource()


def _listener_plugin() -> Any:
    """A plugin whose delivery target takes ``event.conflict`` (``--webhooks``), so the outbox keeps
    what the sink publishes."""
    from chronos.plugin import DeliveryResult, DeliveryTarget, hookimpl

    class Listener(DeliveryTarget):
        name = "conflict_listener"
        event_types = ("event.conflict",)

        async def deliver(self, delivery: Any) -> Any:
            return DeliveryResult.delivered(200)

    class ListenerPlugin:
        @hookimpl
        def register_delivery_targets(self) -> list[Any]:
            return [Listener()]

    return ListenerPlugin()


def _app(db: Path, plugins: list[Any], **config: Any) -> Any:
    from chronos.app import create_app
    from chronos.testing import TestDatabase, make_test_settings

    settings = make_test_settings(TestDatabase("sqlite", f"sqlite+aiosqlite:///{db}"), config)
    return create_app(settings, plugins=plugins, run_jobs=False, env={})


SINK_SECONDS = [0.0]


def time_the_sink() -> None:
    """Count the wall time spent in the conflict sink (its share is robust against a busy machine)."""
    from chronos_planning.conflicts import ConflictSink

    write = ConflictSink.write

    async def timed_write(self: Any, batch: Any, session: Any, ctx: Any) -> None:
        started = time.perf_counter()
        try:
            await write(self, batch, session, ctx)
        finally:
            SINK_SECONDS[0] += time.perf_counter() - started

    ConflictSink.write = timed_write  # type: ignore[method-assign]


def plugin_names(with_planning: bool, webhooks: bool, default_set: bool) -> list[str]:
    """events (+ planning, + webhooks), or the default set as shipped (with or without planning)."""
    if default_set:
        from events_sync import default_plugins

        return [p for p in default_plugins() if with_planning or p != "planning"]
    return ["events", *(["planning"] if with_planning else []), *(["webhooks"] if webhooks else [])]


async def full_sync(
    db: Path,
    source: Any,
    with_planning: bool,
    sql_pairs: bool = True,
    webhooks: bool = False,
    default_set: bool = False,
) -> float:
    from chronos.testing import fake_source_plugin, running_app, sync_now

    # --webhooks: the outbox, with a delivery target taking event.conflict, so every new pair is
    # enqueued and marked published (without a subscriber nothing would be).
    plugins: list[Any] = [
        *plugin_names(with_planning, webhooks, default_set),
        fake_source_plugin(source, name="benchsource"),
    ]
    if webhooks:
        plugins.append(("conflict_listener", _listener_plugin()))
    if with_planning:
        from chronos_planning import conflicts

        conflicts.NEW_PAIRS_IN_SQL = sql_pairs
        SINK_SECONDS[0] = 0.0
    app = _app(db, plugins)
    async with running_app(app):
        started = time.perf_counter()
        for spec in source.calendars():
            run = await sync_now(app, "bench", spec.id)
            assert run.status == "ok", run
        elapsed = time.perf_counter() - started
        from sqlalchemy import text

        async with app.state.chronos.db.write() as s:
            await s.execute(text("ANALYZE"))
    return elapsed


RAW_PAIRS = """
SELECT COUNT(*) FROM events a CROSS JOIN events b INDEXED BY ix_events_start
  ON b.start_utc < a.end_utc AND b.start_utc >= datetime(a.start_utc, '-' || ? || ' seconds') AND b.end_utc > a.start_utc
 AND b.id <> a.id
WHERE a.mode = 'auto-plan' AND a.transparency = 'busy' AND a.status <> 'cancelled' AND a.all_day = 0
  AND b.transparency = 'busy' AND b.status <> 'cancelled' AND b.all_day = 0
  AND (b.mode <> 'auto-plan' OR a.id < b.id)
"""


def pct(values: list[float], q: float) -> float:
    values = sorted(values)
    return values[min(len(values) - 1, int(q * len(values)))]


def t(value: datetime) -> str:
    return value.astimezone(UTC).isoformat(" ", "microseconds")[:26]


async def timed(fn: Any, params: list[Any]) -> list[float]:
    out = []
    for p in params:
        started = time.perf_counter()
        await fn(p)
        out.append((time.perf_counter() - started) * 1000)
    return out


async def side_by_side(
    fn: Any, conn: sqlite3.Connection, make: Any, params: list[Any]
) -> tuple[list[float], list[float]]:
    """Each parameter set through both, alternating which goes first (same cache state on average)."""
    ours: list[float] = []
    raw: list[float] = []
    for i, p in enumerate(params):
        for who in ("ours", "raw") if i % 2 == 0 else ("raw", "ours"):
            started = time.perf_counter()
            if who == "ours":
                await fn(p)
            else:
                sql, args = make(p)
                conn.execute(sql, args).fetchall()
            (ours if who == "ours" else raw).append((time.perf_counter() - started) * 1000)
    return ours, raw


async def queries(db: Path, rounds: int, allocation: bool = True) -> list[tuple[str, list[float], list[float]]]:
    from chronos.testing import running_app

    from chronos_analytics import service as analytics
    from chronos_planning import service as planning
    from chronos_planning.schemas import ProposalRequest

    rng = random.Random(7)
    days = [EPOCH + timedelta(days=rng.randrange(30, max(60, YEARS * 365 - 400))) for _ in range(rounds)]
    cals = [f"cal-{i:02d}" for i in range(1, CALENDARS + 1)]
    app = _app(
        db,
        ["events", "planning", "analytics"],
        planning={"working_hours": {"timezone": "Europe/Berlin"}, "max_proposals": 50},
        analytics={"followups": {"enabled": False}},
    )
    raw = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    out = []
    async with running_app(app):
        ctx = app.state.chronos
        span = raw.execute("SELECT max_duration_seconds FROM planning_spans").fetchone()[0]
        # analytics bounds its scans by the event store's own bound (all-day events included)
        store_span = raw.execute("SELECT MAX(max_duration_seconds) FROM events_spans").fetchone()[0]

        async def conflicts(d: datetime) -> Any:
            return await planning.list_conflicts(ctx, d.isoformat(), (d + timedelta(days=7)).isoformat(), [], None, 100)

        def conflicts_raw(d: datetime) -> tuple[str, tuple[Any, ...]]:
            lo = int(d.timestamp())
            return (
                "SELECT c.event_a, c.event_b, c.reason, c.overlap_start, c.detected_at, a.*, b.* FROM planning_pairs c"
                " JOIN events a ON a.id = c.event_a JOIN events b ON b.id = c.event_b WHERE c.overlap_start >= ?"
                " AND c.overlap_start < ? AND c.overlap_end > ? ORDER BY c.overlap_start, c.event_a, c.event_b"
                " LIMIT 101",
                (lo - span, lo + 7 * 86400, lo),
            )

        def proposal_body(d: datetime) -> ProposalRequest:
            return ProposalRequest.model_validate(
                {
                    "duration_minutes": 60,
                    "window": {"from": d.isoformat(), "to": (d + timedelta(days=14)).isoformat()},
                    "calendars": rng.sample(cals, 5),
                    "count": 5,
                }
            )

        bodies = [proposal_body(d) for d in days]

        async def propose(b: ProposalRequest) -> Any:
            return await planning.propose(ctx, b)

        def propose_raw(b: ProposalRequest) -> tuple[str, tuple[Any, ...]]:
            lo, hi = b.window.start, b.window.end
            return (
                "SELECT id, source, calendar_id, title, start_utc, end_utc, all_day, status, transparency, mode"
                f" FROM events WHERE calendar_id IN ({','.join('?' * len(b.calendars))}) AND start_utc >= ?"
                " AND start_utc < ? AND end_utc > ? AND transparency = 'busy' AND status <> 'cancelled'",
                (*b.calendars, t(lo - timedelta(seconds=span)), t(hi), t(lo)),
            )

        async def alloc(group: str, d: datetime) -> Any:
            end = d + timedelta(days=365)
            return await analytics.time_allocation(
                ctx, d.isoformat(), end.isoformat(), group, "Europe/Berlin", [], True
            )

        def alloc_raw(group: str) -> Any:
            from chronos_analytics import sql

            def make(d: datetime) -> tuple[str, dict[str, Any]]:
                dd = sql.Dialect("sqlite")
                lo, hi = d, d + timedelta(days=365)
                params: dict[str, Any] = {}
                where = sql.window_filter(dd, params, lo, hi, timedelta(seconds=store_span), [], True)
                s, e = dd.greatest("e.start_utc", ":lo"), dd.least("e.end_utc", ":hi")
                if group == "calendar":
                    return (
                        f"SELECT e.calendar_id, SUM({dd.seconds(s, e)}), COUNT(*) FROM events AS e WHERE {where}"
                        " GROUP BY e.calendar_id",
                        params,
                    )
                from zoneinfo import ZoneInfo

                params["buckets"] = sql.bucket_param(
                    dd, sql.local_hours(lo, hi, ZoneInfo("Europe/Berlin")), timedelta(seconds=store_span)
                )
                s, e = dd.greatest("e.start_utc", "b.lo"), dd.least("e.end_utc", "b.hi")
                return (
                    f"SELECT b.k, SUM({dd.seconds(s, e)}), COUNT(*) FROM {dd.buckets('buckets')} AS b CROSS JOIN"
                    " events AS e WHERE e.start_utc < b.hi AND e.start_utc >= b.ls AND e.end_utc > b.lo AND"
                    f" {where} GROUP BY b.k",
                    params,
                )

            return make

        for name, fn, raw_make, params in [
            ("conflicts, 7-day window", conflicts, conflicts_raw, days),
            ("proposal, 5 calendars x 14 days", propose, propose_raw, bodies),
        ]:
            await timed(fn, params[:3])  # warm
            out.append((name, *(await side_by_side(fn, raw, raw_make, params))))
        for group in ("calendar", "hour") if allocation else ():
            few = days[: max(3, rounds // 5)]

            async def run(d: datetime, group: str = group) -> Any:
                return await alloc(group, d)

            await timed(run, few[:1])
            ours, theirs = await side_by_side(run, raw, alloc_raw(group), few)
            out.append((f"time allocation, 1 year, by {group}", ours, theirs))
    raw.close()
    return out


class _Undo(Exception):
    """Rolls a measured batch back, so every batch meets the same stored state."""


async def sink_side_by_side(db: Path, calendar: str, batches: int) -> None:
    """The sink's upkeep for the last ``batches`` batches of ``calendar`` in an existing planning
    database (``--dir`` of an earlier run): each batch's pairs removed, then written again with
    new events' pairs in SQL and in Python (alternating which goes first), rolled back."""
    import sqlalchemy as sa

    from chronos.testing import running_app

    from chronos_planning import conflicts

    app = _app(db, ["events", "planning"])
    times: dict[bool, list[float]] = {True: [], False: []}
    counts: dict[bool, set[int]] = {True: set(), False: set()}
    async with running_app(app):
        ctx = app.state.chronos
        async with ctx.db.read() as s:
            rows = await conflicts.fetch_rows(
                s,
                f"SELECT {conflicts.E_COLUMNS} FROM events AS e WHERE e.calendar_id = :c ORDER BY e.id",
                {"c": calendar},
            )
        d = conflicts._Sql(ctx.db.dialect)
        pages = [rows[i : i + 1000] for i in range(0, len(rows), 1000)][-batches:]
        for k, page in enumerate(pages):
            changed = [conflicts.busy_of_tuple(d, r) for r in page]
            ids = [b.id for b in changed]
            for in_sql in (True, False) if k % 2 == 0 else (False, True):
                conflicts.NEW_PAIRS_IN_SQL = in_sql
                try:
                    async with ctx.db.write() as s:
                        for i in range(0, len(ids), 500):
                            chunk = ids[i : i + 500]
                            c = conflicts.CONFLICTS.c
                            await s.execute(
                                sa.delete(conflicts.CONFLICTS).where(sa.or_(c.event_a.in_(chunk), c.event_b.in_(chunk)))
                            )
                        started = time.perf_counter()
                        await conflicts.upkeep(s, ctx, changed, [], publish=False)
                        times[in_sql].append((time.perf_counter() - started) * 1000)
                        count = await s.execute(sa.text("SELECT COUNT(*) FROM planning_pairs"))
                        counts[in_sql].add(count.scalar())
                        raise _Undo
                except _Undo:
                    pass
    conflicts.NEW_PAIRS_IN_SQL = True
    assert counts[True] == counts[False] and len(counts[True]) == 1, counts
    ratios = [p / q for p, q in zip(times[False], times[True], strict=True)]
    print()
    print(f"Conflict sink on {len(pages)} batches of {calendar} in {db} ({counts[True].pop():,} pairs after each)")
    print()
    print("| new events' pairs | p50 per batch | min | max |")
    print("|---|---|---|---|")
    for label, key in (("in Python (per-pair path)", False), ("in SQL (INSERT … SELECT)", True)):
        v = times[key]
        print(f"| {label} | {statistics.median(v):.0f} ms | {min(v):.0f} ms | {max(v):.0f} ms |")
    print(f"| Python / SQL, per batch (median) | {statistics.median(ratios):.2f}x | | |")


async def main() -> None:
    global YEARS
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument("--auto-plan", type=float, default=0.02, help="share of events in auto-plan mode")
    parser.add_argument(
        "--years", type=int, default=YEARS, help="years the events spread over (pairs grow with the density squared)"
    )
    parser.add_argument("--page", type=int, default=1000, help="events per source batch")
    parser.add_argument("--rounds", type=int, default=50)
    parser.add_argument("--dir", type=Path, default=None, help="keep the databases here")
    parser.add_argument("--no-allocation", action="store_true", help="skip the (slow) time allocation rows")
    parser.add_argument(
        "--webhooks", action="store_true", help="enable the outbox in every sync (new pairs are published)"
    )
    parser.add_argument(
        "--default-set",
        action="store_true",
        help="sync with the plugin set the service ships with (config/demo.yaml), without and with planning",
    )
    parser.add_argument(
        "--python-pairs",
        action="store_true",
        help="also sync with new events' pairs computed in Python (the previous path), side by side",
    )
    parser.add_argument(
        "--queries-only",
        type=Path,
        default=None,
        metavar="DB",
        help="only time the queries, on the planning.db of an earlier run's --dir (migrated to the code's schema)",
    )
    parser.add_argument(
        "--sink-side-by-side",
        type=Path,
        default=None,
        metavar="DB",
        help="only compare the sink's two paths on an existing planning database (planning.db of --dir)",
    )
    args = parser.parse_args()
    YEARS = args.years
    if args.sink_side_by_side is not None:
        await sink_side_by_side(args.sink_side_by_side, f"cal-{CALENDARS:02d}", 10)
        return
    if args.queries_only is not None:
        print_queries(await queries(args.queries_only, args.rounds, not args.no_allocation))
        return
    workdir = args.dir or Path(tempfile.mkdtemp(prefix="chronos-bench-planning-"))
    workdir.mkdir(parents=True, exist_ok=True)
    print(f"generating {args.events:,} events …", file=sys.stderr)
    source = _source(args.events, args.auto_plan, args.page)
    timings = {}
    sinks = {}
    time_the_sink()
    runs = [("events only", "plain", False, True), ("events + planning", "planning", True, True)]
    if args.python_pairs:  # the previous path first: the SQL one's database is the one queried below
        runs.insert(1, ("events + planning, pairs in Python", "planning-python", True, False))
    for label, name, with_planning, sql_pairs in runs:
        db = workdir / f"{name}.db"
        for suffix in ("", "-wal", "-shm"):
            Path(f"{db}{suffix}").unlink(missing_ok=True)
        print(f"full sync, {label} …", file=sys.stderr)
        timings[label] = await full_sync(db, source, with_planning, sql_pairs, args.webhooks, args.default_set)
        sinks[label] = SINK_SECONDS[0]
    db = workdir / "planning.db"
    conn = sqlite3.connect(db)
    pairs = conn.execute("SELECT COUNT(*) FROM planning_pairs").fetchone()[0]
    span = conn.execute("SELECT max_duration_seconds FROM planning_spans").fetchone()[0]
    started = time.perf_counter()
    raw_pairs = conn.execute(RAW_PAIRS, (span,)).fetchone()[0]
    raw_seconds = time.perf_counter() - started
    published = None
    if args.webhooks:
        # the dispatcher drops messages nobody subscribed to: count what was announced
        published = conn.execute("SELECT COUNT(*) FROM planning_published").fetchone()
    conn.close()
    if args.python_pairs:
        other = sqlite3.connect(workdir / "planning-python.db")
        same = other.execute("SELECT COUNT(*) FROM planning_pairs").fetchone()[0]
        other.close()
        assert same == pairs, (same, pairs)

    plain = timings["events only"]
    print()
    print(
        f"Planning and analytics over {args.events:,} events in {CALENDARS} calendars ({YEARS} years,"
        f" {args.auto_plan:.0%} auto-plan), SQLite {sqlite3.sqlite_version}, Python {platform.python_version()}"
    )
    print()
    if args.default_set:
        print(
            f"Plugins: the default set ({', '.join(plugin_names(True, False, True))}); 'events only' is that set without planning."
        )
        print()
    print("| sync | seconds | events/s | |")
    print("|---|---|---|---|")
    print(f"| full sync, events only | {plain:.1f} | {args.events / plain:,.0f} | |")
    for label, seconds in timings.items():
        if label == "events only":
            continue
        kept = f" ({pairs:,} pairs kept)" if label == "events + planning" else ""
        if published is not None and label == "events + planning":
            kept += f", {published[0]:,} published as event.conflict"
        print(
            f"| full sync, {label} | {seconds:.1f} | {args.events / seconds:,.0f} |"
            f" +{(seconds / plain - 1) * 100:.1f} %{kept} |"
        )
        sink = sinks[label]
        print(
            f"| of which in the conflict sink | {sink:.1f} | |"
            f" +{sink / max(seconds - sink, 1e-9) * 100:.1f} % of the rest |"
        )
    print(f"| raw SQL: every pair in one self-join | {raw_seconds:.1f} | | {raw_pairs:,} timed pairs |")
    print()
    sys.stdout.flush()  # the sync figures stand even if a query fails
    print(f"queries ({args.rounds} rounds) …", file=sys.stderr)
    rows = await queries(db, args.rounds, not args.no_allocation)
    print_queries(rows)


def print_queries(rows: list[tuple[str, list[float], list[float]]]) -> None:
    print("| query (server-side) | chronos p50 | p95 | raw p50 | p95 | ratio p50 |")
    print("|---|---|---|---|---|---|")
    for name, ours, raw in rows:
        print(
            f"| {name} | {pct(ours, 0.5):.2f} ms | {pct(ours, 0.95):.2f} ms | {pct(raw, 0.5):.2f} ms |"
            f" {pct(raw, 0.95):.2f} ms | {statistics.median(ours) / max(statistics.median(raw), 1e-9):.2f}x |"
        )


if __name__ == "__main__":
    asyncio.run(main())
