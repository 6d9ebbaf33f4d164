"""The normalisers and enrichers this plugin contributes.

Normalisers (on drafts, before validation):

* ``times`` (order 10): naive times get the entry's zone (or the default),
  missing ends get the duration or the default length, date ends become
  exclusive, aware times become UTC while ``timezone`` keeps the original
  zone; an entry flagged ``metadata["all_day"]`` with date-times becomes dates.
* ``text`` (order 20): tidy whitespace, normalise tags (lower-case, no ``#``).

Enrichers (on canonical events):

* ``hashtags`` (order 10): ``#word`` in title and description → tags.
* ``checklist`` (order 20): ``[ ]``/``[x]``/``[X]`` lines → sub-tasks with stable ids.
* ``labels`` (order 30): configured keyword rules → tags.
"""

from __future__ import annotations

import hashlib
import re
from datetime import UTC, date, datetime, time, timedelta
from functools import lru_cache
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from chronos.plugin import CanonicalEvent, Enricher, EventDraft, Normalizer, SubTask

from chronos_normalize.settings import LabelRule, NormalizeSettings

_WS = re.compile(r"\s+")
# A tag starts with a letter and follows whitespace, start of text or an opening
# bracket: URL fragments (/#x), entities (&#38;), "C#" and "#1" are not tags.
_HASHTAG = re.compile(r"(?:^|(?<=[\s(\[{,;]))#([^\W\d_][\w-]{0,62})", re.UNICODE)
# "[ ] text", "- [x] text", "* [X] text", "1. [ ] text"; anything else is prose.
_CHECK = re.compile(r"^[ \t]*(?:[-*+][ \t]+|\d{1,3}[.)][ \t]+)?\[([ xX])\][ \t]+(\S.*?)[ \t]*$", re.MULTILINE)


@lru_cache(maxsize=512)
def zone(name: str) -> ZoneInfo:
    """A cached ZoneInfo; ``ValueError`` naming the zone when it is unknown."""
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        raise ValueError(f"unknown time zone {name!r}") from None


def _zone_name(value: datetime) -> str | None:
    tz = value.tzinfo
    if tz is None or tz is UTC:
        return None
    return getattr(tz, "key", None)


def _as_date(value: date | datetime, tz: Any, *, ceil: bool) -> date:
    """A datetime as a local date; ``ceil`` rounds a time after midnight up to the next day."""
    if not isinstance(value, datetime):
        return value
    if value.tzinfo is not None and tz is not None:
        value = value.astimezone(tz)
    day = value.date()
    if ceil and value.time() != time.min:
        day += timedelta(days=1)
    return day


class TimeNormalizer(Normalizer):
    """UTC conversion, exclusive ends, default lengths, all-day dates."""

    name = "times"
    order = 10

    def __init__(self, settings: NormalizeSettings) -> None:
        self.default_zone = zone(settings.default_timezone)
        self.default_length = timedelta(minutes=settings.default_duration_minutes)

    async def normalize(self, drafts: list[EventDraft], ctx: Any) -> None:
        for d in drafts:
            self.normalize_one(d)

    def normalize_one(self, d: EventDraft) -> None:
        tz = zone(d.timezone) if d.timezone else None
        if d.metadata.get("all_day") is True and isinstance(d.start, datetime):
            local = tz or (d.start.tzinfo if d.start.tzinfo is not None else self.default_zone)
            end = d.end if d.end is not None else (d.start + d.duration if d.duration else None)
            d.start = _as_date(d.start, local, ceil=False)
            d.end = _as_date(end, local, ceil=True) if end is not None else None
            d.duration = None
        if not isinstance(d.start, datetime):
            self._all_day(d, tz)
            return
        local = tz or self.default_zone
        start = d.start if d.start.tzinfo is not None else d.start.replace(tzinfo=local)
        end = d.end
        if end is None:
            end = start + (d.duration if d.duration is not None else self.default_length)
        elif not isinstance(end, datetime):
            # A date end on a timed start: the end of that (inclusive) day, locally.
            end = datetime.combine(end, time.min, start.tzinfo)
        elif end.tzinfo is None:
            end = end.replace(tzinfo=local)
        d.timezone = d.timezone or _zone_name(start)
        d.start, d.end, d.duration = start.astimezone(UTC), end.astimezone(UTC), None

    def _all_day(self, d: EventDraft, tz: Any) -> None:
        start: date = d.start
        end = d.end
        if end is None:
            days = d.duration.days if d.duration is not None else 1
            end = start + timedelta(days=max(days, 1))
        elif isinstance(end, datetime):
            end = _as_date(end, tz, ceil=True)
        if end == start:
            # Sources that give an inclusive last day mean that one whole day.
            end = start + timedelta(days=1)
        d.start, d.end, d.duration = start, end, None


class TextNormalizer(Normalizer):
    """One-line titles, tidy descriptions, canonical tags."""

    name = "text"
    order = 20

    async def normalize(self, drafts: list[EventDraft], ctx: Any) -> None:
        for d in drafts:
            # str.split() splits on exactly the characters \s matches: runs become one space, ends go.
            d.title = " ".join(d.title.split())
            d.location = " ".join(d.location.split())
            if d.description:
                text = d.description.replace("\r\n", "\n").replace("\r", "\n")
                d.description = "\n".join([line.rstrip() for line in text.split("\n")]).strip("\n")
            d.tags = normalize_tags(d.tags) if d.tags else []


def normalize_tags(tags: list[str]) -> list[str]:
    """Lower-case, without ``#`` or surrounding space, unique, sorted (stable content hashes)."""
    out = {t.strip().lstrip("#").strip().lower() for t in tags}
    out.discard("")
    return sorted(out)


def hashtags(text: str) -> set[str]:
    return {m.lower().rstrip("-") for m in _HASHTAG.findall(text)}


class HashtagEnricher(Enricher):
    """``#tags`` in title and description become tags."""

    name = "hashtags"
    order = 10

    async def enrich(self, events: list[CanonicalEvent], session: Any, ctx: Any) -> None:
        for e in events:
            if "#" not in e.title and "#" not in e.description:
                continue
            found = hashtags(e.title) | hashtags(e.description)
            if found:
                e.tags = normalize_tags([*e.tags, *found])


def parse_checklist(text: str) -> list[SubTask]:
    """Checklist lines of ``text`` as sub-tasks; other lines are ignored.

    Ids are stable while the item's text stays the same: a hash of the text
    (case and spacing folded) and its occurrence among equal texts, so ticking
    a box or editing other lines keeps every id.
    """
    tasks: list[SubTask] = []
    seen: dict[str, int] = {}
    for mark, item in _CHECK.findall(text):
        folded = _WS.sub(" ", item).casefold()
        n = seen.get(folded, 0)
        seen[folded] = n + 1
        digest = hashlib.sha1(f"{folded}\0{n}".encode()).hexdigest()[:12]
        tasks.append(SubTask(id=f"st_{digest}", text=item, done=mark in "xX"))
    return tasks


class ChecklistEnricher(Enricher):
    """``[ ]``, ``[x]``, ``[X]`` lines in descriptions become sub-tasks."""

    name = "checklist"
    order = 20

    async def enrich(self, events: list[CanonicalEvent], session: Any, ctx: Any) -> None:
        for e in events:
            if "[" in e.description:
                tasks = parse_checklist(e.description)
                if tasks:
                    e.sub_tasks = tasks


class LabelEnricher(Enricher):
    """Keyword rules from the settings: a whole-word match adds the rule's tag."""

    name = "labels"
    order = 30

    def __init__(self, rules: list[LabelRule]) -> None:
        self.rules = [
            (
                r.tag,
                tuple(r.fields),
                re.compile(
                    r"(?<!\w)(?:"
                    + "|".join(re.escape(k) for k in sorted(r.keywords, key=len, reverse=True))
                    + r")(?!\w)",
                    re.IGNORECASE,
                ),
            )
            for r in rules
        ]

    async def enrich(self, events: list[CanonicalEvent], session: Any, ctx: Any) -> None:
        for e in events:
            added = [tag for tag, fields, rx in self.rules if any(rx.search(getattr(e, f)) for f in fields)]
            if added:
                e.tags = normalize_tags([*e.tags, *added])
