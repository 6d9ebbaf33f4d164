"""iCalendar text → drafts, tombstones and per-entry errors, for every iCalendar source.

One parse and recurrence-expansion path shared by the sources that read
iCalendar (ICS files and feeds, CalDAV), so that a VEVENT becomes the same
:class:`~chronos.contracts.events.EventDraft` whichever source delivered it.
Plugins reach it as ``chronos.plugin.ical``.

Pure functions that can run in worker processes: :func:`split_calendar` cuts the
text into VEVENT blocks grouped by UID (a series and its overrides stay
together) cheaply with regular expressions; :func:`parse_groups` parses a
chunk of groups with icalendar and expands recurring series with
recurring-ical-events inside a window. Single (non-recurring) events are not
windowed. A problem with one entry (no DTSTART, an invalid RRULE, an unknown
TZID, a broken line, a series with too many instances) becomes an error for
that UID, never for the whole calendar; a file that is not iCalendar at all
raises :class:`CalendarFormatError`.

Series written in a custom VTIMEZONE (Outlook's ``W. Europe Standard Time``)
expand with a zone computed once per definition and window (see
:func:`zone_for_vtimezone`), not with the zone icalendar builds, which walks
the definition's rules from 1601 on every offset lookup.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import os
import re
import threading
from bisect import bisect_right
from collections import deque
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta, tzinfo
from functools import lru_cache
from typing import Any, TypeVar
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from chronos.contracts.events import EventDraft, EventMode

_T = TypeVar("_T")

_UID = re.compile(r"^UID(?:;[^:\r\n]*)?:([^\r\n]*(?:\r?\n[ \t][^\r\n]*)*)", re.M | re.I)
_RECURS = re.compile(r"^(?:RRULE|RDATE)[;:]", re.M | re.I)
_X_WR_TZ = re.compile(r"^X-WR-TIMEZONE(?:;[^:\r\n]*)?:[ \t]*([^\r\n]+)", re.M | re.I)
_UNFOLD = re.compile(r"\r?\n[ \t]")
_STATUS = {"CONFIRMED": "confirmed", "TENTATIVE": "tentative", "CANCELLED": "cancelled"}
# Properties whose parse errors make an entry unusable (others are reported too).
_TIME_PROPS = {"DTSTART", "DTEND", "DURATION", "RRULE", "RDATE", "EXDATE", "RECURRENCE-ID"}


class CalendarFormatError(ValueError):
    """The text is not an iCalendar file (or is truncated)."""


@dataclass
class Group:
    """All VEVENT blocks of one UID; ``recurring`` when one has an RRULE or RDATE."""

    uid: str
    blocks: list[str]
    recurring: bool


@dataclass
class Split:
    prefix: str  # VCALENDAR header lines and every VTIMEZONE
    groups: list[Group]
    x_wr_timezone: str | None
    recurring: bool  # any recurring series (the window matters)

    @property
    def entries(self) -> int:
        return sum(len(g.blocks) for g in self.groups)


@dataclass
class Window:
    """Where recurring series are expanded, and the demo shift applied to everything."""

    start: datetime
    end: datetime
    shift: timedelta = timedelta(0)
    max_instances: int = 2000
    default_timezone: str | None = None


@dataclass
class Parsed:
    drafts: list[EventDraft] = field(default_factory=list)
    deleted: list[tuple[str, str]] = field(default_factory=list)
    errors: list[tuple[str, str]] = field(default_factory=list)
    instances: int = 0


def decode(data: bytes) -> str:
    """UTF-8 (with or without BOM); Latin-1 for the odd legacy export."""
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError:
        return data.decode("latin-1")


def _delimiters_upper(text: str) -> str:
    """Upper-case component delimiters and UIDs written in lower case (rare) for the fast path."""
    return re.sub(r"^(begin|end)(:v\w+)", lambda m: (m.group(1) + m.group(2)).upper(), text, flags=re.M | re.I)


def _blocks(text: str, name: str) -> tuple[list[str], int]:
    """Every ``BEGIN:<name>`` … ``END:<name>`` block (at line starts), and how many were opened.

    Plain ``str.find`` instead of one regular expression over the whole text:
    large files split several times faster.
    """
    begin, end = f"\nBEGIN:{name}", f"\nEND:{name}"
    out: list[str] = []
    opened = 0
    pos = text.find(begin)
    while pos >= 0:
        opened += 1
        stop = text.find(end, pos + len(begin))
        nxt = text.find(begin, pos + len(begin))
        if stop < 0 or (0 <= nxt < stop):
            pos = nxt
            continue
        eol = text.find("\n", stop + len(end))
        eol = len(text) if eol < 0 else eol + 1
        out.append(text[pos + 1 : eol])
        pos = nxt if nxt > stop else text.find(begin, eol - 1)
    return out, opened


def _uid(block: str) -> str:
    i = block.find("\nUID:")
    if i >= 0:  # the common case, without a regular expression
        j = block.find("\n", i + 5)
        if j >= 0 and block[j + 1 : j + 2] not in (" ", "\t"):
            return block[i + 5 : j].strip()
    m = _UID.search(block)
    if m is None:
        return ""
    value = m.group(1)
    return (_UNFOLD.sub("", value) if "\n" in value else value).strip()


def _recurs(block: str) -> bool:
    if "RRULE" not in block and "RDATE" not in block and "rrule" not in block and "rdate" not in block:
        return False
    return _RECURS.search(block) is not None


def split_calendar(text: str) -> Split:
    """Cut ``text`` into the calendar prefix and VEVENT groups by UID."""
    start = re.match(r"[\ufeff \t\r\n]*", text).end()  # type: ignore[union-attr]
    if not text[start : start + 15].upper().startswith("BEGIN:VCALENDAR"):
        raise CalendarFormatError("not an iCalendar file: it does not start with BEGIN:VCALENDAR")
    if not re.search(r"^END:VCALENDAR[ \t]*\r?$", text[-65536:], re.M | re.I):
        raise CalendarFormatError("truncated iCalendar file: END:VCALENDAR is missing")
    if "\nBEGIN:VEVENT" not in text and re.search(r"^begin:vevent", text, re.M | re.I):
        text = _delimiters_upper(text)
    text = "\n" + text[start:]  # every delimiter now follows a newline
    blocks, opened = _blocks(text, "VEVENT")
    if opened != len(blocks):
        raise CalendarFormatError(f"{opened - len(blocks)} VEVENT(s) are not closed with END:VEVENT")
    timezones, _ = _blocks(text, "VTIMEZONE")
    first = text.find("\nBEGIN:", 2)
    header = text[1 : first + 1] if first >= 0 else text[1:]
    header = re.sub(r"^END:VCALENDAR.*$", "", header, flags=re.M | re.I | re.S)
    if not header.endswith("\n"):
        header += "\r\n"
    prefix = header + "".join(b if b.endswith("\n") else b + "\r\n" for b in timezones)
    tz_match = _X_WR_TZ.search(header)
    groups: dict[str, Group] = {}
    for block in blocks:
        uid = _uid(block)
        if not uid:
            # RFC 5545 requires a UID; derive a stable one from the content so
            # the entry still syncs (an edit then reads as delete + add).
            uid = "nouid-" + hashlib.sha1(block.encode("utf-8", "replace")).hexdigest()[:20]
            uid_line = f"UID:{uid}\r\n"
            head = re.search(r"^BEGIN:VEVENT[ \t]*\r?\n", block, re.M | re.I)
            if head is not None:
                block = block[: head.end()] + uid_line + block[head.end() :]
        group = groups.get(uid)
        if group is None:
            group = groups[uid] = Group(uid, [], False)
        group.blocks.append(block if block.endswith("\n") else block + "\r\n")
        if not group.recurring and _recurs(block):
            group.recurring = True
    return Split(
        prefix,
        list(groups.values()),
        tz_match.group(1).strip() if tz_match else None,
        any(g.recurring for g in groups.values()),
    )


def chunks(groups: list[Group], size: int) -> list[list[Group]]:
    """Groups in chunks of about ``size`` VEVENT blocks (a group is never cut)."""
    out: list[list[Group]] = []
    current: list[Group] = []
    n = 0
    for g in groups:
        current.append(g)
        n += len(g.blocks)
        if n >= size:
            out.append(current)
            current, n = [], 0
    if current:
        out.append(current)
    return out


# -- parsing (runs in worker processes) --------------------------------------------------


def utc_key(value: date | datetime) -> datetime:
    """A comparable UTC instant for windows (floating times read as UTC)."""
    if isinstance(value, datetime):
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)
    return datetime.combine(value, time.min, UTC)


def recurrence_id(value: date | datetime) -> str:
    """RFC 5545 basic format; the year always has four digits (strftime's ``%Y`` does not pad)."""
    if isinstance(value, datetime):
        if value.tzinfo is None:
            return f"{value.year:04d}{value:%m%dT%H%M%S}"
        value = value.astimezone(UTC)
        return f"{value.year:04d}{value:%m%dT%H%M%S}Z"
    return f"{value.year:04d}{value:%m%d}"


def _text(comp: Any, name: str) -> str:
    value = comp.get(name)
    if value is None:
        return ""
    if isinstance(value, list):
        return "\n".join(str(v) for v in value)
    return str(value)


def _categories(comp: Any) -> list[str]:
    raw = comp.get("CATEGORIES")
    if raw is None:
        return []
    out: list[str] = []
    for prop in raw if isinstance(raw, list) else [raw]:
        cats = getattr(prop, "cats", None)
        if cats is None:
            cats = str(prop).split(",")
        out += [str(c).strip() for c in cats if str(c).strip()]
    return out


def _problems(comp: Any) -> str | None:
    """Parse errors that make the entry unusable: broken lines and the time properties.

    A malformed property the sync does not read (DTSTAMP, ORGANIZER…) does
    not fail the entry.
    """
    errors = getattr(comp, "errors", None) or []
    parts = [f"{prop or 'a line'}: {message}" for prop, message in errors if prop is None or prop in _TIME_PROPS]
    return "; ".join(parts)[:500] if parts else None


def _zone_of(comp: Any, value: date | datetime, window: Window, x_wr: str | None) -> str | None:
    if not isinstance(value, datetime):
        return None
    if value.tzinfo is not None:
        return getattr(value.tzinfo, "key", None)
    # Floating time: the calendar's X-WR-TIMEZONE, the configured default, else the normaliser's.
    return x_wr or window.default_timezone


def _moved(start: Any, end: Any, window: Window) -> tuple[Any, Any]:
    """Apply the demo shift (in wall time) and send aware times as UTC.

    Pickling custom VTIMEZONE objects between processes is not portable; the
    original zone travels in ``timezone`` instead.
    """
    if window.shift:
        start, end = start + window.shift, end + window.shift
    if isinstance(start, datetime) and start.tzinfo is not None:
        start = start.astimezone(UTC)
    if isinstance(end, datetime) and end.tzinfo is not None:
        end = end.astimezone(UTC)
    return start, end


def _draft(comp: Any, uid: str, rid: str, start: Any, end: Any, window: Window, x_wr: str | None) -> EventDraft:
    tz_name = _zone_of(comp, start, window, x_wr)
    start, end = _moved(start, end, window)
    return _make_draft(
        uid,
        rid,
        start,
        end,
        tz_name,
        title=_text(comp, "SUMMARY"),
        description=_text(comp, "DESCRIPTION"),
        location=_text(comp, "LOCATION"),
        status=_text(comp, "STATUS"),
        transp=_text(comp, "TRANSP"),
        mode=_text(comp, "X-CHRONOS-MODE"),
        url=_text(comp, "URL"),
        tags=_categories(comp),
    )


#: X-CHRONOS-MODE values; an entry without one (or with another) takes its calendar's default mode.
_MODES: dict[str, EventMode] = {"free": "free", "auto-plan": "auto-plan"}


def _make_draft(
    uid: str,
    rid: str,
    start: Any,
    end: Any,
    tz_name: str | None,
    *,
    title: str,
    description: str,
    location: str,
    status: str,
    transp: str,
    mode: str,
    url: str,
    tags: list[str],
) -> EventDraft:
    metadata: dict[str, Any] = {}
    if url.strip():
        metadata["url"] = url.strip()
    return EventDraft(
        uid=uid,
        start=start,
        end=end,
        recurrence_id=rid,
        title=title,
        description=description,
        location=location,
        timezone=tz_name,
        status=_STATUS.get(status.strip().upper(), "confirmed"),  # type: ignore[arg-type]
        transparency="free" if transp.strip().upper() == "TRANSPARENT" else "busy",
        mode=_MODES.get(mode.strip().lower()),
        tags=tags,
        metadata=metadata,
    )


def _end_of(comp: Any, start: date | datetime) -> date | datetime:
    if "DTEND" in comp:
        end: date | datetime = comp.decoded("DTEND")
        return end
    if "DURATION" in comp:
        later: date | datetime = start + comp.decoded("DURATION")
        return later
    # RFC 5545 §3.6.1: a date lasts one day, a date-time is an instant.
    return start if isinstance(start, datetime) else start + timedelta(days=1)


def _check_start(comp: Any) -> date | datetime:
    if "DTSTART" not in comp:
        raise ValueError("the entry has no DTSTART")
    start = comp.decoded("DTSTART")
    if not isinstance(start, (date, datetime)):
        raise ValueError(f"DTSTART is not a date or date-time: {start!r}")
    tzid = comp["DTSTART"].params.get("TZID") if hasattr(comp["DTSTART"], "params") else None
    if isinstance(start, datetime) and start.tzinfo is None and tzid:
        raise ValueError(f"unknown time zone TZID={tzid!r} and no VTIMEZONE defines it")
    return start


def _singles(comps: list[Any], uid: str, window: Window, x_wr: str | None, out: Parsed) -> None:
    best: dict[str, tuple[int, Any]] = {}
    for comp in comps:
        rid_prop = comp.get("RECURRENCE-ID")
        rid = recurrence_id(comp.decoded("RECURRENCE-ID") + window.shift) if rid_prop is not None else ""
        seq = int(comp.get("SEQUENCE", 0) or 0)
        # A UID listed twice: the higher SEQUENCE (then the later one) wins.
        if rid not in best or seq >= best[rid][0]:
            best[rid] = (seq, comp)
    for rid, (_seq, comp) in best.items():
        start = _check_start(comp)
        end = _end_of(comp, start)
        if _text(comp, "STATUS").strip().upper() == "CANCELLED":
            out.deleted.append((uid, rid))
            continue
        out.drafts.append(_draft(comp, uid, rid, start, end, window, x_wr))
        out.instances += 1


def _series(
    comps: list[Any],
    timezones: list[Any],
    uid: str,
    window: Window,
    x_wr: str | None,
    out: Parsed,
    zones: dict[str, tzinfo] | None = None,
) -> None:
    import icalendar

    for comp in comps:
        _check_start(comp)
    if zones:
        _rezone(comps, zones)
    mini = icalendar.Calendar()
    mini.subcomponents.extend(timezones)
    mini.subcomponents.extend(comps)
    lo, hi = window.start - window.shift, window.end - window.shift
    # The series as the source wrote it, so that feeds can publish it as a series
    # (not with the demo shift: the instances would no longer match it).
    series = None if window.shift else _series_lines(comps)
    overrides = {recurrence_id(c.decoded("RECURRENCE-ID")) for c in comps if "RECURRENCE-ID" in c}
    drafts = out.drafts
    deleted = out.deleted
    count = 0
    for occ in _occurrences(mini, lo, hi, window.max_instances):
        start = occ.decoded("DTSTART")
        count += 1
        if count > window.max_instances:
            raise ValueError(
                f"the recurrence yields more than {window.max_instances} instances inside the sync window"
                " (an endless or too frequent RRULE?); raise ics.max_instances_per_event if that is intended"
            )
        end = _end_of(occ, start)
        rid_value = occ.decoded("RECURRENCE-ID") if "RECURRENCE-ID" in occ else start
        rid = recurrence_id(rid_value + window.shift)
        if _text(occ, "STATUS").strip().upper() == "CANCELLED":
            deleted.append((uid, rid))
            continue
        draft = _draft(occ, uid, rid, start, end, window, x_wr)
        if series is not None:
            draft.metadata["series"] = {"master": series, "override": rid in overrides}
        drafts.append(draft)
        out.instances += 1


def _occurrences(mini: Any, lo: datetime, hi: datetime, max_instances: int) -> Iterator[Any]:
    """The series' occurrences from ``lo`` (ongoing ones too) to ``hi``, in time order.

    A few ``between`` queries over spans that double while they stay sparse: each
    query walks the rule from its DTSTART, so recurring-ical-events' ``after``
    (a query per few instances) costs time quadratic in the instances; a span
    never holds much more than ``max_instances``, so an endless rule stops early.
    """
    import recurring_ical_events

    query = recurring_ical_events.of(mini)
    span, start = timedelta(hours=1), lo
    seen: set[Any] = set()
    while start < hi:
        stop = min(hi, start + span)
        found = query.between(start, stop)
        found.sort(key=lambda c: utc_key(c.decoded("DTSTART")))
        for occ in found:
            key = occ.decoded("RECURRENCE-ID") if "RECURRENCE-ID" in occ else occ.decoded("DTSTART")
            marker = utc_key(key)
            if marker in seen or utc_key(occ.decoded("DTSTART")) >= hi:
                continue
            seen.add(marker)
            yield occ
        if len(found) * 4 < max_instances:
            span *= 2
        start = stop


#: The master's properties that define a series (stored as content lines).
SERIES_PROPS = ("DTSTART", "DTEND", "DURATION", "RRULE", "RDATE", "EXDATE", "EXRULE")


def _series_lines(comps: list[Any]) -> list[str] | None:
    """The content lines that define the series (DTSTART, DTEND/DURATION, RRULE, RDATE,
    EXDATE of the master), or None when the group has no master."""
    master = next((c for c in comps if "RECURRENCE-ID" not in c and ("RRULE" in c or "RDATE" in c)), None)
    if master is None:
        return None
    lines: list[str] = []
    for name in SERIES_PROPS:
        value = master.get(name)
        if value is None:
            continue
        for one in value if isinstance(value, list) else [value]:
            lines.append(str(master.content_line(name, one)))
    return lines


# -- custom VTIMEZONE definitions --------------------------------------------------------
# icalendar turns a VTIMEZONE whose TZID is not an IANA name (Outlook's "W. Europe
# Standard Time", a vendor's "/example.com/…/Berlin") into a dateutil zone that
# walks every yearly rule from the definition's DTSTART (often 1601) on each
# offset lookup; expanding a weekly series over ten years then takes minutes.
# Series are expanded with a zone computed once per definition and window
# instead: the IANA zone the TZID names (its Windows name, the end of a
# vendor path, X-LIC-LOCATION) when its transitions over the window equal the
# definition's, else the definition's own transitions.


@dataclass(frozen=True)
class _Onset:
    utc: datetime  # naive UTC
    before: timedelta
    after: timedelta
    name: str | None
    dst: bool


class RuleZone(tzinfo):
    """A VTIMEZONE's transitions between two years, looked up by bisection.

    Offsets before the first and after the last onset computed stay as they
    were there: the zone serves a window, not all time. Gaps and folds follow
    PEP 495 like :mod:`zoneinfo` (``fold=0`` is the offset before the change).
    """

    def __init__(self, tzid: str, onsets: list[_Onset]) -> None:
        self.tzid = tzid
        self._onsets = onsets
        self._utc = [o.utc for o in onsets]
        self._fold0 = [o.utc + max(o.before, o.after) for o in onsets]
        self._fold1 = [o.utc + min(o.before, o.after) for o in onsets]
        self._standard = next((o.after for o in onsets if not o.dst), None)

    def _at_local(self, dt: datetime) -> _Onset | None:
        points = self._fold1 if dt.fold else self._fold0
        i = bisect_right(points, dt.replace(tzinfo=None)) - 1
        return self._onsets[i] if i >= 0 else None

    def utcoffset(self, dt: datetime | None) -> timedelta | None:
        if dt is None:
            return None
        onset = self._at_local(dt)
        return onset.after if onset is not None else self._onsets[0].before

    def dst(self, dt: datetime | None) -> timedelta | None:
        if dt is None:
            return None
        onset = self._at_local(dt)
        if onset is None or not onset.dst:
            return timedelta(0)
        return onset.after - (self._standard if self._standard is not None else onset.after)

    def tzname(self, dt: datetime | None) -> str | None:
        onset = self._at_local(dt) if dt is not None else None
        return onset.name if onset is not None else self.tzid

    def fromutc(self, dt: datetime) -> datetime:
        i = bisect_right(self._utc, dt.replace(tzinfo=None)) - 1
        offset = self._onsets[i].after if i >= 0 else self._onsets[0].before
        local = dt + offset
        if i >= 0:
            onset = self._onsets[i]
            # The repeated hour after a change back: the second time through is fold=1.
            if onset.after < onset.before and local.replace(tzinfo=None) < onset.utc + onset.before:
                return local.replace(fold=1)
        return local

    def __repr__(self) -> str:
        return f"RuleZone({self.tzid!r})"


def _observance_onsets(obs: Any, lo: datetime, hi: datetime) -> list[_Onset]:
    """Where one STANDARD/DAYLIGHT observance starts between ``lo`` and ``hi`` (local times),
    plus its last onset before ``lo``."""
    from dateutil.rrule import rruleset, rrulestr  # type: ignore[import-untyped]

    start = obs.decoded("DTSTART")
    if not isinstance(start, datetime):
        start = datetime.combine(start, time.min)
    start = start.replace(tzinfo=None)
    before: timedelta = obs.decoded("TZOFFSETFROM")
    after: timedelta = obs.decoded("TZOFFSETTO")
    rules = rruleset()
    rules.rdate(start)  # RFC 5545: DTSTART is the first onset
    for prop in _as_list(obs.get("RRULE")):
        recur = prop.__class__(prop)  # a copy: UNTIL in UTC becomes the local wall time it names
        until = recur.get("UNTIL")
        if until:
            value = until[0]
            if isinstance(value, datetime) and value.tzinfo is not None:
                recur["UNTIL"] = [value.astimezone(UTC).replace(tzinfo=None) + before]
            elif not isinstance(value, datetime):
                recur["UNTIL"] = [datetime.combine(value, time(23, 59, 59))]
        rules.rrule(rrulestr(recur.to_ical().decode(), dtstart=start))
    for prop in _as_list(obs.get("RDATE")):
        for one in prop.dts:
            value = one.dt
            if isinstance(value, tuple):  # a PERIOD
                value = value[0]
            if not isinstance(value, datetime):
                value = datetime.combine(value, time.min)
            rules.rdate(value.astimezone(UTC).replace(tzinfo=None) + before if value.tzinfo else value)
    name = str(obs["TZNAME"]) if "TZNAME" in obs else None
    dst = obs.name == "DAYLIGHT"
    local = list(rules.between(lo, hi, inc=True))
    prior = rules.before(lo)
    if prior is not None:
        local.insert(0, prior)
    return [_Onset(t - before, before, after, name, dst) for t in local]


def _as_list(value: Any) -> list[Any]:
    if value is None:
        return []
    return value if isinstance(value, list) else [value]


def _zone_hints(tz: Any) -> list[str]:
    """IANA names a VTIMEZONE's TZID (or X-LIC-LOCATION) points to, best first."""
    from icalendar.timezone.windows_to_olson import WINDOWS_TO_OLSON

    out: list[str] = []
    for raw in (str(tz.get("TZID", "")), str(tz.get("X-LIC-LOCATION", ""))):
        cleaned = raw.strip().strip("/")
        if not cleaned:
            continue
        out.append(cleaned)
        if cleaned in WINDOWS_TO_OLSON:
            out.append(WINDOWS_TO_OLSON[cleaned])
        parts = cleaned.split("/")
        out += ["/".join(parts[i:]) for i in range(1, len(parts))]  # "/vendor/…/Europe/Berlin"
    return list(dict.fromkeys(out))


def _same_as(zone: ZoneInfo, onsets: list[_Onset], lo: datetime, hi: datetime) -> bool:
    """Whether ``zone`` has exactly these offsets between ``lo`` and ``hi`` (UTC): at each
    onset, on both sides of it, and every week in between (no extra change)."""
    utc = ZoneInfo("UTC")
    for o in onsets:
        if lo <= o.utc <= hi:
            at = o.utc.replace(tzinfo=utc)
            if zone.utcoffset(at.astimezone(zone)) != o.after:
                return False
            if zone.utcoffset((at - timedelta(seconds=1)).astimezone(zone)) != o.before:
                return False
    i = 0
    probe = lo
    while probe < hi:
        while i + 1 < len(onsets) and onsets[i + 1].utc <= probe:
            i += 1
        expected = onsets[i].after if onsets[i].utc <= probe else onsets[i].before
        if zone.utcoffset(probe.replace(tzinfo=utc).astimezone(zone)) != expected:
            return False
        probe += timedelta(days=7)
    return True


@lru_cache(maxsize=256)
def zone_for_vtimezone(block: str, first_year: int, last_year: int) -> tzinfo | None:
    """A fast zone for the VTIMEZONE ``block`` valid from ``first_year`` to ``last_year``:
    the IANA zone its TZID hints at when that zone has the same transitions there, else a
    :class:`RuleZone` of its own transitions. None when the definition cannot be read
    (icalendar's zone is used then)."""
    import icalendar

    try:
        tz = icalendar.Timezone.from_ical(block)
        lo, hi = datetime(first_year, 1, 1), datetime(last_year + 1, 1, 1)
        onsets = sorted(
            (
                o
                for obs in tz.subcomponents
                if obs.name in ("STANDARD", "DAYLIGHT")
                for o in _observance_onsets(obs, lo, hi)
            ),
            key=lambda o: o.utc,
        )
    except Exception:  # noqa: BLE001 - an unusual definition keeps icalendar's own zone
        return None
    if not onsets:
        return None
    # Only the last onset before the range matters (it gives the offset at its start).
    first = max((i for i, o in enumerate(onsets) if o.utc < lo), default=0)
    onsets = onsets[first:]
    for name in _zone_hints(tz):
        zone = _iana(name)
        if zone is not None and _same_as(zone, onsets, lo, hi):
            return zone
    return RuleZone(str(tz.get("TZID", "")), onsets)


def _vtimezone_blocks(prefix: str) -> dict[str, str]:
    """TZID -> its VTIMEZONE block, from a calendar prefix."""
    out: dict[str, str] = {}
    blocks, _ = _blocks("\n" + prefix, "VTIMEZONE")
    for block in blocks:
        m = re.search(r"^TZID(?:;[^:\r\n]*)?:([^\r\n]*)", block, re.M | re.I)
        if m is not None:
            out[m.group(1).strip()] = block
    return out


def _series_zones(prefix: str, window: Window) -> dict[str, tzinfo]:
    """TZID -> fast zone for the calendar's VTIMEZONEs whose TZID is not an IANA name."""
    lo, hi = window.start - window.shift, window.end - window.shift
    out: dict[str, tzinfo] = {}
    for tzid, block in _vtimezone_blocks(prefix).items():
        if _iana(tzid) is None:
            zone = zone_for_vtimezone(block, lo.year - 1, hi.year + 1)
            if zone is not None:
                out[tzid] = zone
    return out


_ZONED = ("DTSTART", "DTEND", "RECURRENCE-ID", "EXDATE", "RDATE")


def _rezone(comps: list[Any], zones: dict[str, tzinfo]) -> None:
    """Give the series' times written in a custom VTIMEZONE the fast zone (same wall time)."""
    for comp in comps:
        for name in _ZONED:
            for prop in _as_list(comp.get(name)):
                values = getattr(prop, "dts", None) or [prop]
                tzid = prop.params.get("TZID") if hasattr(prop, "params") else None
                zone = zones.get(str(tzid).strip()) if tzid else None
                if zone is None:
                    continue
                for one in values:
                    dt = getattr(one, "dt", None)
                    if isinstance(dt, datetime) and dt.tzinfo is not None:
                        one.dt = dt.replace(tzinfo=zone)


# -- the fast path for plain single events -------------------------------------------------
# Most entries of large exports are single events. Reading their few relevant
# properties directly is several times faster than building icalendar
# components; anything unusual (recurrence, DURATION, ENCODING, a zone that is
# not an IANA name, a repeated property, a broken line, an odd escape) goes to
# icalendar instead, which gives the same result for everything this path takes
# (a test compares both on generated and hand-written entries).

_FAST_PROPS = frozenset(
    {
        "UID",
        "DTSTART",
        "DTEND",
        "SUMMARY",
        "DESCRIPTION",
        "LOCATION",
        "STATUS",
        "TRANSP",
        "CATEGORIES",
        "URL",
        "X-CHRONOS-MODE",
    }
)
_SLOW_PROPS = frozenset({"RRULE", "RDATE", "EXDATE", "EXRULE", "RECURRENCE-ID", "DURATION"})
_NAME = re.compile(r"[A-Za-z0-9-]+\Z")
_DATE_TIME = re.compile(r"(\d{4})(\d{2})(\d{2})(?:T(\d{2})(\d{2})(\d{2})(Z?))?\Z")
_ESCAPE = re.compile(r"\\(.)")
_UNESCAPED = {"n": "\n", "N": "\n", ",": ",", ";": ";", "\\": "\\"}


class _Slow(Exception):
    """This entry needs icalendar."""


@lru_cache(maxsize=512)
def _iana(name: str) -> ZoneInfo | None:
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        return None


def _unescape(value: str) -> str:
    if "\\" not in value:
        return value

    def one(m: re.Match[str]) -> str:
        out = _UNESCAPED.get(m.group(1))
        if out is None:
            raise _Slow
        return out

    return _ESCAPE.sub(one, value)


def _param(params: str, key: str) -> str | None:
    for part in params.split(";")[1:]:
        name, _, value = part.partition("=")
        if name.upper() == key:
            return value.strip('"')
    return None


def _content_line(line: str) -> tuple[str, str, str]:
    colon = line.find(":")
    if colon < 0:
        raise _Slow
    if '"' in line[:colon]:  # a quoted parameter value may contain ':'
        quoted = False
        for i, ch in enumerate(line):
            if ch == '"':
                quoted = not quoted
            elif ch == ":" and not quoted:
                colon = i
                break
        else:
            raise _Slow
    head = line[:colon]
    semi = head.find(";")
    name = head if semi < 0 else head[:semi]
    if not _NAME.match(name):
        raise _Slow
    return name.upper(), ("" if semi < 0 else head[semi:]), line[colon + 1 :]


_UTC_ZONE = ZoneInfo("UTC")


def _fast_time(params: str, value: str, x_wr_zone: ZoneInfo | None) -> date | datetime:
    m = _DATE_TIME.match(value.strip())
    if m is None:
        raise _Slow
    y, mo, d, hh, mi, ss, z = m.groups()
    kind = (_param(params, "VALUE") or "").upper()
    if hh is None:
        if kind not in ("", "DATE"):
            raise _Slow
        return date(int(y), int(mo), int(d))
    if kind not in ("", "DATE-TIME"):
        raise _Slow
    value_dt = datetime(int(y), int(mo), int(d), int(hh), int(mi), int(ss))
    if z:
        aware = value_dt.replace(tzinfo=_UTC_ZONE)
        return aware.astimezone(x_wr_zone) if x_wr_zone is not None else aware
    tzid = _param(params, "TZID")
    if tzid:
        zone = _iana(tzid)
        if zone is None:
            raise _Slow
        return value_dt.replace(tzinfo=zone)
    return value_dt.replace(tzinfo=x_wr_zone) if x_wr_zone is not None else value_dt


def _plain_props(block: str) -> tuple[dict[str, tuple[str, str]], list[str]]:
    """The top-level properties of a VEVENT block (name -> (params, value)) and its categories.

    Raises ``_Slow`` for anything the fast path does not handle.
    """
    text = _UNFOLD.sub("", block) if ("\n " in block or "\n\t" in block) else block
    props: dict[str, tuple[str, str]] = {}
    tags: list[str] = []
    depth = 0
    for raw in text.split("\n")[1:]:
        line = raw[:-1] if raw.endswith("\r") else raw
        if not line:
            continue
        head = line[:6].upper()
        if head == "BEGIN:":
            depth += 1
            continue
        if head[:4] == "END:":
            if depth == 0:
                break
            depth -= 1
            continue
        if depth:
            continue  # VALARM and other nested components
        name, params, value = _content_line(line)
        if name in _SLOW_PROPS or "ENCODING=" in params.upper():
            raise _Slow
        if name not in _FAST_PROPS:
            continue
        if name == "CATEGORIES":
            if "\\" in value:
                raise _Slow
            tags += [t.strip() for t in value.split(",") if t.strip()]
            continue
        if name in props:
            raise _Slow
        props[name] = (params, value)
    return props, tags


def _fast_zone_name(start: date | datetime, window: Window) -> str | None:
    if isinstance(start, datetime) and start.tzinfo is not None:
        return str(start.tzinfo.key)  # type: ignore[attr-defined]
    if isinstance(start, datetime):
        return window.default_timezone
    return None


def _fast_single(block: str, uid: str, window: Window, x_wr: str | None, out: Parsed) -> None:
    """A plain single event without icalendar; raises ``_Slow`` when it is not plain."""
    x_wr_zone = None
    if x_wr:
        x_wr_zone = _iana(x_wr)
        if x_wr_zone is None:
            raise _Slow
    props, tags = _plain_props(block)
    if "DTSTART" not in props:
        raise _Slow
    start = _fast_time(*props["DTSTART"], x_wr_zone)
    if "DTEND" in props:
        end = _fast_time(*props["DTEND"], x_wr_zone)
    else:
        end = start if isinstance(start, datetime) else start + timedelta(days=1)

    def get(name: str) -> str:
        return props[name][1] if name in props else ""

    if get("STATUS").strip().upper() == "CANCELLED":
        out.deleted.append((uid, ""))
        return
    tz_name = _fast_zone_name(start, window)
    start, end = _moved(start, end, window)
    out.drafts.append(
        _make_draft(
            uid,
            "",
            start,
            end,
            tz_name,
            title=_unescape(get("SUMMARY")),
            description=_unescape(get("DESCRIPTION")),
            location=_unescape(get("LOCATION")),
            status=get("STATUS"),
            transp=get("TRANSP"),
            mode=get("X-CHRONOS-MODE"),
            url=get("URL"),
            tags=tags,
        )
    )
    out.instances += 1


def _message(exc: BaseException) -> str:
    text = str(exc) or type(exc).__name__
    if isinstance(exc, KeyError):
        text = f"missing property {text}"
    elif isinstance(exc, OverflowError):
        text = f"{text} (dates must fall in the years 1 to 9999, in UTC too)"
    return text[:500]


def parse_groups(prefix: str, groups: list[Group], window: Window, x_wr: str | None) -> Parsed:
    """Parse one chunk of groups; errors are per UID, so one bad entry spoils nothing else."""
    out = Parsed()
    slow: list[Group] = []
    for g in groups:
        if g.recurring or len(g.blocks) != 1:
            slow.append(g)
            continue
        part = Parsed()
        try:
            _fast_single(g.blocks[0], g.uid, window, x_wr, part)
        except (_Slow, ValueError, OverflowError):  # icalendar reports the error for this UID
            slow.append(g)
            continue
        out.drafts += part.drafts
        out.deleted += part.deleted
        out.instances += part.instances
    if slow:
        rest = _parse_slow(prefix, slow, window, x_wr)
        out.drafts += rest.drafts
        out.deleted += rest.deleted
        out.errors += rest.errors
        out.instances += rest.instances
    return out


def _parse_slow(prefix: str, groups: list[Group], window: Window, x_wr: str | None) -> Parsed:
    """Parse groups with icalendar (and expand recurring series)."""
    import icalendar

    out = Parsed()
    text = prefix + "".join(b for g in groups for b in g.blocks) + "END:VCALENDAR\r\n"
    try:
        cal = icalendar.Calendar.from_ical(text)
    except Exception:  # noqa: BLE001 - find the culprit group by group
        if len(groups) == 1:
            out.errors.append((groups[0].uid, "the entry could not be parsed as iCalendar"))
            return out
        for g in groups:
            part = _parse_slow(prefix, [g], window, x_wr)
            out.drafts += part.drafts
            out.deleted += part.deleted
            out.errors += part.errors
            out.instances += part.instances
        return out
    if x_wr:
        import x_wr_timezone

        # An unknown X-WR-TIMEZONE leaves times as written.
        with contextlib.suppress(Exception):
            cal = x_wr_timezone.to_standard(cal)
    timezones = [c for c in cal.subcomponents if c.name == "VTIMEZONE"]
    zones = _series_zones(prefix, window) if timezones and any(g.recurring for g in groups) else {}
    by_uid: dict[str, list[Any]] = {}
    for comp in cal.subcomponents:
        if comp.name == "VEVENT":
            by_uid.setdefault(str(comp.get("UID", "")).strip(), []).append(comp)
    for g in groups:
        comps = by_uid.get(g.uid, [])
        part = Parsed()  # all of a UID or nothing of it
        try:
            problems = next((p for p in map(_problems, comps) if p), None)
            if problems:
                raise ValueError(problems)
            if g.recurring:
                _series(comps, timezones, g.uid, window, x_wr, part, zones)
            else:
                _singles(comps, g.uid, window, x_wr, part)
        except Exception as exc:  # noqa: BLE001 - reported for this UID
            out.errors.append((g.uid, _message(exc)))
            continue
        out.drafts += part.drafts
        out.deleted += part.deleted
        out.instances += part.instances
    return out


# -- expansion threads shared fairly by every calendar -------------------------------------


class Expansion:
    """The threads that parse and expand iCalendar data, shared by every calendar of the process.

    A fixed number of threads (``sync.expansion_threads``), and at most
    ``per_calendar`` of them working for one calendar: a calendar whose series
    expand slowly waits for its own threads while the other calendars' chunks
    go ahead, and the service's default thread pool (used by the database
    driver's helpers, backups and other plugins' jobs) is never filled by
    parsing. Waiting chunks are served first come, first served among the
    calendars that are under their cap. A slot is freed when its thread is done,
    not when the waiting run gives up, so the bound holds for work that cannot
    be interrupted.
    """

    def __init__(self, threads: int) -> None:
        self.threads = threads
        self._pool: ThreadPoolExecutor | None = None
        self._busy: dict[Any, int] = {}
        self._in_use = 0
        self._waiting: deque[tuple[Any, asyncio.Future[None]]] = deque()
        # Slots are freed from the worker threads (the waiting loop may be gone by then).
        self._mutex = threading.Lock()

    @property
    def per_calendar(self) -> int:
        """At most this many threads work for one calendar (half of them, at least one)."""
        return max(1, self.threads // 2)

    def resize(self, threads: int) -> None:
        with self._mutex:
            if threads != self.threads:
                self.threads = threads
                if self._pool is not None and self._in_use == 0:
                    self._pool.shutdown(wait=False)
                    self._pool = None

    def busy(self, key: Any) -> int:
        """Threads working for ``key`` right now."""
        return self._busy.get(key, 0)

    def _can(self, key: Any) -> bool:
        return self._in_use < self.threads and self._busy.get(key, 0) < self.per_calendar

    def _take(self, key: Any) -> None:
        self._in_use += 1
        self._busy[key] = self._busy.get(key, 0) + 1

    def _release(self, key: Any) -> None:
        with self._mutex:
            self._in_use -= 1
            left = self._busy.get(key, 0) - 1
            if left > 0:
                self._busy[key] = left
            else:
                self._busy.pop(key, None)
            for item in list(self._waiting):
                if self._in_use >= self.threads:
                    break
                waiter_key, fut = item
                if fut.done():
                    self._waiting.remove(item)
                elif self._can(waiter_key):
                    try:
                        fut.get_loop().call_soon_threadsafe(_grant, fut)
                    except RuntimeError:  # its event loop is closed: nobody waits any more
                        self._waiting.remove(item)
                        continue
                    self._waiting.remove(item)
                    self._take(waiter_key)

    async def _slot(self, key: Any) -> None:
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        item = (key, fut)
        with self._mutex:
            if self._can(key):
                self._take(key)
                return
            self._waiting.append(item)
        try:
            await fut
        except BaseException:
            with self._mutex:
                granted = item not in self._waiting
                if not granted:
                    self._waiting.remove(item)
            if granted:
                self._release(key)  # granted, then given up before it was used
            raise

    async def run(self, key: Any, fn: Callable[..., _T], *args: Any) -> _T:
        """``fn(*args)`` in an expansion thread, as one of ``key``'s (a calendar's) share."""
        await self._slot(key)
        try:
            with self._mutex:
                if self._pool is None:
                    self._pool = ThreadPoolExecutor(self.threads, thread_name_prefix="chronos-expand")
                pool = self._pool
            work = pool.submit(fn, *args)
        except BaseException:
            self._release(key)
            raise
        work.add_done_callback(lambda _: self._release(key))
        return await asyncio.wrap_future(work)


def _grant(fut: asyncio.Future[None]) -> None:
    if not fut.done():
        fut.set_result(None)


_expansion: Expansion | None = None


def default_expansion_threads() -> int:
    return max(2, min(4, os.cpu_count() or 1))


def expansion(threads: int | None = None) -> Expansion:
    """The process's :class:`Expansion`; ``threads`` resizes it (the kernel sets it from
    ``sync.expansion_threads`` at startup)."""
    global _expansion
    if _expansion is None:
        _expansion = Expansion(threads or default_expansion_threads())
    elif threads is not None:
        _expansion.resize(threads)
    return _expansion
