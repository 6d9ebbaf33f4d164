"""Event resources → drafts: the time forms Google sends, keys of instances, what is not readable."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from zoneinfo import ZoneInfo

from chronos_google.convert import convert, instance_id, key_of


def test_times_in_every_form():
    items = [
        {"id": "z", "start": {"dateTime": "2026-03-29T00:30:00Z"}, "end": {"dateTime": "2026-03-29T01:30:00Z"}},
        {
            "id": "offset",
            "start": {"dateTime": "2026-03-29T09:00:00+02:00", "timeZone": "Europe/Berlin"},
            "end": {"dateTime": "2026-03-29T10:00:00+02:00", "timeZone": "Europe/Berlin"},
        },
        {
            "id": "zoned",
            "start": {"dateTime": "2026-03-29T09:00:00", "timeZone": "America/New_York"},
            "end": {"dateTime": "2026-03-29T10:00:00", "timeZone": "America/New_York"},
        },
        {"id": "calzone", "start": {"dateTime": "2026-07-01T09:00:00"}, "end": {"dateTime": "2026-07-01T09:30:00"}},
        {"id": "day", "start": {"date": "2026-12-24"}, "end": {"date": "2026-12-27"}, "transparency": "transparent"},
        {"id": "maybe", "status": "tentative", "start": {"date": "2026-01-01"}, "end": {"date": "2026-01-02"}},
    ]
    page = convert(items, "Europe/Berlin")
    assert page.errors == [] and page.deleted == []
    d = {x.uid: x for x in page.drafts}
    assert d["z"].start == datetime(2026, 3, 29, 0, 30, tzinfo=UTC) and d["z"].timezone == "Europe/Berlin"
    assert d["offset"].start.utcoffset() == timedelta(hours=2) and d["offset"].timezone == "Europe/Berlin"
    assert d["zoned"].start == datetime(2026, 3, 29, 9, tzinfo=ZoneInfo("America/New_York"))
    assert d["zoned"].start.utcoffset() == timedelta(hours=-4) and d["zoned"].timezone == "America/New_York"
    assert d["calzone"].start.astimezone(UTC).hour == 7  # CEST, from the calendar's zone
    assert (d["day"].start, d["day"].end) == (date(2026, 12, 24), date(2026, 12, 27))  # exclusive end kept
    assert d["day"].timezone is None and d["day"].transparency == "free"
    assert d["maybe"].status == "tentative"


def test_instances_are_keyed_by_series_and_original_start():
    moved = {
        "id": "abc_20261103T140000Z",
        "recurringEventId": "abc",
        "originalStartTime": {"dateTime": "2026-11-03T09:00:00-05:00", "timeZone": "America/New_York"},
        "start": {"dateTime": "2026-11-03T11:00:00-05:00", "timeZone": "America/New_York"},
        "end": {"dateTime": "2026-11-03T12:00:00-05:00", "timeZone": "America/New_York"},
    }
    assert key_of(moved, None) == ("abc", "20261103T140000Z")
    assert instance_id(*key_of(moved, None)) == moved["id"]
    allday = {"id": "hol_20261224", "recurringEventId": "hol", "originalStartTime": {"date": "2026-12-24"}}
    assert key_of(allday, None) == ("hol", "20261224") and instance_id("hol", "20261224") == "hol_20261224"
    cancelled = {**moved, "status": "cancelled"}
    del cancelled["start"], cancelled["end"]
    page = convert([moved, cancelled, {"id": "gone", "status": "cancelled"}], None)
    assert page.deleted == [("abc", "20261103T140000Z"), ("gone", "*")]
    [draft] = page.drafts
    assert (draft.uid, draft.recurrence_id, draft.metadata["google_id"]) == ("abc", "20261103T140000Z", moved["id"])
    assert draft.start == datetime(2026, 11, 3, 16, tzinfo=UTC)


def test_unreadable_entries_are_errors_of_that_entry():
    page = convert(
        [
            {"id": "nostart", "summary": "x"},
            {
                "id": "floating",
                "start": {"dateTime": "2026-01-01T09:00:00"},
                "end": {"dateTime": "2026-01-01T10:00:00"},
            },
            {"id": "badzone", "start": {"dateTime": "2026-01-01T09:00:00", "timeZone": "Mars/Base"}, "end": {}},
            {"id": "garbage", "start": {"dateTime": "yesterday"}, "end": {"dateTime": "today"}},
            {"summary": "no id"},
            "not an object",
            {"id": "ok", "start": {"date": "2026-01-01"}, "end": {"date": "2026-01-02"}},
        ],
        None,
    )
    errors = dict(page.errors)
    assert "missing start" in errors["nostart"]
    assert "no offset and no time zone" in errors["floating"]
    assert "unknown time zone 'Mars/Base'" in errors["badzone"]
    assert "garbage" in errors and errors["(unknown)"] == "an item without an id"
    assert [d.uid for d in page.drafts] == ["ok"]
