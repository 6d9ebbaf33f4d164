"""Fixtures of the backups tests: a backup directory and helpers (``bk.wait_backup`` …)."""

from __future__ import annotations

import asyncio
from types import SimpleNamespace
from typing import Any

import pytest
from sqlalchemy import inspect, select

from chronos.plugin import Base


def backups_config(backup_dir, **extra: Any) -> dict[str, Any]:
    return {"backups": {"directory": str(backup_dir), "schedule": None, **extra}}


async def wait_backup(c, backup_id: str) -> dict[str, Any]:
    for _ in range(600):
        r = await c.get(f"/api/v1/backups/{backup_id}")
        assert r.status_code == 200, r.text
        if r.json()["status"] != "running":
            return r.json()
        await asyncio.sleep(0.05)
    raise AssertionError("the backup did not finish")


async def table_rows(ctx) -> dict[str, list[dict[str, Any]]]:
    """Every model table's rows, ordered by primary key (what a restore must reproduce)."""
    out = {}
    async with ctx.db.read() as s:
        conn = await s.connection()
        names = set(await conn.run_sync(lambda c: inspect(c).get_table_names()))
        for table in Base.metadata.sorted_tables:
            if table.name not in names or table.name == "job_heartbeats":
                continue
            rows = (await s.execute(select(table).order_by(*table.primary_key.columns))).mappings().all()
            out[table.name] = [dict(r) for r in rows]
    return out


@pytest.fixture
def backup_dir(tmp_path):
    d = tmp_path / "backups"
    d.mkdir()
    return d


@pytest.fixture
def bk() -> SimpleNamespace:
    """The helpers: ``config(dir, **settings)``, ``wait_backup(client, id)``, ``table_rows(ctx)``."""
    return SimpleNamespace(config=backups_config, wait_backup=wait_backup, table_rows=table_rows)
