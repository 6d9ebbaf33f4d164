"""Fixtures for the commands plugin's tests (chronos.testing provides the app and clients)."""

from __future__ import annotations

import functools
from collections.abc import Callable
from datetime import timedelta
from typing import Any

import pytest
from sqlalchemy import update

from chronos.testing import FakeSource, fake_source_plugin

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


@pytest.fixture
def fake_source() -> Callable[..., FakeSource]:
    """``fake_source(writable=False)``: one calendar ``cal``, synced only when a test runs the pipeline."""
    return functools.partial(FakeSource, ("cal",), interval_seconds=0)


@pytest.fixture
def calendar_app(chronos_app):
    """``async with calendar_app(source, **commands_settings) as app`` with events, commands and the source."""

    def factory(source: FakeSource, **settings: Any):
        section = {"whitelist": [*WHITELIST, SCHEDULED], **settings}
        return chronos_app(plugins=["events", "commands", fake_source_plugin(source)], config={"commands": section})

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
            await s.execute(update(T).where(T.c.id.in_(ids)).values(**{k: utcnow() - v for k, v in columns.items()}))

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
                    s,
                    NewCommand(system, command, {"n": str(i % 1000)}, [], f"test:{system}:{i}", "api"),
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
