"""The calendar contracts: the canonical event and the sync pipeline's slots.

Data flows one way::

    Source.fetch() ─► SourceBatch(drafts, deletions, cursor)
        ─► Normalizer.normalize(drafts)        (in order; drafts become canonical-ready)
        ─► CanonicalEvent.from_draft()          (kernel; validation)
        ─► Enricher.enrich(events)             (in order; tags, sub-tasks, labels, commands…)
        ─► EventStore.apply(changed, deletions) (the events plugin; unchanged hashes skipped)
        ─► Sink.write(changes)                 (in order; commands, outbox…)
        ─► cursor + run record                  (same transaction as the batch)

All of it for one batch runs in one write transaction: a crash replays the batch,
never skips it. A normalizer, enricher or sink that raises is retried item by
item, so only the items it fails on are rolled back and reported.
"""

from __future__ import annotations

import hashlib
import json
from abc import ABC, abstractmethod
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta
from typing import TYPE_CHECKING, Any, ClassVar, Literal, NamedTuple

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from chronos.identity import Principal

if TYPE_CHECKING:  # pragma: no cover
    from sqlalchemy.ext.asyncio import AsyncSession

    from chronos.context import PluginContext

EventStatus = Literal["confirmed", "tentative", "cancelled"]
Transparency = Literal["busy", "free"]
#: ``free`` may overlap other events; ``auto-plan`` must not overlap busy ones. An event that sets
#: neither (``None``) takes its calendar's default mode (the planning plugin's per-calendar policy).
EventMode = Literal["free", "auto-plan"]


class EventKey(NamedTuple):
    """Identity of an event at its source; ``recurrence_id`` is "" for non-instances."""

    source: str
    calendar_id: str
    uid: str
    recurrence_id: str = ""


class SubTask(BaseModel):
    """A checklist line (``[ ] text`` / ``[x] text``) of an event's description."""

    id: str
    text: str
    done: bool = False


@dataclass
class EventDraft:
    """What a source yields for one entry, before normalisation.

    Times may be aware datetimes in any zone, naive datetimes (local to
    ``timezone``) or dates (all-day). ``end`` may be missing (then ``duration``
    or the normalisers' defaults apply). ``raw`` carries source-specific data
    normalisers may read; it is never stored.
    """

    uid: str
    start: datetime | date
    end: datetime | date | None = None
    duration: timedelta | None = None
    recurrence_id: str | None = None
    title: str = ""
    description: str = ""
    location: str = ""
    timezone: str | None = None
    status: EventStatus = "confirmed"
    transparency: Transparency = "busy"
    mode: EventMode | None = None  # None: the calendar's default
    tags: list[str] = field(default_factory=list)
    metadata: dict[str, Any] = field(default_factory=dict)
    raw: Any = None
    # Set by the pipeline from the batch; sources need not fill them.
    source: str = ""
    calendar_id: str = ""


def _utc(value: datetime) -> datetime:
    if value.tzinfo is UTC:  # what the normalisers deliver: nothing to convert
        return value
    if value.tzinfo is None:
        raise ValueError("naive datetime: normalisers must produce aware UTC datetimes")
    try:
        return value.astimezone(UTC)
    except OverflowError:
        # 9999-12-31T23:00-05:00 is past datetime.max in UTC: a validation error, not a crash.
        raise ValueError("the date-time is out of range in UTC (years 1 to 9999)") from None


class CanonicalEvent(BaseModel):
    """The normalised event every enricher, store and sink sees.

    ``start_utc``/``end_utc`` are aware UTC with an exclusive end. All-day
    events also carry ``start_date``/``end_date`` (end exclusive) and span whole
    UTC days in ``start_utc``/``end_utc``. ``timezone`` is the original TZID.
    """

    model_config = ConfigDict(extra="forbid", validate_assignment=False)

    source: str = Field(min_length=1, max_length=64)
    calendar_id: str = Field(min_length=1, max_length=200)
    uid: str = Field(min_length=1, max_length=1024)
    recurrence_id: str = Field("", max_length=64)
    title: str = Field("", max_length=2000)
    description: str = Field("", max_length=100_000)
    location: str = Field("", max_length=2000)
    start_utc: datetime
    end_utc: datetime
    all_day: bool = False
    start_date: date | None = None
    end_date: date | None = None
    timezone: str | None = Field(None, max_length=64)
    status: EventStatus = "confirmed"
    transparency: Transparency = "busy"
    mode: EventMode | None = None  # None: the calendar's default
    tags: list[str] = Field(default_factory=list)
    sub_tasks: list[SubTask] = Field(default_factory=list)
    metadata: dict[str, Any] = Field(default_factory=dict)

    @field_validator("start_utc", "end_utc")
    @classmethod
    def _aware_utc(cls, value: datetime) -> datetime:
        return _utc(value)

    @model_validator(mode="after")
    def _check(self) -> CanonicalEvent:
        if self.end_utc < self.start_utc:
            raise ValueError("end_utc is before start_utc")
        if self.all_day and (self.start_date is None or self.end_date is None):
            raise ValueError("all-day events need start_date and end_date")
        return self

    @classmethod
    def from_draft(cls, draft: EventDraft) -> CanonicalEvent:
        """Validate a normalised draft into a canonical event (the kernel's step
        between normalisers and enrichers).

        A ``date`` start makes an all-day event: ``end`` must be a date too
        (exclusive) and ``start_utc``/``end_utc`` become UTC midnights. A
        ``datetime`` start needs an aware ``end`` (normalisers attach zones to
        naive times and fill missing ends); ``duration`` is used when ``end`` is
        missing. ``timezone`` defaults to the start's zone key. Raises
        ``ValueError`` (pydantic's ``ValidationError`` included) naming the problem.
        """
        start, end = draft.start, draft.end
        if end is None and draft.duration is not None:
            end = start + draft.duration
        if end is None:
            raise ValueError("the entry has no end and no duration (the normalize plugin adds defaults)")
        start_date = end_date = None
        if isinstance(start, datetime):
            if not isinstance(end, datetime):
                raise ValueError("start is a date-time but end is a date")
            if start.tzinfo is None or end.tzinfo is None:
                raise ValueError("naive date-time without a timezone (the normalize plugin resolves TZIDs)")
            start_utc, end_utc, all_day = start, end, False
        else:
            if isinstance(end, datetime):
                raise ValueError("start is a date (all-day) but end is a date-time")
            start_date, end_date, all_day = start, end, True
            start_utc = datetime.combine(start, time.min, UTC)
            end_utc = datetime.combine(end, time.min, UTC)
        timezone = draft.timezone
        if timezone is None and isinstance(start, datetime):
            timezone = getattr(start.tzinfo, "key", None)
        return cls(
            source=draft.source,
            calendar_id=draft.calendar_id,
            uid=draft.uid,
            recurrence_id=draft.recurrence_id or "",
            title=draft.title,
            description=draft.description,
            location=draft.location,
            start_utc=start_utc,
            end_utc=end_utc,
            all_day=all_day,
            start_date=start_date,
            end_date=end_date,
            timezone=timezone,
            status=draft.status,
            transparency=draft.transparency,
            mode=draft.mode,
            tags=list(draft.tags),
            metadata=dict(draft.metadata),
        )

    @property
    def key(self) -> EventKey:
        return EventKey(self.source, self.calendar_id, self.uid, self.recurrence_id)

    @property
    def all_done(self) -> bool:
        """True when the event has a checklist and every item is done."""
        return bool(self.sub_tasks) and all(t.done for t in self.sub_tasks)

    def content_hash(self) -> str:
        """A stable hash of everything stored; equal hashes mean no write is needed.

        The SHA-256 of :func:`_hash_payload` as compact JSON with sorted keys (UTF-8): stored
        hashes are compared with it, so the same event must always give the same text.
        """
        return hashlib.sha256(_canonical_json(self).encode("utf-8")).hexdigest()


def _hash_payload(event: CanonicalEvent) -> dict[str, Any]:
    """What an event's content hash is taken of: its JSON-mode dump, mode spelled as below."""
    payload = event.model_dump(mode="json")
    # Hashes stored before an event could leave its mode unset spelled that "free": they stay
    # valid (no stored event looks changed), and an explicit "free" hashes apart from unset.
    if payload["mode"] is None:
        payload["mode"] = "free"
    elif payload["mode"] == "free":
        payload["mode_set"] = True
    return payload


_JSON_OPTIONS: dict[str, Any] = {"sort_keys": True, "separators": (",", ":"), "ensure_ascii": False}
#: How ``json.dumps(..., ensure_ascii=False)`` writes a string (raises TypeError for anything else).
_q = json.encoder.encode_basestring
#: The fields :func:`_common_json` writes, in sorted order; any other set of fields disables it.
_WRITTEN = (
    *("all_day", "calendar_id", "description", "end_date", "end_utc", "location", "metadata", "mode"),
    *("recurrence_id", "source", "start_date", "start_utc", "status", "sub_tasks", "tags", "timezone"),
    *("title", "transparency", "uid"),
)
_FAST_JSON = tuple(sorted(CanonicalEvent.model_fields)) == _WRITTEN


class _Unusual(Exception):
    """A value :func:`_common_json` does not write itself."""


def _canonical_json(event: CanonicalEvent) -> str:
    """``json.dumps(_hash_payload(event), sort_keys=True, separators=(",", ":"), ensure_ascii=False)``:
    the text an event's content hash is taken of.

    Every event of every sync is hashed, so an event of the usual shape is written directly
    (:func:`_common_json`, the same text in a fraction of the time); anything unusual (a value
    of another type assigned after validation, a subclass) takes pydantic's path.
    """
    if _FAST_JSON and type(event) is CanonicalEvent:
        try:
            return _common_json(event)
        except (_Unusual, TypeError):
            pass
    return json.dumps(_hash_payload(event), **_JSON_OPTIONS)


def _common_json(e: CanonicalEvent) -> str:
    v = e.__dict__
    return (
        f'{{"all_day":{_flag(v["all_day"])},"calendar_id":{_q(v["calendar_id"])},'
        f'"description":{_q(v["description"])},"end_date":{_day(v["end_date"])},"end_utc":{_time(v["end_utc"])},'
        f'"location":{_q(v["location"])},"metadata":{_metadata(e, v["metadata"])},"mode":{_mode(v["mode"])},'
        f'"recurrence_id":{_q(v["recurrence_id"])},"source":{_q(v["source"])},"start_date":{_day(v["start_date"])},'
        f'"start_utc":{_time(v["start_utc"])},"status":{_q(v["status"])},"sub_tasks":{_sub_tasks(v["sub_tasks"])},'
        f'"tags":{_strings(v["tags"])},"timezone":{"null" if v["timezone"] is None else _q(v["timezone"])},'
        f'"title":{_q(v["title"])},"transparency":{_q(v["transparency"])},"uid":{_q(v["uid"])}}}'
    )


def _flag(value: Any) -> str:
    if value is True:
        return "true"
    if value is False:
        return "false"
    raise _Unusual


def _mode(value: Any) -> str:
    if value is None:
        return '"free"'
    if value == "free":
        return '"free","mode_set":true'  # the key after "mode" in sorted order
    return _q(value)


def _time(value: Any) -> str:
    if type(value) is datetime and value.tzinfo is UTC:
        return f'"{value.isoformat()[:-6]}Z"'  # "+00:00" → "Z", as pydantic writes UTC
    raise _Unusual


def _day(value: Any) -> str:
    if value is None:
        return "null"
    if type(value) is date:
        return f'"{value.isoformat()}"'
    raise _Unusual


def _strings(values: Any) -> str:
    if type(values) is not list:
        raise _Unusual
    return "[" + ",".join([_q(v) for v in values]) + "]"


def _sub_tasks(tasks: Any) -> str:
    if type(tasks) is not list:
        raise _Unusual
    out = []
    for t in tasks:
        if type(t) is not SubTask or (t.done is not True and t.done is not False):
            raise _Unusual
        out.append(f'{{"done":{"true" if t.done else "false"},"id":{_q(t.id)},"text":{_q(t.text)}}}')
    return "[" + ",".join(out) + "]"


def _metadata(event: CanonicalEvent, value: Any) -> str:
    if type(value) is dict and not value:
        return "{}"
    # JSON is written member by member: this field's text is the same inside the whole.
    return json.dumps(event.model_dump(mode="json", include={"metadata"})["metadata"], **_JSON_OPTIONS)


# -- sources --------------------------------------------------------------------------


@dataclass(frozen=True)
class CalendarSpec:
    """One calendar a source syncs; ``options`` holds source-specific settings."""

    id: str
    interval_seconds: float = 300
    read_only: bool = True
    options: dict[str, Any] = field(default_factory=dict)


#: The recurrence id of a tombstone that deletes a whole series (see :class:`SourceBatch`).
WHOLE_SERIES = "*"


@dataclass
class SourceBatch:
    """One page of a sync.

    ``drafts`` are new or changed entries; ``deleted`` are tombstones as
    ``(uid, recurrence_id or "")`` pairs; ``(uid, WHOLE_SERIES)`` deletes
    every stored entry of that uid (a recurring series whose instances the
    provider does not list one by one when the series goes). ``cursor`` is
    what the source wants back next time (a sync token, ctag, ETag…), persisted in the same
    transaction as this batch; ``None`` keeps the previous cursor. A source
    doing a *full listing* sets ``full=True`` on every batch and
    ``complete=True`` on the last: only then does the pipeline delete the
    local events of that calendar the listing did not contain — a listing that
    fails half-way deletes nothing. ``not_modified=True`` (HTTP 304, equal
    ctag) ends the run with nothing to do (a ``cursor`` on it is still saved).

    ``errors`` are ``(uid, message)`` pairs for entries the source could not
    read (no DTSTART, an invalid RRULE…): the run reports them as failed items
    and a full listing keeps every stored event with that uid.

    When the cursor is saved: with the batch, unless an item of this run has
    failed (then the run keeps the cursor from before the failure, so the next
    sync offers the failed items again), and in a full listing only with the
    ``complete`` batch (a listing interrupted half-way restarts from the old
    cursor instead of being skipped as "not modified").
    """

    drafts: list[EventDraft] = field(default_factory=list)
    deleted: list[tuple[str, str]] = field(default_factory=list)
    cursor: dict[str, Any] | None = None
    full: bool = False
    complete: bool = False
    not_modified: bool = False
    errors: list[tuple[str, str]] = field(default_factory=list)


class SourceError(Exception):
    """A source could not be read (unreachable, 404, malformed…): the run fails
    for that calendar with this message, and the last good data is kept."""


class Source(ABC):
    """A calendar provider (ICS file/feed, Google, CalDAV…), registered with
    ``register_sources``.

    ``fetch`` is an async generator of :class:`SourceBatch`. Map each provider's
    incremental mechanism onto ``cursor``:

    * ICS over HTTP: ``{"etag": ..., "last_modified": ...}`` sent as
      ``If-None-Match``/``If-Modified-Since``; 304 → ``not_modified``; 200 → a
      full listing (``full=True``, ``complete=True`` on the last batch).
    * Google Calendar: ``{"sync_token": ...}``; pages follow ``pageToken``
      (keep the page token out of the cursor until the last page returns
      ``nextSyncToken``); cancelled items become ``deleted``; a 410 Gone means
      "start again with ``full=True``".
    * CalDAV: ``{"sync_token": ...}`` from RFC 6578 sync-collection (deleted
      hrefs → ``deleted``), or ``{"ctag": ...}`` where unsupported (equal ctag →
      ``not_modified``, else a full listing).

    ``cursor`` is ``None`` on the first run or when a full resync was asked for.
    """

    name: ClassVar[str]

    @abstractmethod
    def calendars(self) -> list[CalendarSpec]:
        """The calendars this source syncs (from its settings section)."""

    @abstractmethod
    def fetch(self, calendar: CalendarSpec, cursor: dict[str, Any] | None) -> AsyncIterator[SourceBatch]:
        """Yield batches for ``calendar`` starting from ``cursor``."""

    def can_delete(self, calendar: CalendarSpec) -> bool:
        """Whether :meth:`delete_entry` works for this calendar (write-back)."""
        return False

    async def delete_entry(self, calendar: CalendarSpec, uid: str, recurrence_id: str = "") -> None:
        """Delete an entry at the source (used when a command consumes it).

        Raise :class:`SourceError` on failure; the caller keeps its local state
        consistent (a tombstone) and retries idempotently on the next sync.
        """
        raise SourceError(f"source {self.name!r} is read-only")

    async def aclose(self) -> None:  # noqa: B027 - an optional hook: most sources hold nothing
        """Release what the source holds (connections, worker processes).

        The kernel awaits it once when the runtime stops, after the last run.
        """


# -- pipeline stages ---------------------------------------------------------------------


class Normalizer(ABC):
    """Turns drafts into canonical-ready drafts (UTC, exclusive end, all-day…).

    Runs in ascending ``order`` (ties by name) on each batch, mutating the
    drafts in place. Raising fails the batch's drafts one by one: the kernel
    retries each draft alone and reports those that still fail.
    """

    name: ClassVar[str]
    order: ClassVar[int] = 100

    @abstractmethod
    async def normalize(self, drafts: list[EventDraft], ctx: PluginContext) -> None: ...


class Enricher(ABC):
    """Adds derived data to canonical events (tags, sub-tasks, labels, hints).

    Runs in ascending ``order`` after normalisation, mutating events in place,
    inside the batch's write transaction (``session``) so it may read tables.
    Failure isolation as for normalisers.
    """

    name: ClassVar[str]
    order: ClassVar[int] = 100

    @abstractmethod
    async def enrich(self, events: list[CanonicalEvent], session: AsyncSession, ctx: PluginContext) -> None: ...


@dataclass
class StoredEvent:
    """A canonical event as stored, with its id and timestamps."""

    id: int
    event: CanonicalEvent
    content_hash: str
    created_at: datetime
    updated_at: datetime


@dataclass
class SinkBatch:
    """What changed in one batch, after the event store wrote it.

    ``principal`` is the authenticated caller whose request created the events
    (``EventIntake.ingest(..., principal=...)``: ``POST /api/v1/events``, a
    template's use); ``None`` for synced batches, whose actor is the calendar
    itself (``source:<source>/<calendar_id>``). A sink that acts on someone's
    behalf (queues a command, sends mail) must check what this caller may do
    itself — an API key must not gain rights by writing an event — and name
    the caller (or the calendar) in its audit rows.
    """

    source: str
    calendar_id: str
    added: list[StoredEvent] = field(default_factory=list)
    updated: list[StoredEvent] = field(default_factory=list)
    # Previous versions of updated events, by id (for edit-aware sinks).
    previous: dict[int, CanonicalEvent] = field(default_factory=dict)
    deleted: list[StoredEvent] = field(default_factory=list)
    run_id: int | None = None
    principal: Principal | None = None


class Sink(ABC):
    """Acts on stored changes (commands, outbox…), in the batch's transaction.

    Runs in ascending ``order``. Whatever a sink writes commits together with
    the events and the cursor. If it raises, the kernel rolls back and replays
    the batch item by item; items that still fail are not stored either, so
    the next sync offers them again — nothing is lost or half-done.
    """

    name: ClassVar[str]
    order: ClassVar[int] = 100

    @abstractmethod
    async def write(self, batch: SinkBatch, session: AsyncSession, ctx: PluginContext) -> None: ...


# -- the event store (provided by the `events` plugin) -----------------------------------


@dataclass
class ApplyResult:
    added: list[StoredEvent] = field(default_factory=list)
    updated: list[StoredEvent] = field(default_factory=list)
    previous: dict[int, CanonicalEvent] = field(default_factory=dict)
    deleted: list[StoredEvent] = field(default_factory=list)
    unchanged: int = 0
    suppressed: int = 0  # hidden by a local tombstone


class EventStore(ABC):
    """Persistence of canonical events, provided through ``register_services``.

    Every method takes the caller's session so that the pipeline's batch, the
    cursor and the sinks' writes share one transaction.
    """

    @abstractmethod
    async def apply(
        self, session: AsyncSession, upserts: list[CanonicalEvent], deletions: list[EventKey]
    ) -> ApplyResult:
        """Insert or update ``upserts`` (skipping equal content hashes and keys
        hidden by a tombstone) and delete ``deletions``."""

    @abstractmethod
    async def keys(self, session: AsyncSession, source: str, calendar_id: str) -> set[EventKey]:
        """Every stored key of one calendar (for full-listing reconciliation)."""

    async def keys_of(self, session: AsyncSession, source: str, calendar_id: str, uids: set[str]) -> set[EventKey]:
        """The stored keys of one calendar whose uid is one of ``uids`` (a series with its
        instances). The default filters :meth:`keys`; stores override it with a query."""
        return {k for k in await self.keys(session, source, calendar_id) if k.uid in uids}

    @abstractmethod
    async def get(self, session: AsyncSession, event_id: int) -> StoredEvent | None: ...

    @abstractmethod
    async def remove(self, session: AsyncSession, event_id: int, *, tombstone: bool, reason: str) -> bool:
        """Delete an event; with ``tombstone=True`` its key is never imported again
        (consumed entries of read-only sources)."""

    @abstractmethod
    async def update_metadata(self, session: AsyncSession, event_id: int, patch: dict[str, Any]) -> None:
        """Merge ``patch`` into the event's metadata (keys with None are removed)."""


class EventIntake(ABC):
    """Create events through the whole pipeline (the kernel provides it as
    ``ctx.service(EventIntake)``): API-created and template-created events are
    handled exactly like synced ones, and local edits of an event's text get
    their derived fields from the same enrichers (:meth:`rederive`)."""

    @abstractmethod
    async def ingest(
        self,
        source: str,
        calendar_id: str,
        drafts: list[EventDraft],
        *,
        actor: str | None = None,
        session: AsyncSession | None = None,
        principal: Principal | None = None,
    ) -> list[StoredEvent]:
        """Run ``drafts`` through normalisers, enrichers, the store and sinks;
        returns the stored events added or changed (consumed ones, e.g. an
        ``ACTION:``, and drafts equal to what is stored are absent).

        All or nothing: an invalid draft raises ``chronos.plugin.InvalidInput``
        (with a JSON pointer per draft) and a raising stage propagates; nothing
        is stored then. Pass ``session`` to run inside the caller's transaction
        (an API route that writes its own audit row with the request's
        principal); without it the intake commits its own transaction. With
        ``actor`` (e.g. ``"system:templates"``) an audit row per stored event is
        written in that transaction.

        ``principal`` is the API caller the events are created for: the sinks
        see it as :attr:`SinkBatch.principal` and act only within its rights
        (an ``ACTION:`` becomes a command only when this key could queue that
        command itself). Always pass it for events a request creates; leave
        it ``None`` only for work of the service itself.
        """

    async def calendars(self) -> list[dict[str, Any]]:
        """Every configured calendar of every enabled source, sorted by
        ``(source, calendar_id)``, with the outcome of its last sync: dicts with
        ``source``, ``calendar_id``, ``name`` (``options["name"]`` or the id),
        ``read_only``, ``interval_seconds``, ``running``, ``last_status``,
        ``last_success_at``, ``last_error_at`` and ``last_error`` (the same
        fields as ``GET /api/v1/sync/calendars``)."""
        return []

    def deletes_at_source(self, source: str, calendar_id: str) -> bool:
        """Whether an entry of this calendar can be deleted at its source: the
        calendar is configured, not read-only, and its source can delete."""
        return False

    async def delete_at_source(self, source: str, calendar_id: str, uid: str, recurrence_id: str = "") -> None:
        """Delete one entry at its source (network I/O: call it outside a write
        transaction). ``LookupError`` when the calendar is not configured;
        the source's :class:`SourceError` when it fails."""
        raise LookupError(f"calendar {calendar_id!r} of source {source!r} is not configured")

    async def rederive(self, session: AsyncSession, previous: CanonicalEvent, edited: CanonicalEvent) -> CanonicalEvent:
        """Run the enrichers again after a local edit of an event's text, so that
        what they derive (tags, sub-tasks, hints in metadata) follows the new text.

        ``previous`` is the event as stored (enriched); ``edited`` is the same
        event with the edit applied, still carrying the tags, sub-tasks and
        metadata of ``previous``. Returns a new event; neither argument is
        changed and nothing is written (no store, no sinks: the caller stores
        the result).

        * Tags: the tags the enrichers derive from ``previous`` on its own (its
          text, without any tags) count as derived and are dropped; every other
          tag is kept (given on creation, by the source, or by an earlier
          edit); then the enrichers add what the edited text implies. A kept
          tag that the old text also implied therefore goes with that text.
        * Sub-tasks: when the enrichers derive sub-tasks from either text, the
          list becomes what they derive from the edited text. An item that
          exists on both sides (same id) keeps the done flag of ``edited``
          unless its box in the text changed, then the new box wins. When
          neither text yields sub-tasks, ``edited.sub_tasks`` are kept as they
          are (sub-tasks that did not come from the text).
        * Metadata: ``edited.metadata`` as the enrichers leave it.

        An enricher rejecting the edited event with ``ValueError`` raises
        ``chronos.plugin.Problem`` (422); other errors propagate. The default
        returns ``edited`` unchanged (an intake without enrichers).
        """
        return edited
