"""The calendar sink works per batch: what it reads does not grow with the number of entries."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import event

from chronos.testing import runtime_of

pytestmark = pytest.mark.exercises_hook("register_sinks")

WINDOW = {"calendar_id": "cal", "from": "2000-01-01T00:00:00Z", "to": "2100-01-01T00:00:00Z", "limit": 500}


def _pending_lookups(statements: list[str]) -> list[str]:
    """Statements that look commands up by their calendar entry (source_uid in the WHERE clause)."""
    return [
        s
        for s in statements
        if "FROM external_commands" in s and "source_uid" in s.split("WHERE", 1)[-1] and "WHERE" in s
    ]


async def test_pending_commands_are_read_per_batch_not_per_entry(calendar_app, fake_source, api_client):
    src = fake_source(page=1000)
    tomorrow = (datetime.now(UTC) + timedelta(days=1)).replace(microsecond=0)
    for i in range(900):
        src.put(f"p{i}", f"Planning meeting {i}", start=tomorrow + timedelta(minutes=i))
    src.put("w1", "ACTION: WATER garden minutes=10", start=tomorrow)
    async with calendar_app(src) as app:
        c = await api_client(app, scopes=["admin"])
        pipeline = runtime_of(app).pipeline
        await pipeline.run("fake", "cal", full=True)
        (cmd,) = (await c.get("/api/v1/commands")).json()["items"]
        assert cmd["status"] == "pending"

        statements: list[str] = []

        def seen(conn, cursor, statement, parameters, context, executemany):
            statements.append(statement)

        engine = runtime_of(app).ctx.db.writer.sync_engine
        event.listen(engine, "before_cursor_execute", seen)
        try:
            # Every entry changes in one batch of 901, and the scheduled one moves.
            for i in range(900):
                src.put(f"p{i}", f"Planning meeting {i} (moved)", start=tomorrow + timedelta(minutes=i + 30))
            later = tomorrow + timedelta(hours=3)
            src.put("w1", "ACTION: WATER garden minutes=10", start=later)
            await pipeline.run("fake", "cal", full=True)
        finally:
            event.remove(engine, "before_cursor_execute", seen)

        # 901 keys as one parameter: one read for the batch (reading per entry would be 901).
        assert len(_pending_lookups(statements)) == 1, _pending_lookups(statements)
        (moved,) = (await c.get("/api/v1/commands")).json()["items"]
        assert moved["not_before"] == later.isoformat().replace("+00:00", "Z") and moved["status"] == "pending"
        events = (await c.get("/api/v1/events", params=WINDOW)).json()["items"]
        assert len(events) == 500 and all("command_hint" not in e["metadata"] for e in events)
