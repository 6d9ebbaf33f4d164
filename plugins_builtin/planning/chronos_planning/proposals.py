"""Conflict-free slots: working hours in a named zone, holidays, buffers, notice; DST-correct.

Slots are UTC instants on a local grid (``slot_step_minutes`` of local wall
time). Walking UTC instants means no slot can start in a local hour that does
not exist; a wall time already used that day (the repeated hour when clocks
go back) is skipped, so none appears twice.
"""

from __future__ import annotations

import bisect
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta
from operator import attrgetter
from typing import Any
from zoneinfo import ZoneInfo

from chronos_planning.rules import Busy
from chronos_planning.settings import WorkingHours, minutes_of


@dataclass
class SlotQuery:
    duration: timedelta
    start: datetime
    end: datetime
    hours: WorkingHours
    count: int
    step_minutes: int
    now: datetime


@dataclass
class Slot:
    start: datetime
    end: datetime
    rank: int = 0
    #: What the slot avoided: the busy event just before it and the one just after it (same local
    #: day), and whether it opens a working-hours range; :func:`describe` says it in words.
    follows: Busy | None = None
    precedes: Busy | None = None
    opens_hours: bool = False
    explanation: list[str] = field(default_factory=list)
    avoided: list[dict[str, Any]] = field(default_factory=list)


def iso_z(value: datetime) -> str:
    return value.astimezone(UTC).isoformat().replace("+00:00", "Z")


def _local(d: date, clock: str, tz: ZoneInfo) -> datetime:
    minutes = minutes_of(clock)
    if minutes == 1440:
        return datetime.combine(d + timedelta(days=1), time(), tz)
    return datetime.combine(d, time(minutes // 60, minutes % 60), tz)


def working_ranges(q: SlotQuery, holidays: set[date]) -> list[tuple[datetime, datetime]]:
    """The window's working time as UTC ranges, in order, holidays left out."""
    tz = ZoneInfo(q.hours.timezone)
    first = q.start.astimezone(tz).date() - timedelta(days=1)
    last = q.end.astimezone(tz).date() + timedelta(days=1)
    out: list[tuple[datetime, datetime]] = []
    d = first
    while d <= last:
        if d not in holidays:
            for r in sorted(q.hours.weekly.on(d.weekday()), key=lambda r: r.start):
                # fold=0: a start inside the spring-forward gap lands on the first instant after it.
                s = max(_local(d, r.start, tz).astimezone(UTC), q.start)
                e = min(_local(d, r.end, tz).astimezone(UTC), q.end)
                if s >= e:
                    continue
                if out and out[-1][1] >= s:
                    # Hours that run on (24:00 one day, 00:00 the next): one range, so a slot may span midnight.
                    out[-1] = (out[-1][0], max(out[-1][1], e))
                else:
                    out.append((s, e))
        d += timedelta(days=1)
    return out


def blocked_intervals(busy: list[Busy], hours: WorkingHours) -> list[tuple[datetime, datetime, int]]:
    """Each busy event's interval widened by the buffers, by start (then end, then id)."""
    before = timedelta(minutes=hours.buffer_before_minutes)
    after = timedelta(minutes=hours.buffer_after_minutes)
    # Plain tuples sort natively; ids are unique, so no two compare equal.
    return sorted([(b.start - before, b.end + after, b.id) for b in busy])


def free_gaps(
    ranges: list[tuple[datetime, datetime]], blocked: list[tuple[datetime, datetime, int]]
) -> list[tuple[datetime, datetime]]:
    """Working ranges minus the blocked intervals."""
    gaps: list[tuple[datetime, datetime]] = []
    starts = [b[0] for b in blocked]
    # Every blocked interval starting before a range's end may cut it; the longest reach bounds the look-back.
    reach = max((b[1] - b[0] for b in blocked), default=timedelta(0))
    for rs, re_ in ranges:
        cursor = rs
        lo = bisect.bisect_left(starts, rs - reach)
        hi = bisect.bisect_left(starts, re_)
        for bs, be, _ in blocked[lo:hi]:
            if be <= cursor:
                continue
            if bs > cursor:
                gaps.append((cursor, min(bs, re_)))
            cursor = max(cursor, be)
            if cursor >= re_:
                break
        if cursor < re_:
            gaps.append((cursor, re_))
    return [(s, e) for s, e in gaps if e > s]


def _aligned(t: datetime, tz: ZoneInfo, step: int) -> datetime:
    """The first instant at or after ``t`` whose local wall time is on the grid."""
    t = t.replace(microsecond=0)
    if t.second:
        t += timedelta(seconds=60 - t.second)
    for _ in range(4):  # an offset change inside the step moves the grid once
        local = t.astimezone(tz)
        off = (local.hour * 60 + local.minute) % step
        if off == 0:
            return t
        t += timedelta(minutes=step - off)
    return t


def candidate_starts(gap: tuple[datetime, datetime], q: SlotQuery, seen: set[datetime], limit: int) -> list[datetime]:
    tz = ZoneInfo(q.hours.timezone)
    notice = q.now + timedelta(minutes=q.hours.min_notice_minutes)
    step = timedelta(minutes=q.step_minutes)
    t = _aligned(max(gap[0], notice), tz, q.step_minutes)
    out: list[datetime] = []
    while t + q.duration <= gap[1] and len(out) < limit:
        local = t.astimezone(tz)
        wall = local.replace(tzinfo=None, fold=0)
        if local.fold == 0 and wall not in seen:
            seen.add(wall)
            out.append(t)
        t = _aligned(t + step, tz, q.step_minutes)
    return out


def find_slots(q: SlotQuery, busy: list[Busy], holidays: set[date]) -> list[Slot]:
    """Up to ``q.count`` slots, ranked: the earliest slot of each free gap first (spread over the
    window), then the remaining ones by time, each with the busy events next to it. Deterministic
    for equal inputs. Busy events carry no titles: :func:`describe` names the few the slots need."""
    ranges = working_ranges(q, holidays)
    blocked = blocked_intervals(busy, q.hours)
    seen: set[datetime] = set()
    firsts: list[datetime] = []
    rest: list[datetime] = []
    for gap in free_gaps(ranges, blocked):
        if len(firsts) >= q.count:
            break
        starts = candidate_starts(gap, q, seen, q.count)
        if starts:
            firsts.append(starts[0])
            rest.extend(starts[1:])
    chosen = firsts[: q.count]
    chosen += sorted(rest)[: q.count - len(chosen)]
    if not chosen:
        return []
    # For the explanations: the busy events by start (ties by id, as ids are unique).
    begins = sorted(busy, key=attrgetter("start", "id"))
    begin_keys = [b.start for b in begins]
    reach = max((b.end - b.start for b in begins), default=timedelta(0))
    tz = ZoneInfo(q.hours.timezone)
    opens = {rs for rs, _re in ranges}
    slots = []
    for rank, start in enumerate(chosen, 1):
        slot = Slot(start, start + q.duration, rank, opens_hours=start in opens)
        neighbours(slot, begins, begin_keys, reach, tz)
        slots.append(slot)
    return slots


def _clock(value: datetime, tz: ZoneInfo) -> str:
    return value.astimezone(tz).strftime("%H:%M")


def _last_before(begins: list[Busy], begin_keys: list[datetime], reach: timedelta, at: datetime) -> Busy | None:
    """The busy event that ends last at or before ``at`` (ties: the higher id) among those ending at
    most a day before it; ``begins`` by (start, id), none longer than ``reach``."""
    best: Busy | None = None
    bound = at - timedelta(hours=26)  # no local day is longer: an end before it is on another day
    i = bisect.bisect_right(begin_keys, at) - 1
    while i >= 0:
        b = begins[i]
        if b.start + reach < (best.end if best is not None else bound):
            break  # neither this one nor any that starts earlier ends later
        if b.end <= at and (best is None or (b.end, b.id) > (best.end, best.id)):
            best = b
        i -= 1
    return best if best is not None and best.end >= bound else None


def neighbours(slot: Slot, begins: list[Busy], begin_keys: list[datetime], reach: timedelta, tz: ZoneInfo) -> None:
    """The busy event just before the slot and the one just after it, on the same local day."""
    day = slot.start.astimezone(tz).date()
    b = _last_before(begins, begin_keys, reach, slot.start)
    if b is not None and b.end.astimezone(tz).date() == day:
        slot.follows = b
    j = bisect.bisect_left(begin_keys, slot.end)
    if j < len(begins) and begins[j].start.astimezone(tz).date() == day:
        slot.precedes = begins[j]


def describe(slot: Slot, tz: ZoneInfo, titles: dict[int, str]) -> None:
    """Say what the slot avoided, naming its neighbours by ``titles`` (event id to title)."""
    if (b := slot.follows) is not None:
        title = titles.get(b.id, "")
        slot.explanation.append(f"after '{title}' on {b.calendar_id}, which ends {_clock(b.end, tz)}")
        slot.avoided.append(_avoided(b, title, "before"))
    if (b := slot.precedes) is not None:
        title = titles.get(b.id, "")
        slot.explanation.append(f"before '{title}' on {b.calendar_id}, which starts {_clock(b.start, tz)}")
        slot.avoided.append(_avoided(b, title, "after"))
    if slot.opens_hours:
        slot.explanation.append(f"at the start of working hours ({_clock(slot.start, tz)})")
    if not slot.explanation:
        slot.explanation.append("free time within working hours")


def _avoided(b: Busy, title: str, where: str) -> dict[str, Any]:
    return {
        "event_id": b.id,
        "title": title,
        "calendar_id": b.calendar_id,
        "start_utc": iso_z(b.start),
        "end_utc": iso_z(b.end),
        "slot_is": "after" if where == "before" else "before",
    }
