"""A SQLite backup restored into PostgreSQL and back: rows, keys, ids and the audit chain intact."""

from __future__ import annotations

import os
import subprocess
import sys
import uuid

import yaml
from sqlalchemy import text
from sqlalchemy.ext.asyncio import create_async_engine

from chronos.testing import (
    DEFAULT_PG_URL,
    FakeSource,
    TestDatabase as Database,
    client as http_client,
    create_test_key,
    fake_source_plugin,
    make_test_app,
    running_app,
    runtime_of,
    sync_now,
)

from chronos_backups import service
from chronos_backups.restore import restore

PG_URL = os.environ.get("CHRONOS_TEST_PG_URL", DEFAULT_PG_URL)


async def pg(sql: str) -> None:
    engine = create_async_engine(PG_URL)
    try:
        async with engine.begin() as conn:
            await conn.execute(text(sql))
    finally:
        await engine.dispose()


def audit_verify(tmp_path, database: Database, key_file) -> subprocess.CompletedProcess:
    cfg = tmp_path / f"verify-{uuid.uuid4().hex[:6]}.yaml"
    cfg.write_text(
        yaml.safe_dump(
            {
                "database": database.settings_section(),
                "audit": {"key_file": str(key_file)},
                "plugins": {"enabled": ["events", "backups"]},
                "logging": {"level": "error"},
            }  # fmt: skip
        )
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("CHRONOS")}
    return subprocess.run(
        [sys.executable, "-m", "chronos.cli", "--config", str(cfg), "audit", "verify"],
        capture_output=True, text=True, env=env, timeout=120,
    )  # fmt: skip


async def test_sqlite_to_postgresql_and_back(tmp_path, bk):
    backup_dir = tmp_path / "backups"
    key_file = tmp_path / "audit.key"
    config = {**bk.config(backup_dir), "audit": {"key_file": str(key_file)}}
    src = FakeSource()
    for i in range(40):
        src.put(f"uid-{i}", f"Meeting {i}", description=f"note {i}")
    plugins = ["events", "backups", fake_source_plugin(src)]
    lite = Database("sqlite", f"sqlite+aiosqlite:///{tmp_path / 'source.db'}")

    app = make_test_app(lite, plugins, config)
    async with running_app(app):
        await sync_now(app, "fake", "cal")
        secret = await create_test_key(app, ["backups.manage"])
        async with http_client(app, secret) as c:  # audited actions fill the chain
            first = await bk.wait_backup(c, (await c.post("/api/v1/backups")).json()["id"])
            assert (await c.post(f"/api/v1/backups/{first['id']}/verify")).json()["ok"]
        ctx = runtime_of(app).ctx
        snapshot = await bk.table_rows(ctx)
        view = await service.create_backup(ctx, service.new_backup_id())
    assert snapshot["audit_log"] and snapshot["events"]

    schema = f"t_{uuid.uuid4().hex[:16]}"
    pg_db = Database("postgresql", PG_URL, schema)
    try:
        result = await restore(ctx, backup_dir / view["file"], to_url=PG_URL, schema=schema)
        assert result["previous"] is None and result["rows"]["events"] == 40
        app = make_test_app(pg_db, plugins, config)
        async with running_app(app):
            pg_ctx = runtime_of(app).ctx
            assert await bk.table_rows(pg_ctx) == snapshot
            # ids continue after the copied ones
            await create_test_key(app, ["events.read"], name="after-restore")
        done = audit_verify(tmp_path, pg_db, key_file)
        assert done.returncode == 0, done.stderr
        assert "audit verify: ok" in done.stdout

        # ... and back: a PostgreSQL backup restored into a new SQLite file.
        app = make_test_app(pg_db, plugins, config)
        async with running_app(app):
            pg_ctx = runtime_of(app).ctx
            pg_rows = await bk.table_rows(pg_ctx)
            back = await service.create_backup(pg_ctx, service.new_backup_id())
            assert back["backend"] == "postgresql" and back["verified"]
        lite2 = Database("sqlite", f"sqlite+aiosqlite:///{tmp_path / 'back.db'}")
        result = await restore(pg_ctx, backup_dir / back["file"], to_url=lite2.url, via_url=PG_URL)
        app = make_test_app(lite2, plugins, config)
        async with running_app(app):
            assert await bk.table_rows(runtime_of(app).ctx) == pg_rows
        done = audit_verify(tmp_path, lite2, key_file)
        assert done.returncode == 0, done.stderr
    finally:
        await pg(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
