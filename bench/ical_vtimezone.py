"""Recurring series in custom VTIMEZONE definitions: expansion time next to the same series in an IANA zone.

    python bench/ical_vtimezone.py [YEARS=10]

One weekly series (DTSTART 2020, no end) expanded over YEARS years, written
three ways: with TZID=Europe/Berlin (an IANA name, no VTIMEZONE), with an
Outlook-style definition (TZID:W. Europe Standard Time, rules from 1601), and
with the same rules under a name that hints at no IANA zone. Each is expanded
(a) "before": as the parser did it until now, recurring-ical-events' ``after``
over icalendar's own zones, and (b) "after": ``chronos.contracts.ical.parse_groups``
(the custom definition mapped onto the IANA zone its name points to, or its own
transitions computed once; ``between`` over doubling spans). The instants of
every row are checked to be the same. Prints a table; nothing here is a test.
"""

from __future__ import annotations

import os
import platform
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "kernel"))

from chronos.contracts import ical  # noqa: E402

# The Central European definition as Outlook writes it, shared with tests/test_ical_vtimezone.py.
RULES = (ROOT / "tests" / "calendars" / "vtimezone_w_europe.ics").read_text()


def calendar(tzid: str, with_vtimezone: bool) -> str:
    vtimezone = RULES.replace("TZID:W. Europe Standard Time", f"TZID:{tzid}", 1) if with_vtimezone else ""
    text = (
        f"BEGIN:VCALENDAR\nVERSION:2.0\nPRODID:-//bench//EN\n{vtimezone}BEGIN:VEVENT\nUID:weekly@bench\n"
        f"DTSTAMP:20260101T000000Z\nDTSTART;TZID={tzid}:20200106T090000\nDTEND;TZID={tzid}:20200106T100000\n"
        "RRULE:FREQ=WEEKLY\nSUMMARY:Weekly\nEND:VEVENT\nEND:VCALENDAR\n"
    )
    return text.replace("\n", "\r\n")


def before(text: str, window: ical.Window) -> list[datetime]:
    """The former expansion: recurring-ical-events' ``after`` with icalendar's zones."""
    import icalendar
    import recurring_ical_events

    out = []
    for occ in recurring_ical_events.of(icalendar.Calendar.from_ical(text)).after(window.start):
        start = occ.decoded("DTSTART")
        if ical.utc_key(start) >= window.end:
            break
        out.append(start.astimezone(UTC))
    return out


def after(text: str, window: ical.Window) -> list[datetime]:
    split = ical.split_calendar(text)
    parsed = ical.parse_groups(split.prefix, split.groups, window, split.x_wr_timezone)
    assert not parsed.errors, parsed.errors
    return [d.start for d in parsed.drafts]


def main() -> None:
    years = int(sys.argv[1]) if len(sys.argv) > 1 else 10
    window = ical.Window(
        datetime(2026, 1, 1, tzinfo=UTC), datetime(2026 + years, 1, 1, tzinfo=UTC), max_instances=1_000_000
    )
    cases = [
        ("IANA TZID Europe/Berlin", calendar("Europe/Berlin", False)),
        ("VTIMEZONE W. Europe Standard Time", calendar("W. Europe Standard Time", True)),
        ("VTIMEZONE with an unknown name", calendar("Head Office Time", True)),
    ]
    print(f"weekly series over {years} years; {platform.python_implementation()} {platform.python_version()},")
    print(f"{os.cpu_count()} CPUs, load average {' '.join(f'{x:.2f}' for x in os.getloadavg())} at start")
    print()
    print(f"{'series written with':36} {'instances':>9} {'before (s)':>11} {'after (s)':>10} {'speed-up':>9}")
    reference: list[datetime] | None = None
    for label, text in cases:
        t0 = time.perf_counter()
        old = before(text, window)
        t1 = time.perf_counter()
        ical.zone_for_vtimezone.cache_clear()  # the first expansion pays for the zone
        new = after(text, window)
        t2 = time.perf_counter()
        assert new == old, f"{label}: the instants differ"
        reference = reference or new
        assert new == reference, f"{label}: not the same instants as the IANA zone"
        print(f"{label:36} {len(new):9d} {t1 - t0:11.2f} {t2 - t1:10.3f} {(t1 - t0) / (t2 - t1):8.0f}x")
    print(f"load average {' '.join(f'{x:.2f}' for x in os.getloadavg())} at the end")


if __name__ == "__main__":
    main()
