"""Restoring an archive while the service is stopped.

In order: refuse while a server or worker uses the target database; verify the
archive (hashes, integrity, row counts) into a staging area beside the target;
refuse an archive newer than the code; build the restored database next to the
current one (a new SQLite file, a new PostgreSQL schema); migrate it forward;
then swap it in with one rename, keeping the previous database
(``<file>.before-restore-<timestamp>``, schema ``<schema>_before_restore_<timestamp>``).

Same backend: the SQLite snapshot becomes the file; a pg_dump is loaded with
pg_restore. Across backends the rows are copied table by table in dependency
order with the models' types, keys and ids unchanged (sequences follow).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import sqlite3
import subprocess
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

from sqlalchemy import inspect, select, text
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncEngine, async_sessionmaker, create_async_engine
from sqlalchemy.pool import NullPool

from chronos.plugin import Base, PluginContext, live_runners, utcnow

from chronos_backups.archive import ArchiveError
from chronos_backups.service import STORE, _fsync_dir, check_archive
from chronos_backups.settings import BackupsSettings
from chronos_backups.snapshot import binary, libpq, pg_dump_has_schema, pg_dump_schema, sqlite_path

Say = Callable[[str], None]
BATCH = 2000


class RestoreError(Exception):
    """The restore was refused or failed; the current database is untouched."""


def _engine(url: str, schema: str | None = None, **kw: Any) -> AsyncEngine:
    if url.startswith("sqlite"):
        return create_async_engine(url, poolclass=NullPool, **kw)
    args = {"server_settings": {"search_path": schema}} if schema else {}
    return create_async_engine(url, poolclass=NullPool, connect_args=args, **kw)


def _qi(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


# -- is anyone using it? ------------------------------------------------------------------------------


async def refuse_if_in_use(ctx: PluginContext, url: str, schema: str | None) -> None:
    if url.startswith("sqlite") and not sqlite_path(url).exists():
        return
    engine = _engine(url, schema)
    try:
        async with engine.connect() as conn:
            names = await conn.run_sync(lambda c: inspect(c).get_table_names())
        if "job_heartbeats" not in names:
            return
        window = ctx.settings.kernel.scheduler.heartbeat_stale_seconds
        async with async_sessionmaker(engine)() as session:
            runners = await live_runners(session, within_seconds=window)
    except Exception as exc:  # noqa: BLE001 - a damaged database is what a restore is for
        if url.startswith("sqlite") and "locked" not in str(exc):
            return
        if url.startswith("sqlite"):
            raise RestoreError("the database is locked by another process; stop the service first") from None
        raise RestoreError(f"cannot reach the target database: {exc}") from None
    finally:
        await engine.dispose()
    if runners:
        who = ", ".join(f"{r['runner_id']} on {r['host']}" for r in runners)
        raise RestoreError(
            f"the database is in use by a running server or worker ({who}); stop every `chronos serve` and"
            " `chronos worker` first (systemctl stop chronos, docker compose stop chronos, or Ctrl-C), then run"
            f" the restore again (a process that crashed stops counting {int(window)} s after its last heartbeat)"
        )


# -- revisions ----------------------------------------------------------------------------------------


def check_revisions(manifest: dict[str, Any], status: dict[str, Any]) -> list[str]:
    """Refuse an archive whose revisions this code does not know; returns notes for the operator."""
    by_table = {st["version_table"]: (owner, st) for owner, st in status.items()}
    notes = []
    for table, revs in sorted((manifest.get("revisions") or {}).items()):
        if table not in by_table:
            notes.append(f"tables of {table.removeprefix('alembic_version_')} (not enabled here) are kept as they are")
            continue
        owner, st = by_table[table]
        unknown = [r for r in revs if r not in st["known"]]
        if unknown:
            raise RestoreError(
                f"the archive is newer than this installation: {owner} is at revision {unknown[0]}, which this"
                f" version of Chronos does not know (the archive was made by {manifest.get('product_version')});"
                " upgrade Chronos, then restore"
            )
    return notes


# -- the steps ----------------------------------------------------------------------------------------


def stamp() -> str:
    return utcnow().strftime("%Y%m%dT%H%M%SZ")


async def restore(
    ctx: PluginContext,
    archive: Path,
    *,
    to_url: str | None = None,
    schema: str | None = None,
    via_url: str | None = None,
    say: Say = lambda _m: None,
) -> dict[str, Any]:
    """Restore ``archive`` into the configured database (or ``to_url``); see the module docstring."""
    settings = ctx.section(BackupsSettings)
    store = ctx.resource(STORE)
    dbs = ctx.settings.kernel.database
    url = to_url or dbs.url
    if not (url.startswith("sqlite+aiosqlite://") or url.startswith("postgresql+asyncpg://")):
        raise RestoreError("--to must be a sqlite+aiosqlite:/// or postgresql+asyncpg:// URL")
    target_pg = url.startswith("postgresql")
    schema = (schema or (dbs.schema_name if url == dbs.url else None) or "public") if target_pg else None
    say("checking that no server or worker uses the database")
    await refuse_if_in_use(ctx, url, schema)
    ts = stamp()
    home = sqlite_path(url).parent if not target_pg else store.directory
    home.mkdir(parents=True, exist_ok=True)
    staging = home / f".restore-{ts}-{uuid.uuid4().hex[:6]}"
    staging.mkdir()
    try:
        say(f"verifying {archive.name} (checksums, integrity, row counts)")
        try:
            manifest = await asyncio.to_thread(check_archive, archive, store.passphrase, settings.pg_restore, staging)
        except ArchiveError as exc:
            raise RestoreError(f"the archive cannot be restored: {exc}") from None
        except OSError as exc:  # a full disk while staging, an unreadable file
            raise RestoreError(f"the archive cannot be staged beside the database: {exc}") from None
        code = await ctx.migration_status(url=f"sqlite+aiosqlite:///{staging / 'code.db'}")
        notes = check_revisions(manifest, code)
        staged = staging / Path(manifest["database_member"]).name
        source = manifest["backend"]
        await refuse_if_in_use(ctx, url, schema)  # again: verifying a large archive takes a while
        if source == "sqlite" and not target_pg:
            result = await _sqlite_to_sqlite(ctx, staged, sqlite_path(url), ts, say)
        elif source == "sqlite":
            result = await _into_pg(ctx, _sqlite_source(staged), url, schema or "public", ts, say)
        elif target_pg and pg_dump_schema(settings.pg_restore, staged) == schema:
            result = await _pg_native(ctx, staged, url, schema or "public", ts, settings, say)
        else:
            result = await _from_pg_dump(ctx, staged, url, schema, ts, settings, via_url or _pg_server(ctx, url), say)
        return {**result, "notes": notes, "archive": archive.name, "created_at": manifest.get("created_at")}
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def _sqlite_source(path: Path) -> tuple[str, str | None]:
    return f"sqlite+aiosqlite:///{path}", None


def _pg_server(ctx: PluginContext, url: str) -> str | None:
    for candidate in (url, ctx.settings.kernel.database.url):
        if candidate.startswith("postgresql"):
            return candidate
    return None


async def _sqlite_to_sqlite(ctx: PluginContext, staged: Path, target: Path, ts: str, say: Say) -> dict[str, Any]:
    say("migrating the restored database forward")
    work = target.parent / f".{target.name}.restoring-{ts}"
    os.replace(staged, work)
    try:
        applied = await ctx.migrate(url=f"sqlite+aiosqlite:///{work}")
        _settle_sqlite(work)
        say("swapping the restored database in")
        before = _swap_sqlite(work, target, ts)
    finally:
        for p in (work, Path(f"{work}-wal"), Path(f"{work}-shm")):
            with contextlib.suppress(FileNotFoundError):
                p.unlink()
    return {"target": str(target), "previous": str(before) if before else None, "migrated": applied}


def _settle_sqlite(path: Path) -> None:
    """Fold the file's WAL into it, so the file alone is the database."""
    conn = sqlite3.connect(path)
    try:
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    finally:
        conn.close()


def _swap_sqlite(new: Path, target: Path, ts: str) -> Path | None:
    before = None
    if target.exists():
        _settle_sqlite(target)
        before = target.with_name(f"{target.name}.before-restore-{ts}")
        try:
            os.link(target, before)
        except OSError:
            shutil.copy2(target, before)
    for suffix in ("-wal", "-shm"):  # never let a stale WAL be applied to the new file
        with contextlib.suppress(FileNotFoundError):
            Path(f"{target}{suffix}").unlink()
    os.replace(new, target)
    _fsync_dir(target.parent)
    return before


# -- PostgreSQL ---------------------------------------------------------------------------------------


async def _pg_exec(url: str, *statements: str, schema: str | None = None) -> None:
    engine = _engine(url, schema)
    try:
        async with engine.begin() as conn:
            for sql in statements:
                await conn.execute(text(sql))
    finally:
        await engine.dispose()


async def _schema_exists(url: str, schema: str) -> bool:
    engine = _engine(url)
    try:
        async with engine.connect() as conn:
            found = await conn.execute(
                text("SELECT 1 FROM information_schema.schemata WHERE schema_name = :s"), {"s": schema}
            )
            return found.first() is not None
    finally:
        await engine.dispose()


def _aside(schema: str, ts: str) -> str:
    return f"{schema[: 63 - 16 - len(ts)]}_before_restore_{ts.lower()}"


def _staging(schema: str, ts: str) -> str:
    return f"{schema[: 63 - 11 - len(ts)]}_restoring_{ts.lower()}"


async def _pg_native(
    ctx: PluginContext, dump: Path, url: str, schema: str, ts: str, settings: BackupsSettings, say: Say
) -> dict[str, Any]:
    """Load a pg_dump of ``schema`` into a staging schema, migrate it, then swap it in.

    pg_restore can only recreate the dump under its own schema name, which is the
    live one. So its SQL runs through psql in one transaction that moves the live
    schema aside, loads the dump, renames the result to the staging name and puts
    the live schema back: committed, only the staging schema is new; failed,
    nothing changed. The swap itself is one more transaction, as for every other
    PostgreSQL restore.
    """
    restore_exe, psql_exe = binary(settings.pg_restore), binary(settings.psql)
    staging, aside = _staging(schema, ts), _aside(schema, ts)
    existed = await _schema_exists(url, schema)
    await _pg_exec(url, f"DROP SCHEMA IF EXISTS {_qi(staging)} CASCADE")
    before = [f"ALTER SCHEMA {_qi(schema)} RENAME TO {_qi(aside)};"] if existed else []
    if not pg_dump_has_schema(settings.pg_restore, dump, schema):
        before.append(f"CREATE SCHEMA {_qi(schema)};")
    after = [f"ALTER SCHEMA {_qi(schema)} RENAME TO {_qi(staging)};"]
    if existed:
        after.append(f"ALTER SCHEMA {_qi(aside)} RENAME TO {_qi(schema)};")
    try:
        say("loading the dump with pg_restore into a new schema")
        conn_url, env = libpq(url)
        await _pipe(
            [restore_exe, "--no-owner", "--no-privileges", "--file=-", str(dump)],
            [psql_exe, "--no-psqlrc", "--quiet", "--single-transaction", "--set=ON_ERROR_STOP=1",
             f"--dbname={conn_url}", "--command=" + " ".join(before or ["SELECT 1;"]), "--file=-",
             "--command=" + " ".join(after)],
            env,
        )  # fmt: skip
        say("migrating the restored database forward")
        applied = await ctx.migrate(url=url, schema=staging)
        say("swapping the restored schema in")
        swap = [f"ALTER SCHEMA {_qi(schema)} RENAME TO {_qi(aside)}"] if existed else []
        await _pg_exec(url, *swap, f"ALTER SCHEMA {_qi(staging)} RENAME TO {_qi(schema)}")
    except BaseException:
        with contextlib.suppress(Exception):
            await _pg_exec(url, f"DROP SCHEMA IF EXISTS {_qi(staging)} CASCADE")
        raise
    return {"target": f"{make_url(url).render_as_string()} schema {schema}",
            "previous": f"schema {aside}" if existed else None, "migrated": applied}  # fmt: skip


async def _pipe(producer: list[str], consumer: list[str], env: dict[str, str]) -> None:
    """Run ``producer | consumer``; a failure of either is a RestoreError with its last words."""
    read_end, write_end = os.pipe()
    try:
        first = await asyncio.create_subprocess_exec(*producer, env=env, stdout=write_end, stderr=subprocess.PIPE)
        second = await asyncio.create_subprocess_exec(
            *consumer, env=env, stdin=read_end, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
        )
    finally:
        os.close(read_end)
        os.close(write_end)
    (_o1, err1), (_o2, err2) = await asyncio.gather(first.communicate(), second.communicate())
    for proc, err, name in ((second, err2, "psql"), (first, err1, "pg_restore")):
        if proc.returncode != 0:
            raise RestoreError(f"{name} failed: {err.decode(errors='replace').strip()[-500:] or proc.returncode}")


async def _into_pg(
    ctx: PluginContext, source: tuple[str, str | None], url: str, schema: str, ts: str, say: Say
) -> dict[str, Any]:
    """Copy a (migrated) source database into a new schema, then rename it into place in one transaction."""
    say("migrating the restored database forward")
    await ctx.migrate(url=source[0], schema=source[1])
    staging, aside = _staging(schema, ts), _aside(schema, ts)
    await _pg_exec(url, f"DROP SCHEMA IF EXISTS {_qi(staging)} CASCADE", f"CREATE SCHEMA {_qi(staging)}")
    try:
        say("creating the tables in a new schema")
        await ctx.migrate(url=url, schema=staging)
        say("copying rows in dependency order")
        copied = await copy_rows(source, (url, staging))
        existed = await _schema_exists(url, schema)
        say("swapping the restored schema in")
        statements = [f"ALTER SCHEMA {_qi(schema)} RENAME TO {_qi(aside)}"] if existed else []
        await _pg_exec(url, *statements, f"ALTER SCHEMA {_qi(staging)} RENAME TO {_qi(schema)}")
    except BaseException:
        with contextlib.suppress(Exception):
            await _pg_exec(url, f"DROP SCHEMA IF EXISTS {_qi(staging)} CASCADE")
        raise
    return {"target": f"{make_url(url).render_as_string()} schema {schema}",
            "previous": f"schema {aside}" if existed else None, "rows": copied}  # fmt: skip


async def _from_pg_dump(
    ctx: PluginContext,
    dump: Path,
    url: str,
    schema: str | None,
    ts: str,
    settings: BackupsSettings,
    server: str | None,
    say: Say,
) -> dict[str, Any]:
    """A pg_dump restored elsewhere: load it into a scratch database, then copy its rows."""
    if server is None:
        raise RestoreError(
            "reading a PostgreSQL archive needs a PostgreSQL server to load it into a scratch database:"
            " pass --via postgresql+asyncpg://user@host/db"
        )
    dump_schema = pg_dump_schema(settings.pg_restore, dump) or "public"
    scratch_name = f"chronos_restore_{uuid.uuid4().hex[:12]}"
    scratch = make_url(server).set(database=scratch_name).render_as_string(hide_password=False)
    admin = _engine(server, isolation_level="AUTOCOMMIT")
    try:
        async with admin.connect() as conn:
            await conn.execute(text(f"CREATE DATABASE {_qi(scratch_name)}"))
    except Exception as exc:  # noqa: BLE001
        raise RestoreError(f"cannot create a scratch database on the PostgreSQL server: {exc}") from None
    finally:
        await admin.dispose()
    try:
        say("loading the dump into a scratch database")
        if not pg_dump_has_schema(settings.pg_restore, dump, dump_schema):
            await _pg_exec(scratch, f"CREATE SCHEMA IF NOT EXISTS {_qi(dump_schema)}")
        conn_url, env = libpq(scratch)
        proc = await asyncio.create_subprocess_exec(
            binary(settings.pg_restore), "--single-transaction", "--exit-on-error", "--no-owner",
            "--no-privileges", f"--dbname={conn_url}", str(dump),
            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
        )  # fmt: skip
        _out, err = await proc.communicate()
        if proc.returncode != 0:
            raise RestoreError(f"pg_restore failed: {err.decode(errors='replace').strip()[-500:]}")
        source = (scratch, dump_schema)
        if url.startswith("postgresql"):
            return await _into_pg(ctx, source, url, schema or "public", ts, say)
        return await _into_sqlite(ctx, source, sqlite_path(url), ts, say)
    finally:
        admin = _engine(server, isolation_level="AUTOCOMMIT")
        try:
            async with admin.connect() as conn:
                await conn.execute(text(f"DROP DATABASE IF EXISTS {_qi(scratch_name)} WITH (FORCE)"))
        finally:
            await admin.dispose()


async def _into_sqlite(
    ctx: PluginContext, source: tuple[str, str | None], target: Path, ts: str, say: Say
) -> dict[str, Any]:
    say("migrating the restored database forward")
    await ctx.migrate(url=source[0], schema=source[1])
    work = target.parent / f".{target.name}.restoring-{ts}"
    try:
        say("creating the tables in a new file")
        await ctx.migrate(url=f"sqlite+aiosqlite:///{work}")
        say("copying rows in dependency order")
        copied = await copy_rows(source, (f"sqlite+aiosqlite:///{work}", None))
        _settle_sqlite(work)
        say("swapping the restored database in")
        before = _swap_sqlite(work, target, ts)
    finally:
        for p in (work, Path(f"{work}-wal"), Path(f"{work}-shm")):
            with contextlib.suppress(FileNotFoundError):
                p.unlink()
    return {"target": str(target), "previous": str(before) if before else None, "rows": copied}


# -- copying rows -------------------------------------------------------------------------------------


async def copy_rows(source: tuple[str, str | None], target: tuple[str, str | None]) -> dict[str, int]:
    """Copy every model table present on both sides, parents before children, with the models' types;
    the target's rows are replaced. PostgreSQL sequences are moved past the copied ids."""
    src, dst = _engine(*source), _engine(*target)
    copied: dict[str, int] = {}
    try:
        async with src.connect() as s_conn, dst.begin() as d_conn:
            src_tables = set(await s_conn.run_sync(lambda c: inspect(c).get_table_names()))
            dst_tables = set(await d_conn.run_sync(lambda c: inspect(c).get_table_names()))
            tables = [
                t
                for t in Base.metadata.sorted_tables
                if t.name in src_tables and t.name in dst_tables and not t.name.startswith("alembic_version")
            ]
            pg = d_conn.dialect.name == "postgresql"
            if pg:
                with contextlib.suppress(Exception):
                    async with d_conn.begin_nested():
                        await d_conn.execute(text("SET LOCAL session_replication_role = replica"))
            else:
                await d_conn.exec_driver_sql("PRAGMA defer_foreign_keys = ON")
            for table in reversed(tables):
                await d_conn.execute(table.delete())
            for table in tables:
                n = 0
                pk = list(table.primary_key.columns)
                result = await s_conn.stream(select(table).order_by(*pk))
                async for chunk in result.partitions(BATCH):
                    rows = [dict(r._mapping) for r in chunk]
                    await d_conn.execute(table.insert(), rows)
                    n += len(rows)
                copied[table.name] = n
                if pg:
                    for col in pk:
                        if col.autoincrement is not False and _is_int(col):
                            await d_conn.execute(
                                text(
                                    f"SELECT setval(pg_get_serial_sequence(:t, :c), COALESCE(MAX({_qi(col.name)}), 1),"
                                    f" MAX({_qi(col.name)}) IS NOT NULL) FROM {_qi(table.name)}"
                                ),
                                {"t": _qi(table.name), "c": col.name},
                            )
    finally:
        await src.dispose()
        await dst.dispose()
    return copied


def _is_int(col: Any) -> bool:
    try:
        return col.type.python_type is int
    except NotImplementedError:
        return False
