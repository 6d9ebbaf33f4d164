"""Migrations: the kernel first, then each enabled plugin, in one transaction.

Each owner (the kernel and every plugin declaring :class:`Migrations`) keeps its
own version table, so installing a plugin later applies only its revisions and
disabling or uninstalling one never blocks the others. Alembic is driven with a
``Config`` built in code; the only ``env.py`` is the kernel's.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from importlib.resources import files
from pathlib import Path
from typing import Any

from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.config import Config
from alembic.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Table, inspect, text
from sqlalchemy.engine import Connection

from chronos.db.base import Base, metadata
from chronos.db.engine import make_engine
from chronos.records import Migrations

log = logging.getLogger("chronos.migrate")

KERNEL = "kernel"
KERNEL_VERSION_TABLE = "alembic_version"
PG_LOCK_ID = 7_458_142_001


def migrations_root() -> str:
    return str(files("chronos.migrations"))


def tables_of(package: str) -> set[str]:
    """Tables whose ORM class lives in ``package`` (the ownership rule)."""
    out = set()
    for mapper in Base.registry.mappers:
        if mapper.class_.__module__.split(".")[0] == package and isinstance(mapper.local_table, Table):
            out.add(mapper.local_table.name)
    return out


def _owner_tables(package: str) -> set[str]:
    owned = tables_of(package)
    # Plain Table objects may declare their owner in info={"owner": package}.
    for table in metadata.tables.values():
        if table.info.get("owner") == package:
            owned.add(table.name)
    return owned


@dataclass
class Owner:
    name: str
    versions_dir: str
    version_table: str
    package: str
    requires: tuple[str, ...] = ()
    after_migrate: Any = None

    def config(self, connection: Connection | None = None) -> Config:
        cfg = Config()
        cfg.set_main_option("script_location", migrations_root())
        cfg.set_main_option("path_separator", "newline")
        cfg.set_main_option("version_locations", self.versions_dir)
        cfg.attributes["version_table"] = self.version_table
        cfg.attributes["tables"] = _owner_tables(self.package)
        if connection is not None:
            cfg.attributes["connection"] = connection
        return cfg


def kernel_owner() -> Owner:
    import chronos.db.models  # noqa: F401  (registers the kernel's tables)
    import chronos.db.sync_models  # noqa: F401  (the sync pipeline's tables)

    return Owner(KERNEL, str(files("chronos.migrations") / "versions"), KERNEL_VERSION_TABLE, "chronos")


def plugin_owner(m: Migrations, *, require_revisions: bool = True) -> Owner:
    # A packaging slip (package-data without migrations/versions/*.py) would
    # otherwise "migrate" nothing without a word while the tables never appear.
    versions = Path(m.versions_dir)
    if require_revisions and not any(p.name != "__init__.py" for p in versions.glob("*.py")):
        raise RuntimeError(
            f"plugin {m.name!r} declares migrations but {versions} holds no revision files;"
            f" ship {m.package}/migrations/versions/*.py as package data"
        )
    return Owner(m.name, m.versions_dir, m.version_table, m.package.split(".")[0], m.requires, m.after_migrate)


def ordered(owners: Sequence[Owner]) -> list[Owner]:
    """Kernel first, then plugins so that every ``requires`` comes before its dependants."""
    by_name = {o.name: o for o in owners}
    out: list[Owner] = []
    state: dict[str, int] = {}

    def visit(o: Owner, chain: tuple[str, ...]) -> None:
        if state.get(o.name) == 2:
            return
        if state.get(o.name) == 1:
            raise RuntimeError(f"migration dependency cycle: {' -> '.join(chain + (o.name,))}")
        state[o.name] = 1
        for dep in o.requires:
            if dep not in by_name:
                raise RuntimeError(f"plugin {o.name!r} requires plugin {dep!r}, which is not enabled")
            visit(by_name[dep], chain + (o.name,))
        state[o.name] = 2
        out.append(o)

    kernel = [o for o in owners if o.name == KERNEL]
    for o in sorted((o for o in owners if o.name != KERNEL), key=lambda o: o.name):
        visit(o, ())
    return kernel + out


def owners_for(migrations: Iterable[Migrations], *, require_revisions: bool = True) -> list[Owner]:
    """``require_revisions=False`` only when authoring a plugin's first revision."""
    return ordered([kernel_owner(), *(plugin_owner(m, require_revisions=require_revisions) for m in migrations)])


def _upgrade_sync(conn: Connection, owners: list[Owner], target: str = "heads") -> dict[str, list[str]]:
    if conn.dialect.name == "postgresql":
        # Several replicas starting at once queue here instead of racing on DDL.
        conn.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": PG_LOCK_ID})
    applied: dict[str, list[str]] = {}
    for owner in owners:
        before = _current(conn, owner)
        command.upgrade(owner.config(conn), target)
        after = _current(conn, owner)
        if before != after:
            applied[owner.name] = after
    for owner in owners:
        if owner.after_migrate is not None:
            owner.after_migrate(conn)
    known = {o.version_table for o in owners}
    for name in inspect(conn).get_table_names():
        if name.startswith("alembic_version_") and name not in known:
            log.warning("schema of a plugin that is not enabled stays as it is: %s", name)
    if conn.dialect.name == "sqlite":
        broken = conn.exec_driver_sql("PRAGMA foreign_key_check").all()
        if broken:
            raise RuntimeError(f"migration left rows violating foreign keys: {broken[:5]}")
    return applied


def known_revisions(owner: Owner) -> list[str]:
    """Every revision the installed code of ``owner`` ships (a database at another one is newer)."""
    return sorted(rev.revision for rev in ScriptDirectory.from_config(owner.config()).walk_revisions())


def _current(conn: Connection, owner: Owner) -> list[str]:
    ctx = MigrationContext.configure(conn, opts={"version_table": owner.version_table})
    return sorted(ctx.get_current_heads())


async def migrate(url: str, migrations: Iterable[Migrations], *, schema: str | None = None) -> dict[str, list[str]]:
    """Bring the kernel and every given plugin to head; returns what changed."""
    owners = owners_for(migrations)
    engine = make_engine(url, role="migrate", schema=schema)
    try:
        async with engine.begin() as conn:
            if schema and conn.dialect.name == "postgresql":
                await conn.execute(text(f'CREATE SCHEMA IF NOT EXISTS "{schema}"'))
            return await conn.run_sync(_upgrade_sync, owners)
    finally:
        await engine.dispose()


async def downgrade(
    url: str, migrations: Iterable[Migrations], owner: str, target: str = "base", *, schema: str | None = None
) -> None:
    owners = {o.name: o for o in owners_for(migrations)}
    if owner not in owners:
        raise KeyError(f"no migrations owner named {owner!r}")
    engine = make_engine(url, role="migrate", schema=schema)
    try:
        async with engine.begin() as conn:
            await conn.run_sync(lambda c: command.downgrade(owners[owner].config(c), target))
    finally:
        await engine.dispose()


async def current(
    url: str, migrations: Iterable[Migrations], *, schema: str | None = None
) -> dict[str, dict[str, Any]]:
    owners = owners_for(migrations)
    engine = make_engine(url, role="migrate", schema=schema)

    def _status(conn: Connection) -> dict[str, dict[str, Any]]:
        out = {}
        for o in owners:
            heads = sorted(ScriptDirectory.from_config(o.config()).get_heads())
            cur = _current(conn, o)
            out[o.name] = {"current": cur, "heads": heads, "up_to_date": cur == heads}
        return out

    try:
        async with engine.connect() as conn:
            return await conn.run_sync(_status)
    finally:
        await engine.dispose()


def _skipped_tables(conn: Connection) -> set[str]:
    if conn.dialect.name != "sqlite":
        return set()
    return {r[1] for r in conn.exec_driver_sql("PRAGMA table_list") if r[2] in ("virtual", "shadow")}


async def diff_models(url: str, *, schema: str | None = None) -> list[Any]:
    """Differences between the migrated database and all loaded models (empty when in sync)."""
    engine = make_engine(url, role="migrate", schema=schema)

    def _diff(conn: Connection) -> list[Any]:
        skip = _skipped_tables(conn)

        def include_name(name: str | None, type_: str, parent: Any) -> bool:
            if type_ == "table" and name is not None:
                return name not in skip and not name.startswith("alembic_version") and not name.startswith("sqlite_")
            if type_ == "index":
                # Raw DDL in a revision (Base.metadata.info["unmapped_indexes"]) is not in the models.
                return name not in metadata.info.get("unmapped_indexes", ())
            return True

        mc = MigrationContext.configure(conn, opts={"compare_type": True, "include_name": include_name})
        return list(compare_metadata(mc, metadata))

    try:
        async with engine.connect() as conn:
            return await conn.run_sync(_diff)
    finally:
        await engine.dispose()
