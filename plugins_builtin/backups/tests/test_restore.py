"""Restore on both backends: backup, change data, restore, then equal to the snapshot row for row."""

from __future__ import annotations

import asyncio

import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import create_async_engine

from chronos.testing import FakeSource, create_test_key, fake_source_plugin, runtime_of, sync_now

from chronos_backups import service
from chronos_backups.restore import RestoreError, restore


async def drop_schema(url: str, schema: str) -> None:
    engine = create_async_engine(url)
    try:
        async with engine.begin() as conn:
            await conn.execute(text(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE'))
    finally:
        await engine.dispose()


async def test_restore_replaces_changed_data_with_the_snapshot(chronos_app, backup_dir, bk, database, db_backend):
    src = FakeSource()
    for i in range(25):
        src.put(f"uid-{i}", f"Meeting {i}")
    plugins = ["events", "backups", fake_source_plugin(src)]
    async with chronos_app(plugins=plugins, config=bk.config(backup_dir)) as app:
        await sync_now(app, "fake", "cal")
        await create_test_key(app, ["events.read"], name="before")
        ctx = runtime_of(app).ctx
        snapshot = await bk.table_rows(ctx)
        view = await service.create_backup(ctx, service.new_backup_id())
        assert view["verified"]
        # Change everything a restore must undo: new rows, changed rows, deleted rows.
        for i in range(10):
            src.remove(f"uid-{i}")
        src.put("uid-new", "Added after the backup")
        await sync_now(app, "fake", "cal")
        await create_test_key(app, ["admin"], name="after")
        changed = await bk.table_rows(ctx)
        assert changed["events"] != snapshot["events"] and changed["api_keys"] != snapshot["api_keys"]

        await asyncio.wait_for(_first_beat(app), 10)
        with pytest.raises(RestoreError, match="in use by a running server or worker"):
            await restore(ctx, backup_dir / view["file"])
    # The app is stopped: nothing uses the database now.
    result = await restore(ctx, backup_dir / view["file"])
    try:
        restored = await bk.table_rows(ctx)
        assert restored == snapshot
        if db_backend == "sqlite":
            assert result["previous"].endswith(".before-restore-" + result["previous"].rsplit("-", 1)[-1])
    finally:
        if db_backend == "postgresql" and result.get("previous"):
            await drop_schema(database.url, result["previous"].removeprefix("schema "))
        await ctx.db.dispose()
    # The restored database serves again.
    async with chronos_app(plugins=plugins, config=bk.config(backup_dir)) as app:
        assert len((await bk.table_rows(runtime_of(app).ctx))["events"]) == 25


async def _first_beat(app) -> None:
    while not app.state.chronos.jobs.last_beat:
        await asyncio.sleep(0.05)


async def _schemas(url: str, schema: str) -> set[str]:
    """``schema`` and the schemas a restore of it may create (staging, aside); other tests' are not ours."""
    engine = create_async_engine(url)
    try:
        async with engine.connect() as conn:
            rows = await conn.execute(text("SELECT schema_name FROM information_schema.schemata"))
            return {r[0] for r in rows if r[0].startswith(schema)}
    finally:
        await engine.dispose()


@pytest.mark.backends("postgresql")  # the pg_restore path
@pytest.mark.parametrize("fault", ["load", "migrate"])
async def test_a_failed_postgresql_restore_leaves_the_live_schema_as_it_was(
    chronos_app, backup_dir, bk, database, tmp_path, monkeypatch, fault
):
    src = FakeSource()
    for i in range(12):
        src.put(f"uid-{i}", f"Meeting {i}")
    plugins = ["events", "backups", fake_source_plugin(src)]
    extra = {}
    if fault == "load":
        # psql that loads half of the dump, then dies: the transaction must roll back whole.
        broken = tmp_path / "psql"
        broken.write_text('#!/bin/sh\nhead -c 2000 | psql "$@" >/dev/null 2>&1\necho "connection lost" >&2\nexit 2\n')
        broken.chmod(0o755)
        extra["psql"] = str(broken)
    async with chronos_app(plugins=plugins, config=bk.config(backup_dir, **extra)) as app:
        await sync_now(app, "fake", "cal")
        ctx = runtime_of(app).ctx
        view = await service.create_backup(ctx, service.new_backup_id())
        src.remove("uid-0")
        src.put("uid-new", "Added after the backup")
        await sync_now(app, "fake", "cal")
    live = await bk.table_rows(ctx)  # after shutdown, which writes an audit checkpoint
    before = await _schemas(database.url, database.schema)
    if fault == "migrate":

        async def failing_migrate(**_kw):
            raise RuntimeError("migration step failed")

        monkeypatch.setattr(ctx, "migrate", failing_migrate)
    with pytest.raises((RestoreError, RuntimeError), match="psql failed: connection lost|migration step failed"):
        await restore(ctx, backup_dir / view["file"])
    try:
        assert await bk.table_rows(ctx) == live
        assert await _schemas(database.url, database.schema) == before
    finally:
        await ctx.db.dispose()
