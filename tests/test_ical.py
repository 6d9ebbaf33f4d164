"""The shared iCalendar parsing and recurrence expansion (pure functions; no database, no network)."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest

from chronos.contracts.ical import CalendarFormatError, Window, chunks, parse_groups, recurrence_id, split_calendar

NY = ZoneInfo("America/New_York")
BERLIN = ZoneInfo("Europe/Berlin")
YEAR = Window(datetime(2026, 1, 1, tzinfo=UTC), datetime(2027, 1, 1, tzinfo=UTC))


def cal(*events: str, header: str = "") -> str:
    body = "".join("BEGIN:VEVENT\r\n" + e.strip().replace("\n", "\r\n") + "\r\nEND:VEVENT\r\n" for e in events)
    return f"BEGIN:VCALENDAR\r\nVERSION:2.0\r\nPRODID:-//test//EN\r\n{header}{body}END:VCALENDAR\r\n"


def parse(text: str, window: Window = YEAR):
    split = split_calendar(text)
    return parse_groups(split.prefix, split.groups, window, split.x_wr_timezone)


WEEKLY_NY = """
UID:weekly@test
DTSTAMP:20260101T000000Z
DTSTART;TZID=America/New_York:20261019T090000
DTEND;TZID=America/New_York:20261019T093000
RRULE:FREQ=WEEKLY;COUNT=4
SUMMARY:Weekly sync
"""


def test_weekly_meeting_stays_at_nine_local_across_the_november_change():
    out = parse(cal(WEEKLY_NY))
    assert not out.errors
    local = [d.start.astimezone(NY) for d in out.drafts]
    assert [t.strftime("%m-%d %H:%M") for t in local] == ["10-19 09:00", "10-26 09:00", "11-02 09:00", "11-09 09:00"]
    # The UTC hour moves by one when daylight saving time ends on 1 November.
    assert [d.start.hour for d in out.drafts] == [13, 13, 14, 14]
    assert all(d.end - d.start == timedelta(minutes=30) for d in out.drafts)
    assert {d.timezone for d in out.drafts} == {"America/New_York"}
    assert [d.recurrence_id for d in out.drafts] == [
        "20261019T130000Z",
        "20261026T130000Z",
        "20261102T140000Z",
        "20261109T140000Z",
    ]


def test_exception_exdate_and_cancelled_instance():
    overrides = [
        WEEKLY_NY.replace("COUNT=4", "COUNT=5") + "EXDATE;TZID=America/New_York:20261026T090000\n",
        """
UID:weekly@test
RECURRENCE-ID;TZID=America/New_York:20261102T090000
DTSTART;TZID=America/New_York:20261102T110000
DTEND;TZID=America/New_York:20261102T120000
SUMMARY:Weekly sync (moved)
""",
        """
UID:weekly@test
RECURRENCE-ID;TZID=America/New_York:20261109T090000
DTSTART;TZID=America/New_York:20261109T090000
DTEND;TZID=America/New_York:20261109T093000
STATUS:CANCELLED
SUMMARY:Weekly sync
""",
    ]
    out = parse(cal(*overrides))
    assert not out.errors
    got = {d.recurrence_id: (d.start.astimezone(NY).strftime("%m-%d %H:%M"), d.title) for d in out.drafts}
    assert got == {
        "20261019T130000Z": ("10-19 09:00", "Weekly sync"),
        "20261102T140000Z": ("11-02 11:00", "Weekly sync (moved)"),
        "20261116T140000Z": ("11-16 09:00", "Weekly sync"),
    }
    assert out.deleted == [("weekly@test", "20261109T140000Z")]


def test_rdate_and_window_bounds():
    text = cal("""
UID:r@test
DTSTART:20260105T100000Z
DTEND:20260105T110000Z
RRULE:FREQ=DAILY
RDATE:20260103T100000Z
SUMMARY:Daily
""")
    out = parse(text, Window(datetime(2026, 1, 2, tzinfo=UTC), datetime(2026, 1, 8, tzinfo=UTC)))
    assert [d.start.day for d in out.drafts] == [3, 5, 6, 7]


def test_all_day_events_are_dates_and_single_events_ignore_the_window():
    out = parse(
        cal(
            """
UID:holiday@test
DTSTART;VALUE=DATE:20200101
SUMMARY:Long ago
CATEGORIES:Holiday,Family
CATEGORIES:extra
TRANSP:TRANSPARENT
STATUS:TENTATIVE
URL:https://example.org/h
""",
            """
UID:conf@test
DTSTART;VALUE=DATE:20260301
DTEND;VALUE=DATE:20260304
SUMMARY:Conference
X-CHRONOS-MODE:auto-plan
""",
        )
    )
    h, c = out.drafts
    assert (h.start, h.end, h.recurrence_id) == (date(2020, 1, 1), date(2020, 1, 2), "")
    assert h.tags == ["Holiday", "Family", "extra"] and h.transparency == "free" and h.status == "tentative"
    assert h.metadata == {"url": "https://example.org/h"}
    assert (c.start, c.end, c.mode) == (date(2026, 3, 1), date(2026, 3, 4), "auto-plan")


def test_cancelled_single_event_is_a_deletion_and_duplicates_keep_the_latest_sequence():
    out = parse(
        cal(
            "UID:gone@test\nDTSTART:20260101T090000Z\nSTATUS:CANCELLED",
            "UID:dup@test\nSEQUENCE:2\nDTSTART:20260101T090000Z\nSUMMARY:new",
            "UID:dup@test\nSEQUENCE:1\nDTSTART:20260101T090000Z\nSUMMARY:old",
        )
    )
    assert out.deleted == [("gone@test", "")]
    assert [(d.uid, d.title) for d in out.drafts] == [("dup@test", "new")]
    assert out.drafts[0].end == out.drafts[0].start  # RFC 5545: a date-time without end is an instant


def test_floating_times_take_x_wr_timezone():
    text = cal(
        "UID:f@test\nDTSTART:20260701T090000\nDTEND:20260701T100000\nSUMMARY:Floating",
        header="X-WR-TIMEZONE:Europe/Berlin\r\n",
    )
    [d] = parse(text).drafts
    assert d.start == datetime(2026, 7, 1, 7, tzinfo=UTC) and d.timezone == "Europe/Berlin"


def test_floating_times_without_x_wr_timezone_stay_floating_for_the_normaliser():
    text = cal("UID:f@test\nDTSTART:20260701T090000\nDTEND:20260701T100000\nSUMMARY:Floating")
    [d] = parse(text).drafts
    assert d.start == datetime(2026, 7, 1, 9) and d.timezone is None
    window = Window(YEAR.start, YEAR.end, default_timezone="America/New_York")
    [d] = parse(text, window).drafts
    assert d.start == datetime(2026, 7, 1, 9) and d.timezone == "America/New_York"


def test_demo_shift_moves_whole_weeks_and_keeps_local_times():
    text = cal(
        "UID:s@test\nDTSTART;TZID=Europe/Berlin:20260112T093000\nDTEND;TZID=Europe/Berlin:20260112T100000\n"
        "RRULE:FREQ=WEEKLY;COUNT=2\nSUMMARY:Standup"
    )
    shift = timedelta(weeks=26)  # January (CET) to July (CEST)
    out = parse(text, Window(datetime(2026, 7, 1, tzinfo=UTC), datetime(2026, 8, 1, tzinfo=UTC), shift=shift))
    assert [d.start.astimezone(BERLIN).strftime("%Y-%m-%d %H:%M") for d in out.drafts] == [
        "2026-07-13 09:30",
        "2026-07-20 09:30",
    ]
    assert out.drafts[0].recurrence_id == "20260713T073000Z"


@pytest.mark.parametrize(
    ("entry", "message"),
    [
        ("UID:a@test\nSUMMARY:no start", "no DTSTART"),
        ("UID:b@test\nDTSTART:20260101T090000Z\nRRULE:FREQ=SOMETIMES", "RRULE"),
        ("UID:c@test\nDTSTART:2026-01-01\nSUMMARY:bad date", "DTSTART"),
        ("UID:d@test\nDTSTART:20260101T090000Z\nthis line is broken\nSUMMARY:x", "could not be parsed"),
        ("UID:e@test\nDTSTART;TZID=Mars/Olympus:20260101T090000\nSUMMARY:x", "TZID='Mars/Olympus'"),
        # Dates at the edge of what Python can hold: the end or the UTC time overflows.
        ("UID:f@test\nDTSTART;VALUE=DATE:99991231\nSUMMARY:last day", "out of range"),
        ("UID:g@test\nDTSTART;TZID=America/New_York:99991231T230000\nSUMMARY:x", "out of range"),
        ("UID:h@test\nDTSTART;TZID=Europe/Berlin:00010101T000000\nSUMMARY:x", "out of range"),
        ("UID:i@test\nDTSTART:99991231T230000Z\nDURATION:PT2H\nSUMMARY:x", "out of range"),
    ],
)
def test_a_bad_entry_is_an_error_for_its_uid_only(entry, message):
    out = parse(cal(entry, "UID:good@test\nDTSTART:20260101T090000Z\nSUMMARY:fine"))
    assert [d.uid for d in out.drafts] == ["good@test"]
    [(uid, text)] = out.errors
    assert uid == entry.split("\n")[0].removeprefix("UID:") and message in text


def test_an_endless_too_frequent_rrule_is_capped():
    text = cal(
        "UID:spam@test\nDTSTART:20260101T000000Z\nRRULE:FREQ=MINUTELY\nSUMMARY:spam",
        "UID:ok@test\nDTSTART:20260101T090000Z\nRRULE:FREQ=WEEKLY\nSUMMARY:endless but fine",
    )
    out = parse(text, Window(datetime(2026, 1, 1, tzinfo=UTC), datetime(2026, 3, 1, tzinfo=UTC), max_instances=50))
    assert [u for u, _ in out.errors] == ["spam@test"] and "more than 50 instances" in out.errors[0][1]
    assert len(out.drafts) == 9 and {d.uid for d in out.drafts} == {"ok@test"}


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("<html><body>Sign in</body></html>", "does not start with BEGIN:VCALENDAR"),
        ("BEGIN:VCALENDAR\r\nVERSION:2.0\r\nBEGIN:VEVENT\r\nUID:x\r\n", "END:VCALENDAR is missing"),
        (
            "BEGIN:VCALENDAR\r\nBEGIN:VEVENT\r\nUID:x\r\nBEGIN:VEVENT\r\nUID:y\r\nEND:VEVENT\r\nEND:VCALENDAR\r\n",
            "not closed",
        ),
    ],
)
def test_files_that_are_not_icalendar(text, message):
    with pytest.raises(CalendarFormatError, match=message):
        split_calendar(text)


def test_missing_uid_gets_a_stable_one_and_groups_stay_whole():
    text = cal(
        "DTSTART:20260101T090000Z\nSUMMARY:anonymous",
        WEEKLY_NY,
        "UID:weekly@test\nRECURRENCE-ID;TZID=America/New_York:20261026T090000\n"
        "DTSTART;TZID=America/New_York:20261026T100000\nSUMMARY:moved",
    )
    first, second = split_calendar(text), split_calendar(text)
    assert first.groups[0].uid == second.groups[0].uid and first.groups[0].uid.startswith("nouid-")
    assert [(g.uid, len(g.blocks), g.recurring) for g in first.groups[1:]] == [("weekly@test", 2, True)]
    assert [len(c) for c in chunks(first.groups, 1)] == [1, 1]
    out = parse(text)
    assert len(out.drafts) == 5 and not out.errors


# -- the fast path for plain single events agrees with icalendar ------------------------------

PLAIN = [
    'UID:tz@t\nDTSTART;TZID=America/New_York:20261102T090000\nDTEND;TZID="Europe/Berlin":20261102T170000\n'
    "SUMMARY:Zones",
    "UID:utc@t\nDTSTART:20260301T090000Z\nDTEND:20260301T093000Z\nSUMMARY:UTC",
    "UID:float@t\nDTSTART:20260301T090000\nDTEND:20260301T100000\nSUMMARY:Floating",
    "UID:date@t\nDTSTART;VALUE=DATE:20260301\nSUMMARY:All day without end",
    "UID:instant@t\nDTSTART:20260301T090000Z\nSUMMARY:No end",
    "UID:esc@t\nDTSTART:20260301T090000Z\nSUMMARY:a\\, b\\; c \\\\ d\nDESCRIPTION:line1\\nline2\\Nline3\\n[ ] task\n"
    "LOCATION:Café Zürich\\, Raum 2",
    "UID:alarm@t\nDTSTART:20260301T090000Z\nDTEND:20260301T100000Z\nSUMMARY:With alarm\nDESCRIPTION:outer\n"
    "BEGIN:VALARM\nACTION:DISPLAY\nDESCRIPTION:inner\nTRIGGER:-PT15M\nEND:VALARM",
    'UID:quoted@t\nDTSTART:20260301T090000Z\nORGANIZER;CN="Doe: John":mailto:john@example.org\nSUMMARY:Quoted',
    "UID:meta@t\nDTSTART:20260301T090000Z\nSTATUS:TENTATIVE\nTRANSP:TRANSPARENT\nX-CHRONOS-MODE:auto-plan\n"
    "URL:https://example.org/x?a=1\nCATEGORIES:One,Two\nCATEGORIES:Three\nsummary:lower-case name",
    "UID:gone@t\nDTSTART:20260301T090000Z\nSTATUS:CANCELLED",
    "UID:fold@t\nDTSTART:20260301T090000Z\nSUMMARY:a very long title that is folded over\n  two lines",
]
NOT_PLAIN = [
    "UID:dur@t\nDTSTART:20260301T090000Z\nDURATION:PT1H",
    "UID:rid@t\nRECURRENCE-ID:20260301T090000Z\nDTSTART:20260301T100000Z",
    "UID:mars@t\nDTSTART;TZID=Mars/Olympus:20260301T090000",
    "UID:qp@t\nDTSTART:20260301T090000Z\nSUMMARY;ENCODING=QUOTED-PRINTABLE:caf=C3=A9",
    "UID:twice@t\nDTSTART:20260301T090000Z\nSUMMARY:a\nSUMMARY:b",
    "UID:broken@t\nDTSTART:20260301T090000Z\nthis line is broken",
    "UID:odd@t\nDTSTART:20260301T090000Z\nSUMMARY:odd \\x escape",
    "UID:nostart@t\nSUMMARY:x",
]


@pytest.mark.parametrize("header", ["", "X-WR-TIMEZONE:Europe/Berlin\r\n"])
def test_fast_path_equals_icalendar(header):

    from chronos.contracts.ical import Parsed, _fast_single, _parse_slow
    from gen_events import event_to_vevent, iter_events

    generated = [
        event_to_vevent(e).replace("\r\n", "\n").strip().split("\n", 1)[1].rsplit("\n", 1)[0]
        for e in iter_events(300, seed=3)
    ]
    split = split_calendar(cal(*PLAIN, *generated, header=header))
    window = Window(YEAR.start, YEAR.end, shift=timedelta(weeks=2), default_timezone="Asia/Tokyo")
    fast = Parsed()
    for g in split.groups:
        _fast_single(g.blocks[0], g.uid, window, split.x_wr_timezone, fast)  # every one is plain
    slow = _parse_slow(split.prefix, split.groups, window, split.x_wr_timezone)
    assert not slow.errors
    assert fast.deleted == slow.deleted == [("gone@t", "")]
    assert len(fast.drafts) == len(slow.drafts) == len(PLAIN) - 1 + 300
    for a, b in zip(fast.drafts, slow.drafts, strict=True):
        assert a == b and repr(a.start) == repr(b.start) and repr(a.end) == repr(b.end)


@pytest.mark.parametrize("entry", NOT_PLAIN)
def test_unusual_entries_take_the_icalendar_path(entry):
    from chronos.contracts.ical import Parsed, _fast_single, _Slow

    [group] = split_calendar(cal(entry)).groups
    with pytest.raises(_Slow):
        _fast_single(group.blocks[0], group.uid, YEAR, None, Parsed())


def test_recurrence_ids_always_have_four_digit_years():
    assert recurrence_id(datetime(2026, 3, 2, 9, 0, tzinfo=UTC)) == "20260302T090000Z"
    assert recurrence_id(datetime(2026, 3, 2, 9, 0)) == "20260302T090000"  # floating
    assert recurrence_id(datetime(999, 3, 2, 9, 0, tzinfo=UTC)) == "09990302T090000Z"
    assert recurrence_id(date(5, 1, 2)) == "00050102"
