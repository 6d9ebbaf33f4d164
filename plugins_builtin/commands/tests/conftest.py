"""Fixtures for the commands plugin's tests (chronos.testing provides the app and clients)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import update

from chronos.plugin import CalendarSpec, EventDraft, Source, SourceBatch, SourceError, hookimpl

WHITELIST = [
    {
        "system": "homeserver",
        "action": "light",
        "params": {"room": "[a-z_]{1,20}", "level": {"enum": ["on", "off", 0, 50, 100]}, "note": None},
    },
    {"system": "homeserver", "action": "PING", "params": {"n": r"\d{1,3}", "text": None}},
    {"system": "backup", "action": "RUN", "params": {"set": ["daily", "weekly"]}, "max_attempts": 2},
    {"system": "office", "action": "PRINT", "params": {"doc": None}},
]


@pytest.fixture
def commands_app(chronos_app):
    """``async with commands_app(**commands_settings) as app`` with the test whitelist seeded."""

    def factory(plugins: tuple[str, ...] = ("commands",), **settings: Any):
        section = {"whitelist": WHITELIST, **settings}
        return chronos_app(plugins=list(plugins), config={"commands": section})

    return factory


SCHEDULED = {"system": "garden", "action": "WATER", "params": {"minutes": r"\d{1,3}"}, "schedule": "event_start"}


class FakeSource(Source):
    """One calendar ``cal``, a full listing on every sync; optionally writable, with failing deletes."""

    name = "fake"

    def __init__(self, *, writable: bool = False) -> None:
        self.items: dict[str, EventDraft] = {}
        self.writable = writable
        self.fail_deletes = False
        self.deleted: list[tuple[str, str]] = []

    def put(self, uid: str, title: str, *, start: datetime | None = None, description: str = "",
            status: str = "confirmed") -> None:
        start = start or datetime(2026, 3, 2, 9, 0, tzinfo=UTC)
        self.items[uid] = EventDraft(uid=uid, start=start, end=start + timedelta(hours=1), title=title,
                                     description=description, status=status)

    def calendars(self) -> list[CalendarSpec]:
        return [CalendarSpec("cal", interval_seconds=0, read_only=not self.writable)]

    async def fetch(self, calendar: CalendarSpec, cursor: Any):
        fields = ("uid", "recurrence_id", "start", "end", "title", "description", "status")
        drafts = [EventDraft(**{k: getattr(d, k) for k in fields}) for d in self.items.values()]
        yield SourceBatch(drafts=drafts, full=True, complete=True)

    def can_delete(self, calendar: CalendarSpec) -> bool:
        return self.writable

    async def delete_entry(self, calendar: CalendarSpec, uid: str, recurrence_id: str = "") -> None:
        if self.fail_deletes:
            raise SourceError("the server said 503")
        self.deleted.append((uid, recurrence_id))
        self.items = {k: d for k, d in self.items.items() if (d.uid, d.recurrence_id or "") != (uid, recurrence_id)}


class SourcePlugin:
    """A plugin object contributing one source (registered as ``("fakesource", SourcePlugin(src))``)."""

    def __init__(self, source: FakeSource) -> None:
        self.source = source

    @hookimpl
    def register_sources(self):
        return [self.source]


@pytest.fixture
def fake_source() -> type[FakeSource]:
    return FakeSource


@pytest.fixture
def calendar_app(chronos_app):
    """``async with calendar_app(source, **commands_settings) as app`` with events, commands and the source."""

    def factory(source: FakeSource, **settings: Any):
        section = {"whitelist": [*WHITELIST, SCHEDULED], **settings}
        return chronos_app(plugins=["events", "commands", ("fakesource", SourcePlugin(source))],
                           config={"commands": section})

    return factory


class Helpers:
    """Direct database access for situations a test must set up without waiting."""

    @staticmethod
    def queue(app: Any) -> Any:
        from chronos_commands.state import queue_of

        return queue_of(app.state.chronos)

    @staticmethod
    async def shift(app: Any, ids: list[int], **columns: timedelta) -> None:
        """Move time columns of commands into the past, e.g. ``lease_expires_at=timedelta(minutes=5)``."""
        from chronos.plugin import utcnow

        from chronos_commands.models import ExternalCommand

        T = ExternalCommand.__table__
        async with app.state.chronos.db.write() as s:
            await s.execute(
                update(T).where(T.c.id.in_(ids)).values(**{k: utcnow() - v for k, v in columns.items()})
            )

    @staticmethod
    async def shift_deletions(app: Any) -> None:
        """Make every queued deletion at a source due now."""
        from chronos.plugin import utcnow

        from chronos_commands.models import SourceDeletion

        D = SourceDeletion.__table__
        async with app.state.chronos.db.write() as s:
            await s.execute(update(D).values(next_attempt_at=utcnow() - timedelta(seconds=1)))

    @staticmethod
    async def enqueue_many(app: Any, n: int, system: str = "homeserver", command: str = "PING") -> list[int]:
        from chronos_commands.queue import NewCommand

        queue = Helpers.queue(app)
        ids = []
        async with app.state.chronos.db.write() as s:
            for i in range(n):
                row, _ = await queue.insert(
                    s, NewCommand(system, command, {"n": str(i % 1000)}, [], f"test:{system}:{i}", "api"),
                    actor="test",
                )
                ids.append(row["id"])
        return ids

    @staticmethod
    async def audit(admin: Any, entity: str | None = None, action: str | None = None) -> list[dict[str, Any]]:
        """Audit rows through the API (oldest first); ``admin`` is a client with the admin scope."""
        params = {k: v for k, v in (("entity", entity), ("action", action)) if v} | {"limit": 500}
        r = await admin.get("/api/v1/audit", params=params)
        assert r.status_code == 200, r.text
        return list(reversed(r.json()["items"]))


@pytest.fixture
def helpers() -> type[Helpers]:
    return Helpers
