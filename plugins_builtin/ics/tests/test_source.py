"""The source's cursor logic and parallel parsing (no database)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from chronos.plugin import CalendarSpec
from ics_support import ics, single

from chronos_ics.settings import IcsSettings
from chronos_ics.source import IcsSource

ROOT = Path(__file__).resolve().parents[3]


class Clock:
    def __init__(self) -> None:
        self.now = datetime(2026, 6, 1, 12, tzinfo=UTC)

    def __call__(self) -> datetime:
        return self.now


async def listing(source: IcsSource, cid: str, cursor):
    batches = [b async for b in source.fetch(CalendarSpec(cid), cursor)]
    return batches, batches[-1].cursor


@pytest.mark.parametrize("recurring", [False, True])
async def test_a_new_day_reparses_only_files_with_recurring_series(tmp_path, recurring):
    path = tmp_path / "c.ics"
    rule = "\nRRULE:FREQ=DAILY" if recurring else ""
    path.write_text(ics(f"UID:x\nDTSTART:20260601T090000Z\nDTEND:20260601T100000Z{rule}\nSUMMARY:x"))
    clock = Clock()
    src = IcsSource(
        IcsSettings(calendars=[{"id": "c", "path": str(path), "past_days": 0, "horizon_days": 2}], parse_workers=0),
        clock=clock,
    )
    batches, cursor = await listing(src, "c", None)
    assert batches[-1].complete and cursor["recurring"] is recurring
    first = [d.recurrence_id for b in batches for d in b.drafts]
    batches, _ = await listing(src, "c", cursor)
    assert [b.not_modified for b in batches] == [True]
    clock.now += timedelta(days=1)
    batches, cursor2 = await listing(src, "c", cursor)
    if recurring:
        moved = [d.recurrence_id for b in batches for d in b.drafts]
        assert batches[-1].complete and moved != first and cursor2["window"] != cursor["window"]
    else:
        assert [b.not_modified for b in batches] == [True]


async def test_changing_the_calendar_options_reparses(tmp_path):
    path = tmp_path / "c.ics"
    path.write_text(ics(single("a", "x")))
    cfg = {"id": "c", "path": str(path)}
    src = IcsSource(IcsSettings(calendars=[cfg], parse_workers=0))
    _, cursor = await listing(src, "c", None)
    other = IcsSource(IcsSettings(calendars=[{**cfg, "default_timezone": "Europe/Berlin"}], parse_workers=0))
    batches, _ = await listing(other, "c", cursor)
    assert batches[-1].complete and len(batches[-1].drafts) == 1


async def test_batches_stream_in_the_configured_size(tmp_path):
    path = tmp_path / "c.ics"
    path.write_text(ics(*(single(f"e{i}", f"Event {i}", days=i % 20) for i in range(23))))
    src = IcsSource(IcsSettings(calendars=[{"id": "c", "path": str(path)}], parse_workers=0, batch_size=10))
    batches, _ = await listing(src, "c", None)
    assert [len(b.drafts) for b in batches] == [10, 10, 3]
    assert [b.full for b in batches] == [True] * 3 and [b.complete for b in batches] == [False, False, True]
    assert [b.cursor is not None for b in batches] == [False, False, True]


async def test_worker_processes_parse_exactly_like_the_thread(tmp_path):
    from gen_events import write_ics

    path = write_ics(tmp_path / "big.ics", 600, seed=7)
    text = path.read_text()
    # Add a recurring series with an exception so groups must stay whole across chunks.
    text = text.replace(
        "END:VCALENDAR",
        ics(
            "UID:series\nDTSTART:20260105T090000Z\nDTEND:20260105T100000Z\nRRULE:FREQ=WEEKLY;COUNT=10\nSUMMARY:S",
            "UID:series\nRECURRENCE-ID:20260112T090000Z\nDTSTART:20260112T110000Z\nDTEND:20260112T120000Z\nSUMMARY:moved",
        ).split("PRODID:-//test//EN\r\n", 1)[1],
    )
    path.write_text(text)
    cal = {"id": "c", "path": str(path), "past_days": 3650, "horizon_days": 3650}
    threaded = IcsSource(IcsSettings(calendars=[cal], parse_workers=0))
    parallel = IcsSource(IcsSettings(calendars=[cal], parse_workers=2, parallel_threshold=100))
    try:
        one, _ = await listing(threaded, "c", None)
        two, _ = await listing(parallel, "c", None)
        assert parallel._pool is not None  # the worker processes really did the parsing
    finally:
        parallel.close()

    def keyed(batches):
        return sorted(
            (d.uid, d.recurrence_id, d.title, str(d.start), str(d.end), tuple(d.tags))
            for b in batches
            for d in b.drafts
        )

    assert keyed(one) == keyed(two) and len(keyed(one)) == 610
    assert ("series", "20260112T090000Z", "moved") in {k[:3] for k in keyed(two)}
