"""Parsing calendar objects, apart from the source so that its parser processes import little
(the kernel's public surface and its iCalendar code, no HTTP client or database models)."""

from __future__ import annotations

from dataclasses import dataclass, field

from chronos.plugin import EventDraft, ical

#: One calendar object as the server sent it: (href, etag, data); plain tuples cross to the workers cheaply.
Item = tuple[str, str | None, str | None]


@dataclass
class Known:
    """What the last sync learnt about one href."""

    uid: str
    etag: str | None
    keys: list[tuple[str, str]]
    recurring: bool


@dataclass
class Parsed:
    """One object, parsed."""

    href: str
    etag: str | None
    uid: str
    drafts: list[EventDraft] = field(default_factory=list)
    deleted: list[tuple[str, str]] = field(default_factory=list)
    errors: list[tuple[str, str]] = field(default_factory=list)
    recurring: bool = False
    #: Keys kept from the last sync when the object could not be read now (they stay stored).
    kept: list[tuple[str, str]] = field(default_factory=list)

    @property
    def keys(self) -> list[tuple[str, str]]:
        return [(d.uid, d.recurrence_id or "") for d in self.drafts]

    def row(self) -> Row:
        """What to remember of it (without the drafts)."""
        return Row(self.href, self.uid, self.etag, [list(k) for k in self.keys + self.kept], self.recurring)


@dataclass
class Row:
    """One ``caldav_objects`` row to write."""

    href: str
    uid: str
    etag: str | None
    keys: list[list[str]]
    recurring: bool


def parse_resource(res: Item, window: ical.Window, known: Known | None) -> Parsed:
    """One calendar object → drafts (series expanded inside ``window``), tombstones and errors.

    An object that cannot be read is an error for its uid (the one stored
    for the href when the text has none), so the events it had stay.
    """
    href, etag, data = res
    fallback = known.uid if known is not None else href
    out = Parsed(href, etag, fallback)
    try:
        split = ical.split_calendar(data or "")
    except ical.CalendarFormatError as exc:
        out.errors.append((fallback, f"{href}: {exc}"))
        return out
    if not split.groups:
        out.errors.append((fallback, f"{href}: the object holds no VEVENT"))
        return out
    out.uid = split.groups[0].uid
    out.recurring = split.recurring
    parsed = ical.parse_groups(split.prefix, split.groups, window, split.x_wr_timezone)
    out.drafts, out.deleted, out.errors = parsed.drafts, parsed.deleted, parsed.errors
    return out


def parse_chunk(items: list[Item], window: ical.Window, known: dict[str, Known]) -> list[Parsed]:
    """Several objects (a worker's share of a listing); ``known`` holds what the last sync learnt of them."""
    return [parse_resource(item, window, known.get(item[0])) for item in items]
