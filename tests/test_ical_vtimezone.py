"""Series written in custom VTIMEZONE definitions expand like the same series in an IANA zone.

Outlook and other clients define their zones inline (``TZID:W. Europe Standard
Time`` with rules from 1601); the expansion maps such a definition onto the IANA
zone its name points to when the transitions agree, and otherwise expands with
the definition's own transitions computed once. Both must give the instants the
definition means.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from io import StringIO
from pathlib import Path
from zoneinfo import ZoneInfo

from dateutil.tz import tzical

from chronos.contracts.ical import RuleZone, Window, parse_groups, split_calendar, zone_for_vtimezone

BERLIN = ZoneInfo("Europe/Berlin")
TEN_YEARS = Window(datetime(2026, 1, 1, tzinfo=UTC), datetime(2036, 1, 1, tzinfo=UTC), max_instances=100_000)

# Central European rules as Outlook writes them (from 1601, under a Windows zone name); the
# benchmark bench/ical_vtimezone.py expands the same definition.
BERLIN_VTIMEZONE = (Path(__file__).parent / "calendars" / "vtimezone_w_europe.ics").read_text()


def berlin_rules(tzid: str) -> str:
    """The Central European definition under the name ``tzid``."""
    return BERLIN_VTIMEZONE.replace("TZID:W. Europe Standard Time", f"TZID:{tzid}", 1)


# No IANA zone has these rules: +05:30, +06:30 from the 2nd Sunday of April to the 1st of October.
NOWHERE_RULES = """BEGIN:VTIMEZONE
TZID:Nowhere Standard Time
BEGIN:STANDARD
DTSTART:19700101T020000
TZOFFSETFROM:+0630
TZOFFSETTO:+0530
TZNAME:NST
RRULE:FREQ=YEARLY;BYDAY=1SU;BYMONTH=10
END:STANDARD
BEGIN:DAYLIGHT
DTSTART:19700101T020000
TZOFFSETFROM:+0530
TZOFFSETTO:+0630
TZNAME:NDT
RRULE:FREQ=YEARLY;BYDAY=2SU;BYMONTH=4
END:DAYLIGHT
END:VTIMEZONE
"""

# US Eastern as Outlook writes it: the rules before 2007 end with an UNTIL in UTC.
EASTERN_RULES = """BEGIN:VTIMEZONE
TZID:Eastern Standard Time
BEGIN:STANDARD
DTSTART:19671029T020000
TZOFFSETFROM:-0400
TZOFFSETTO:-0500
RRULE:FREQ=YEARLY;BYDAY=-1SU;BYMONTH=10;UNTIL=20061029T060000Z
END:STANDARD
BEGIN:DAYLIGHT
DTSTART:19870405T020000
TZOFFSETFROM:-0500
TZOFFSETTO:-0400
RRULE:FREQ=YEARLY;BYDAY=1SU;BYMONTH=4;UNTIL=20060402T070000Z
END:DAYLIGHT
BEGIN:STANDARD
DTSTART:20071104T020000
TZOFFSETFROM:-0400
TZOFFSETTO:-0500
RRULE:FREQ=YEARLY;BYDAY=1SU;BYMONTH=11
END:STANDARD
BEGIN:DAYLIGHT
DTSTART:20070311T020000
TZOFFSETFROM:-0500
TZOFFSETTO:-0400
RRULE:FREQ=YEARLY;BYDAY=2SU;BYMONTH=3
END:DAYLIGHT
END:VTIMEZONE
"""


def crlf(text: str) -> str:
    return text.strip().replace("\r\n", "\n").replace("\n", "\r\n") + "\r\n"


def weekly(tzid: str, vtimezone: str = "", start: str = "20200106T090000") -> str:
    event = f"""BEGIN:VEVENT
UID:weekly@test
DTSTAMP:20260101T000000Z
DTSTART;TZID="{tzid}":{start}
DTEND;TZID="{tzid}":{start[:9]}100000
RRULE:FREQ=WEEKLY
EXDATE;TZID="{tzid}":20260309T090000
SUMMARY:Weekly
END:VEVENT
"""
    return crlf(f"BEGIN:VCALENDAR\nVERSION:2.0\nPRODID:-//test//EN\n{vtimezone}{event}END:VCALENDAR")


def expand(text: str, window: Window = TEN_YEARS):
    split = split_calendar(text)
    out = parse_groups(split.prefix, split.groups, window, split.x_wr_timezone)
    assert not out.errors
    return out.drafts


def test_an_outlook_zone_expands_like_its_iana_zone_and_is_named_by_it():
    iana = expand(weekly("Europe/Berlin"))
    outlook = expand(weekly("W. Europe Standard Time", crlf(berlin_rules("W. Europe Standard Time"))))
    assert len(iana) == 52 * 10 + 1  # ten years of Mondays, one excluded
    assert [(d.start, d.end, d.recurrence_id) for d in outlook] == [(d.start, d.end, d.recurrence_id) for d in iana]
    assert {d.timezone for d in outlook} == {"Europe/Berlin"}
    # Nine o'clock in Berlin on both sides of the changes.
    assert {d.start.astimezone(BERLIN).hour for d in outlook} == {9}
    assert {d.start.hour for d in outlook} == {7, 8}


def test_a_vendor_path_tzid_and_an_unknown_name_with_the_same_rules_give_the_same_instants():
    iana = [(d.start, d.end) for d in expand(weekly("Europe/Berlin"))]
    vendor = "/example.com/20250101_1/Europe/Berlin"
    assert [(d.start, d.end) for d in expand(weekly(vendor, crlf(berlin_rules(vendor))))] == iana
    unknown = expand(weekly("Office", crlf(berlin_rules("Office"))))
    assert [(d.start, d.end) for d in unknown] == iana
    assert {d.timezone for d in unknown} == {None}  # no name hints at Berlin: not claimed to be it


def test_a_zone_no_iana_zone_matches_keeps_its_own_rules():
    window = Window(datetime(2026, 1, 1, tzinfo=UTC), datetime(2029, 1, 1, tzinfo=UTC), max_instances=10_000)
    drafts = expand(weekly("Nowhere Standard Time", crlf(NOWHERE_RULES)), window)
    reference = tzical(StringIO(NOWHERE_RULES)).get()  # dateutil reads the definition directly
    mondays = [datetime(2026, 1, 5, 9) + timedelta(weeks=n) for n in range(157)]
    walls = [m for m in mondays if m < datetime(2029, 1, 1) and m != datetime(2026, 3, 9, 9)]
    assert [d.start for d in drafts] == [w.replace(tzinfo=reference).astimezone(UTC) for w in walls]
    offsets = {w.replace(tzinfo=reference).utcoffset() for w in walls}
    assert offsets == {timedelta(hours=5, minutes=30), timedelta(hours=6, minutes=30)}
    assert {d.timezone for d in drafts} == {None}
    assert isinstance(zone_for_vtimezone(crlf(NOWHERE_RULES), 2025, 2029), RuleZone)


def test_rules_that_end_with_an_until_map_onto_the_iana_zone_across_the_change_of_rules():
    window = Window(datetime(2005, 1, 1, tzinfo=UTC), datetime(2009, 1, 1, tzinfo=UTC), max_instances=10_000)
    iana = expand(weekly("America/New_York", start="20040105T090000"), window)
    outlook = expand(weekly("Eastern Standard Time", crlf(EASTERN_RULES), start="20040105T090000"), window)
    assert [d.start for d in outlook] == [d.start for d in iana]
    assert {d.timezone for d in outlook} == {"America/New_York"}


def test_the_computed_zone_agrees_with_zoneinfo_at_every_change_gap_and_fold():
    zone = zone_for_vtimezone(crlf(berlin_rules("Office")), 2025, 2028)
    assert isinstance(zone, RuleZone)
    probe = datetime(2026, 1, 1)
    while probe < datetime(2028, 1, 1):
        for fold in (0, 1):
            local = probe.replace(fold=fold)
            assert local.replace(tzinfo=zone).utcoffset() == local.replace(tzinfo=BERLIN).utcoffset(), local
        instant = probe.replace(tzinfo=UTC)
        mine, theirs = instant.astimezone(zone), instant.astimezone(BERLIN)
        assert (mine.replace(tzinfo=None), mine.fold) == (theirs.replace(tzinfo=None), theirs.fold), instant
        probe += timedelta(minutes=30)
