"""An event's mode: free, auto-plan, or unset (its calendar's default) — in the contract, its
content hash and ICS (``X-CHRONOS-MODE``)."""

from __future__ import annotations

import hashlib
import json
from datetime import UTC, datetime, timedelta

from chronos.contracts.events import CanonicalEvent
from chronos.contracts.ical import Window, parse_groups, split_calendar

T = datetime(2026, 3, 4, 9, tzinfo=UTC)


def event(**fields) -> CanonicalEvent:
    return CanonicalEvent(source="s", calendar_id="c", uid="u", start_utc=T, end_utc=T + timedelta(hours=1), **fields)


def test_an_unset_mode_keeps_the_hashes_stored_before_it_could_be_unset():
    unset = event()
    assert unset.mode is None
    # Before, an event without a mode was "free" and hashed as such: stored hashes stay valid.
    before = unset.model_dump(mode="json") | {"mode": "free"}
    blob = json.dumps(before, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    assert unset.content_hash() == hashlib.sha256(blob.encode()).hexdigest()
    # Saying "free" is a change from saying nothing (an event opts out of its calendar's auto-plan).
    hashes = {unset.content_hash(), event(mode="free").content_hash(), event(mode="auto-plan").content_hash()}
    assert len(hashes) == 3


def test_ics_mode_property_free_auto_plan_or_unset():
    entries = "".join(
        f"BEGIN:VEVENT\r\nUID:{uid}\r\nDTSTART:20260304T090000Z\r\nDTEND:20260304T100000Z\r\nSUMMARY:{uid}\r\n{extra}"
        "END:VEVENT\r\n"
        for uid, extra in [
            ("plain", ""),
            ("free", "X-CHRONOS-MODE:FREE\r\n"),
            ("planned", "X-CHRONOS-MODE:auto-plan\r\n"),
            ("odd", "X-CHRONOS-MODE:sometimes\r\n"),
        ]
    )
    text = f"BEGIN:VCALENDAR\r\nVERSION:2.0\r\nPRODID:-//t//t//EN\r\n{entries}END:VCALENDAR\r\n"
    split = split_calendar(text)
    window = Window(datetime(2026, 1, 1, tzinfo=UTC), datetime(2027, 1, 1, tzinfo=UTC))
    parsed = parse_groups(split.prefix, split.groups, window, split.x_wr_timezone)
    modes = {d.uid: d.mode for d in parsed.drafts}
    assert modes == {"plain": None, "free": "free", "planned": "auto-plan", "odd": None}


async def test_an_ics_feed_carries_the_mode_an_event_sets(chronos_app, api_client):
    cfg = {"events": {"local_calendars": ["work"]}}
    async with chronos_app(plugins=["events"], config=cfg) as app:
        c = await api_client(app, scopes=["events.read", "events.write"])
        start = datetime.now(UTC).replace(microsecond=0) + timedelta(days=1)
        for title, mode in [("Free", "free"), ("Planned", "auto-plan"), ("Unset", None)]:
            body = {"title": title, "calendar_id": "work", "start": start.isoformat(), "mode": mode}
            body["end"] = (start + timedelta(hours=1)).isoformat()
            assert (await c.post("/api/v1/events", json=body)).status_code == 201
        r = await c.get("/api/v1/calendars/work/feed.ics")
        assert r.status_code == 200, r.text
    split = split_calendar(r.text)
    window = Window(start - timedelta(days=2), start + timedelta(days=2))
    parsed = parse_groups(split.prefix, split.groups, window, split.x_wr_timezone)
    assert {d.title: d.mode for d in parsed.drafts} == {"Free": "free", "Planned": "auto-plan", "Unset": None}
