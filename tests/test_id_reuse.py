"""Ids are never reused: a deleted event's, command's or template's id is not handed out again.

SQLite hands the highest rowid out again once its row is deleted unless the
table is declared AUTOINCREMENT (revisions events0003, commands0002,
templates0002); PostgreSQL's sequences never go back.
"""

from __future__ import annotations

from datetime import date

import pytest
import sqlalchemy as sa
from sqlalchemy import delete, insert

from chronos.db.base import utcnow

from chronos_commands.models import ExternalCommand
from chronos_events.models import Event
from chronos_templates.models import Template

PLUGINS = ["events", "commands", "templates"]


def _required_values(table: sa.Table, n: int) -> dict:
    """A value for every NOT NULL column without a default (unique per ``n``)."""
    values: dict = {}
    for col in table.columns:
        if col.primary_key or col.nullable or col.default is not None or col.server_default is not None:
            continue
        python_type = col.type.python_type if not isinstance(col.type, sa.JSON) else dict
        if python_type is str:
            values[col.name] = f"{col.name}-{n}"
        elif python_type is bool:
            values[col.name] = False
        elif python_type is int:
            values[col.name] = 0
        elif python_type is dict:
            values[col.name] = {}
        elif python_type is date:
            values[col.name] = date(2026, 1, 1)
        else:
            values[col.name] = utcnow()
    return values


OVERRIDES = {
    "external_commands": {"status": "pending", "origin": "api"},
    "templates": {"type": "email"},
}


@pytest.mark.parametrize("model", [Event, ExternalCommand, Template], ids=["events", "commands", "templates"])
async def test_deleted_id_is_never_reused(chronos_app, model):
    table = model.__table__
    async with chronos_app(plugins=PLUGINS) as app:
        db = app.state.chronos.db

        async def create(n: int) -> int:
            values = {**_required_values(table, n), **OVERRIDES.get(table.name, {})}
            async with db.write() as s:
                return (await s.execute(insert(table).values(**values).returning(table.c.id))).scalar_one()

        first = await create(1)
        newest = await create(2)
        async with db.write() as s:
            await s.execute(delete(table).where(table.c.id == newest))
        again = await create(3)
        assert first < newest < again
