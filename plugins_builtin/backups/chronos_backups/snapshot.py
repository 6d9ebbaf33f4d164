"""Taking a consistent snapshot of a live database, and looking inside one.

SQLite: the online backup API copies every page in one step under a read
transaction, so the copy is one consistent point in time (with the WAL's
committed frames folded in) while the service keeps writing. PostgreSQL:
pg_dump in custom format, reading the snapshot exported by a repeatable-read
transaction that also counts the rows, so the manifest's counts are the dump's.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import sqlite3
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from sqlalchemy.engine import make_url

from chronos_backups.archive import ArchiveError


class SnapshotError(Exception):
    """The snapshot could not be taken (the message says why)."""


# -- SQLite -------------------------------------------------------------------------------------------


def sqlite_path(url: str) -> Path:
    database = make_url(url).database
    if not database or database == ":memory:" or database.startswith("file:"):
        raise SnapshotError("backups need a SQLite database in a file")
    return Path(database).expanduser()


def sqlite_snapshot(source: Path, dest: Path) -> None:
    """Copy ``source`` to ``dest`` through SQLite's online backup API (never a file copy)."""
    if not source.exists():
        raise SnapshotError(f"the database {source} does not exist")
    src = sqlite3.connect(f"file:{source}?mode=ro", uri=True, timeout=30)
    try:
        dst = sqlite3.connect(dest)
        try:
            # A scratch file until it is in the archive (which is synced): no journal, no fsync of its own.
            dst.execute("PRAGMA journal_mode=OFF")
            dst.execute("PRAGMA synchronous=OFF")
            src.backup(dst, pages=-1)
            # The copy keeps WAL mode in its header; as a file at rest it needs no -wal beside it.
            dst.execute("PRAGMA journal_mode=DELETE")
        finally:
            dst.close()
    finally:
        src.close()


def _sqlite_tables(conn: sqlite3.Connection) -> list[str]:
    rows = conn.execute(
        "SELECT name, sql FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%' ORDER BY name"
    ).fetchall()
    return [name for name, sql in rows if not (sql or "").upper().startswith("CREATE VIRTUAL")]


def sqlite_counts(path: Path) -> dict[str, int]:
    conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        return {t: conn.execute(f'SELECT count(*) FROM "{t}"').fetchone()[0] for t in _sqlite_tables(conn)}
    finally:
        conn.close()


def sqlite_revisions(path: Path) -> dict[str, list[str]]:
    """Version table -> revisions at the snapshot."""
    conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        out = {}
        for t in _sqlite_tables(conn):
            if t.startswith("alembic_version"):
                out[t] = sorted(r[0] for r in conn.execute(f'SELECT version_num FROM "{t}"'))
        return out
    finally:
        conn.close()


def sqlite_integrity(path: Path) -> None:
    """Raise :class:`ArchiveError` unless ``PRAGMA integrity_check`` says ok."""
    try:
        conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
        try:
            rows = [r[0] for r in conn.execute("PRAGMA integrity_check").fetchall()]
        finally:
            conn.close()
    except sqlite3.DatabaseError as exc:
        raise ArchiveError(f"the database snapshot cannot be opened: {exc}") from None
    if rows != ["ok"]:
        raise ArchiveError(f"the database snapshot fails its integrity check: {'; '.join(rows[:3])}")


# -- PostgreSQL ---------------------------------------------------------------------------------------


def libpq(url: str) -> tuple[str, dict[str, str]]:
    """A libpq connection URL (no password) and the environment carrying the password."""
    parsed = make_url(url)
    env = dict(os.environ)
    if parsed.password:
        env["PGPASSWORD"] = str(parsed.password)
    plain = parsed.set(drivername="postgresql", password=None)
    return plain.render_as_string(hide_password=False), env


def binary(name: str) -> str:
    found = shutil.which(name)
    if found is None:
        raise SnapshotError(
            f"PostgreSQL backups need the {name} binary, which is not installed or not on PATH (install the"
            " PostgreSQL client of the server's major version, or set backups.pg_dump, backups.pg_restore and backups.psql)"
        )
    return found


async def pg_snapshot(
    engine: Any, schema: str, pg_dump: str, dest: Path
) -> tuple[dict[str, int], dict[str, list[str]]]:
    """Dump ``schema`` with pg_dump (custom format) at one exported snapshot; returns its row counts
    and the revisions in its version tables."""
    import asyncio

    exe = binary(pg_dump)
    async with engine.connect() as conn:
        raw = (await conn.get_raw_connection()).driver_connection
        tr = raw.transaction(isolation="repeatable_read", readonly=True)
        await tr.start()
        try:
            snapshot = await raw.fetchval("SELECT pg_export_snapshot()")
            tables = await raw.fetch("SELECT tablename FROM pg_tables WHERE schemaname = $1 ORDER BY tablename", schema)
            counts, revisions = {}, {}
            for row in tables:
                name = row["tablename"]
                counts[name] = await raw.fetchval(f'SELECT count(*) FROM "{schema}"."{name}"')
                if name.startswith("alembic_version"):
                    rows = await raw.fetch(f'SELECT version_num FROM "{schema}"."{name}"')
                    revisions[name] = sorted(r["version_num"] for r in rows)
            url, env = libpq(str(engine.url.render_as_string(hide_password=False)))
            proc = await asyncio.create_subprocess_exec(
                exe, "--format=custom", f"--schema={schema}", f"--snapshot={snapshot}", "--no-owner",
                "--no-privileges", f"--file={dest}", f"--dbname={url}",
                env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
            )  # fmt: skip
            _out, err = await proc.communicate()
            if proc.returncode != 0:
                raise SnapshotError(f"pg_dump failed: {err.decode(errors='replace').strip()[-500:]}")
        finally:
            await tr.rollback()
    return counts, revisions


COPY_RE = re.compile(r'^COPY "?([^"\s.]+)"?\."?([^"\s(]+)"? ')


def pg_dump_counts(pg_restore: str, dump: Path) -> dict[str, int]:
    """Rows per table in a custom-format dump, read with pg_restore (no server needed).

    Also proves the dump is complete: pg_restore reads every data block."""
    exe = binary(pg_restore)
    check = subprocess.run([exe, "--list", str(dump)], capture_output=True, text=True)
    if check.returncode != 0:
        raise ArchiveError(f"the database dump cannot be read: {check.stderr.strip()[-300:]}")
    proc = subprocess.Popen([exe, "--data-only", "--file=-", str(dump)], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    counts: dict[str, int] = {}
    current: str | None = None
    assert proc.stdout is not None
    for line in proc.stdout:
        if current is not None:
            if line == b"\\.\n":
                current = None
            else:
                counts[current] += 1
            continue
        m = COPY_RE.match(line.decode("utf-8", errors="replace"))
        if m:
            current = m.group(2)
            counts.setdefault(current, 0)
    err = proc.stderr.read().decode(errors="replace") if proc.stderr else ""
    if proc.wait() != 0:
        raise ArchiveError(f"the database dump is damaged: {err.strip()[-300:]}")
    return counts


def pg_dump_has_schema(pg_restore: str, dump: Path, schema: str) -> bool:
    listing = subprocess.run([binary(pg_restore), "--list", str(dump)], capture_output=True, text=True)
    return any(re.search(rf"\bSCHEMA - {re.escape(schema)}\b", line) for line in listing.stdout.splitlines())


def pg_dump_schema(pg_restore: str, dump: Path) -> str | None:
    """The schema a dump was taken from (its tables' schema)."""
    listing = subprocess.run([binary(pg_restore), "--list", str(dump)], capture_output=True, text=True)
    for line in listing.stdout.splitlines():
        m = re.search(r"\bTABLE (?!DATA )(\S+) \S+ ", line)
        if m and not line.startswith(";"):
            return m.group(1)
    return None


# -- assets -------------------------------------------------------------------------------------------


def asset_files(paths: list[str]) -> Iterator[tuple[str, Path]]:
    """(member name, file) for every regular file below the configured asset paths."""
    for i, entry in enumerate(paths):
        root = Path(entry).expanduser()
        if not root.exists():
            continue
        base = f"assets/{i}-{re.sub(r'[^A-Za-z0-9._-]', '_', root.name) or 'asset'}"
        if root.is_file():
            yield base, root
            continue
        for path in sorted(root.rglob("*")):
            if path.is_file() and not path.is_symlink():
                rel = path.relative_to(root).as_posix()
                yield f"{base}/{rel}", path


@contextlib.contextmanager
def removing(*paths: Path) -> Iterator[None]:
    try:
        yield
    finally:
        for p in paths:
            with contextlib.suppress(FileNotFoundError):
                p.unlink()
