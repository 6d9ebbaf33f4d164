"""Migrations: models match revisions, per-plugin version tables, downgrade, concurrent starts."""

from __future__ import annotations

import asyncio

import pytest
from sqlalchemy import inspect, text

from chronos.app import create_app
from chronos.db.engine import make_engine
from chronos.db.migrate import current, diff_models, downgrade, migrate
from chronos.plugin import Migrations
from chronos.testing import make_test_settings
from kernel_support import db_config, invoke_cli, write_config

HELLO = Migrations("hello", "chronos_hello")
KERNEL_TABLES = {"api_keys", "audit_log", "job_heartbeats", "job_runs"}


async def tables(database) -> set[str]:
    engine = make_engine(database.url, role="migrate", schema=database.schema)
    try:
        async with engine.connect() as conn:
            return set(await conn.run_sync(lambda c: inspect(c).get_table_names()))
    finally:
        await engine.dispose()


async def version(database, table: str) -> list[str]:
    engine = make_engine(database.url, role="migrate", schema=database.schema)
    try:
        async with engine.connect() as conn:
            return sorted(r[0] for r in await conn.execute(text(f"SELECT version_num FROM {table}")))
    finally:
        await engine.dispose()


def every_installed_plugin(database):
    """Load every installed plugin (strictly) so their models and migrations are known."""
    app = create_app(make_test_settings(database, {"plugins": {"strict": True}}), plugins=None, env={})
    host = app.state.runtime.host
    return host, host.migrations()


@pytest.mark.exercises_hook("register_migrations")
async def test_models_match_migrations_for_kernel_and_every_plugin(database):
    host, migs = every_installed_plugin(database)
    assert "hello" in [m.name for m in migs]
    applied = await migrate(database.url, migs, schema=database.schema)
    assert set(applied) == {"kernel", *(m.name for m in migs)}
    diffs = await diff_models(database.url, schema=database.schema)
    assert diffs == [], "models and migrations differ:\n" + "\n".join(map(str, diffs))
    status = await current(database.url, migs, schema=database.schema)
    assert all(s["up_to_date"] for s in status.values()), status


@pytest.mark.exercises_hook("register_migrations")
async def test_installing_a_plugin_later_applies_only_its_revisions(database):
    first = await migrate(database.url, [], schema=database.schema)
    assert list(first) == ["kernel"]
    assert await tables(database) >= KERNEL_TABLES
    assert "hello_greetings" not in await tables(database)

    later = await migrate(database.url, [HELLO], schema=database.schema)
    assert later == {"hello": ["hello0001"]}
    assert "hello_greetings" in await tables(database)
    assert await version(database, "alembic_version_hello") == ["hello0001"]

    assert await migrate(database.url, [HELLO], schema=database.schema) == {}


async def test_disabling_a_plugin_keeps_migrations_working(database):
    await migrate(database.url, [HELLO], schema=database.schema)
    # hello disabled (not passed): nothing to do, nothing breaks, its schema stays.
    assert await migrate(database.url, [], schema=database.schema) == {}
    assert "hello_greetings" in await tables(database)
    assert await version(database, "alembic_version_hello") == ["hello0001"]
    # Re-enabled: picks up where it was.
    assert await migrate(database.url, [HELLO], schema=database.schema) == {}


async def test_downgrade_round_trip(database):
    await migrate(database.url, [HELLO], schema=database.schema)
    await downgrade(database.url, [HELLO], "hello", "base", schema=database.schema)
    assert "hello_greetings" not in await tables(database)
    assert await version(database, "alembic_version_hello") == []

    await downgrade(database.url, [HELLO], "kernel", "base", schema=database.schema)
    assert not (KERNEL_TABLES & await tables(database))

    applied = await migrate(database.url, [HELLO], schema=database.schema)
    assert set(applied) == {"kernel", "hello"}
    assert KERNEL_TABLES | {"hello_greetings"} <= await tables(database)
    assert await diff_models_for(database, [HELLO]) == []


async def diff_models_for(database, migs):
    """Differences restricted to the kernel's and ``migs``' tables (other plugins are not migrated here)."""
    from chronos.db.migrate import _owner_tables

    owned = _owner_tables("chronos") | set().union(*(_owner_tables(m.package.split(".")[0]) for m in migs))
    diffs = await diff_models(database.url, schema=database.schema)
    return [d for d in diffs if _diff_table(d) in owned]


def _diff_table(diff) -> str | None:
    """The table an autogenerate difference is about."""
    op = diff[0] if isinstance(diff, list) else diff  # modify_* come as a list of tuples
    for item in op[1:]:
        if hasattr(item, "columns") and hasattr(item, "name") and not hasattr(item, "table"):
            return item.name  # a Table
        table = getattr(item, "table", None)
        if getattr(table, "name", None):
            return table.name  # an Index, a constraint or a Column
    return op[2] if len(op) > 2 and isinstance(op[2], str) else None


async def test_concurrent_migrations_on_a_fresh_database(database):
    results = await asyncio.gather(*(migrate(database.url, [HELLO], schema=database.schema) for _ in range(4)))
    full = [r for r in results if r]
    assert len(full) == 1, results  # one did the work, the others found it done
    assert set(full[0]) == {"kernel", "hello"}
    assert await diff_models_for(database, [HELLO]) == []


async def test_missing_revisions_directory_is_an_error(database):
    # A packaging slip that ships no revisions must not pass silently.
    with pytest.raises(RuntimeError, match="declares migrations but .* holds no revision files"):
        await migrate(database.url, [Migrations("ghost", "json")], schema=database.schema)


async def test_serve_without_migrate_on_start_leaves_the_schema_alone(database, chronos_app):
    async with chronos_app(config={"database": {"migrate_on_start": False}}, run_jobs=False):
        assert not (KERNEL_TABLES & await tables(database))


@pytest.mark.backends("sqlite")
def test_migrate_cli_applies_only_what_is_new(database, tmp_path):
    cfg = tmp_path / "c.yaml"
    write_config(cfg, db_config(database, plugins={"enabled": []}))
    res = invoke_cli("migrate", config=cfg)
    assert res.returncode == 0, res.stderr
    assert res.stdout.startswith("migrate: kernel -> ") and "hello" not in res.stdout

    write_config(cfg, db_config(database, plugins={"enabled": ["hello"]}))
    res = invoke_cli("migrate", config=cfg)
    assert res.returncode == 0, res.stderr
    assert res.stdout.strip() == "migrate: hello -> hello0001"

    write_config(cfg, db_config(database, plugins={"enabled": ["hello"], "disabled": ["hello"]}))
    res = invoke_cli("migrate", config=cfg)
    assert res.returncode == 0, res.stderr
    assert res.stdout.strip() == "migrate: up to date"
