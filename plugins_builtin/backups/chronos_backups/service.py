"""Backups: create, list, verify, delete and prune archives in the backup directory.

The directory is the source of truth: every ``*.tar`` / ``*.tar.enc`` file in it
is a backup, dated by its manifest, whoever put it there. A verification leaves
``<id>.verified.json`` beside the archive, bound to the archive's size and
modification time (a replaced file is unverified again).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import secrets
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime
from importlib import metadata as importlib_metadata
from pathlib import Path, PurePosixPath
from typing import Any
from urllib.parse import urlsplit

from chronos.plugin import (
    Conflict,
    JobBusy,
    JobContext,
    MalformedInput,
    NotFound,
    Origin,
    PluginContext,
    Resource,
    Unavailable,
    decode_cursor,
    encode_cursor,
    record_audit,
    utcnow,
)

from chronos_backups import archive as fmt
from chronos_backups.archive import ArchiveError, ArchiveReader
from chronos_backups.retention import Dated, plan
from chronos_backups.settings import BackupsSettings
from chronos_backups.snapshot import (
    SnapshotError,
    asset_files,
    pg_dump_counts,
    pg_snapshot,
    removing,
    sqlite_counts,
    sqlite_integrity,
    sqlite_path,
    sqlite_revisions,
    sqlite_snapshot,
)

BACKUP_JOB = "backups.snapshot"
SECRET_KEY_RE = re.compile(
    r"(password|passwd|passphrase|secret|token|authorization|api[_-]?key|credential|key|header_value)", re.I
)
URL_RE = re.compile(r"\b[A-Za-z][A-Za-z0-9+.-]*://[^\s'\"<>`]+")
URL_PASSWORD_RE = re.compile(r"\b([A-Za-z][A-Za-z0-9+.-]*://[^/@:\s]*):[^/@\s]*@")


@dataclass
class Progress:
    """A backup being made (or one that failed) in this process."""

    id: str
    status: str = "running"
    phase: str = "starting"
    bytes_done: int = 0
    bytes_total: int = 0
    error: str | None = None
    started_at: datetime = field(default_factory=utcnow)
    finished_at: datetime | None = None

    def view(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "status": self.status,
            "progress": {"phase": self.phase, "bytes_done": self.bytes_done, "bytes_total": self.bytes_total},
            "error": self.error,
            "created_at": self.started_at,
        }


class BackupStore:
    """Per-app state: the directory, manifests already read, backups in progress."""

    def __init__(self, ctx: PluginContext) -> None:
        self.ctx = ctx
        self.settings: BackupsSettings = ctx.section(BackupsSettings)
        self.directory = Path(self.settings.directory).expanduser()
        self.progress: dict[str, Progress] = {}
        self._manifests: dict[Path, tuple[tuple[int, int], dict[str, Any] | str]] = {}

    @property
    def passphrase(self) -> str | None:
        secret = self.settings.passphrase
        return secret.get_secret_value() if secret is not None else None

    # -- the directory ----------------------------------------------------------------------------

    def archives(self) -> dict[str, Path]:
        """id -> archive file, for every archive in the directory."""
        out: dict[str, Path] = {}
        if not self.directory.is_dir():
            return out
        for path in sorted(self.directory.iterdir()):
            if path.name.startswith(".") or not path.is_file():
                continue
            aid = fmt.archive_id(path)
            if aid is not None and aid not in out:
                out[aid] = path
        return out

    def path_of(self, backup_id: str) -> Path:
        path = self.archives().get(backup_id) if fmt.ID_RE.match(backup_id) else None
        if path is None:
            raise NotFound(f"No backup with id {backup_id!r}")
        return path

    def manifest(self, path: Path) -> dict[str, Any] | str:
        """The archive's manifest, or why it cannot be read (cached by size and mtime)."""
        st = path.stat()
        key = (st.st_size, st.st_mtime_ns)
        cached = self._manifests.get(path)
        if cached is not None and cached[0] == key:
            return cached[1]
        try:
            found: dict[str, Any] | str = fmt.read_manifest(path, self.passphrase)
        except ArchiveError as exc:
            found = str(exc)
        except OSError as exc:
            found = f"cannot read the archive: {exc.strerror or exc}"
        self._manifests[path] = (key, found)
        return found

    def verification(self, path: Path) -> dict[str, Any] | None:
        aid = fmt.archive_id(path)
        side = path.parent / f"{aid}.verified.json"
        try:
            data = json.loads(side.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return None
        st = path.stat()
        if not isinstance(data, dict) or data.get("size") != st.st_size or data.get("mtime_ns") != st.st_mtime_ns:
            return None
        return data

    def describe(self, backup_id: str, path: Path) -> dict[str, Any]:
        st = path.stat()
        found = self.manifest(path)
        check = self.verification(path)
        view: dict[str, Any] = {
            "id": backup_id,
            "file": path.name,
            "size": st.st_size,
            "encrypted": fmt.is_encrypted(path),
            "verified": bool(check and check.get("ok")),
            "verified_at": check.get("verified_at") if check else None,
            "verify_error": check.get("error") if check else None,
            "progress": None,
        }
        if isinstance(found, str):
            mtime = datetime.fromtimestamp(st.st_mtime, UTC)
            return {**view, "status": "invalid", "error": found, "created_at": mtime, "backend": None,
                    "duration_ms": None, "product_version": None, "row_counts": []}  # fmt: skip
        return {
            **view,
            "status": "complete",
            "error": None,
            "created_at": _parse_time(found.get("created_at")) or datetime.fromtimestamp(st.st_mtime, UTC),
            "backend": found.get("backend"),
            "duration_ms": found.get("duration_ms") if isinstance(found.get("duration_ms"), int) else None,
            "product_version": str(found.get("product_version") or "") or None,
            "row_counts": [
                {"table": str(k), "rows": v}
                for k, v in sorted((found.get("row_counts") or {}).items())
                if isinstance(v, int)
            ],
        }

    def listing(self) -> list[dict[str, Any]]:
        """Every backup, newest first: archives in the directory and backups in progress or failed here."""
        rows = [self.describe(aid, path) for aid, path in self.archives().items()]
        present = {r["id"] for r in rows}
        rows += [{**_empty_view(p.id), **p.view()} for p in self.progress.values() if p.id not in present]
        rows.sort(key=lambda r: (r["created_at"], r["id"]), reverse=True)
        return rows


def _empty_view(backup_id: str) -> dict[str, Any]:
    return {
        "id": backup_id, "file": None, "size": None, "encrypted": False, "verified": False, "verified_at": None,
        "verify_error": None, "backend": None, "duration_ms": None, "product_version": None, "row_counts": [],
    }  # fmt: skip


def _parse_time(value: Any) -> datetime | None:
    if not isinstance(value, str):
        return None
    try:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


STORE: Resource[BackupStore] = Resource("backups.store", BackupStore)


# -- creating ---------------------------------------------------------------------------------------


def new_backup_id(now: datetime | None = None) -> str:
    now = now or utcnow()
    return f"chronos-{now.strftime('%Y%m%dT%H%M%SZ')}-{secrets.token_hex(3)}"


def redacted(value: Any, path: tuple[str, ...] = ()) -> Any:
    """``value`` with every secret replaced: values under secret-looking keys, and URLs reduced to
    their scheme and host (private feeds and webhooks carry their secret in the path or query);
    the database URL keeps its user, host and database, without the password."""
    if isinstance(value, dict):
        return {k: redacted(v, (*path, str(k))) for k, v in value.items()}
    if isinstance(value, list):
        return [redacted(v, path) for v in value]
    if not isinstance(value, str):  # numbers and flags are settings, not secrets
        return value
    key = path[-1] if path else ""
    if key and SECRET_KEY_RE.search(key) and key != "key_file":
        return "***"
    if path == ("database", "url"):
        return URL_PASSWORD_RE.sub(r"\1:***@", value)
    return URL_RE.sub(lambda m: _url_origin(m.group(0)), value)


def _url_origin(url: str) -> str:
    try:
        parts = urlsplit(url)
        host, port = parts.hostname or "", parts.port
    except ValueError:
        return "<URL>"
    host = f"[{host}]" if ":" in host else host
    return f"{parts.scheme}://{host}{f':{port}' if port else ''}"


def effective_config(ctx: PluginContext) -> dict[str, Any]:
    settings = ctx.settings
    data: dict[str, Any] = settings.kernel.model_dump(mode="json", by_alias=True)
    for name, section in settings.sections.items():
        data[name] = section.model_dump(mode="json", by_alias=True)
    return redacted(data)


def versions() -> tuple[str, dict[str, str]]:
    """The product's version and each installed plugin's (entry-point name -> distribution version)."""
    try:
        product = importlib_metadata.version("chronos-engine")
    except importlib_metadata.PackageNotFoundError:
        product = "0"
    plugins = {}
    for ep in importlib_metadata.entry_points(group="chronos.plugins"):
        dist = ep.dist
        plugins[ep.name] = dist.version if dist is not None else "unknown"
    return product, dict(sorted(plugins.items()))


async def create_backup(ctx: PluginContext, backup_id: str, origin: Origin | None = None) -> dict[str, Any]:
    """Take a snapshot and write it as ``<id>.tar[.enc]`` (under a hidden temporary name until it is
    complete); verify it when ``verify_after_backup``. Raises :class:`Unavailable` when it fails."""
    store = ctx.resource(STORE)
    progress = store.progress.setdefault(backup_id, Progress(backup_id))
    try:
        view = await _create(ctx, store, progress)
    except (SnapshotError, OSError, ArchiveError) as exc:
        progress.status, progress.finished_at = "failed", utcnow()
        progress.error = _reason(exc)
        raise Unavailable(f"Backup {backup_id} failed: {progress.error}") from None
    except BaseException as exc:
        progress.status, progress.finished_at = "failed", utcnow()
        progress.error = _reason(exc) if isinstance(exc, Exception) else "interrupted"
        raise
    store.progress.pop(backup_id, None)
    async with ctx.db.write() as s:
        await record_audit(
            s, entity="backup", entity_id=backup_id, action="create", origin=origin,
            actor=None if origin is not None else "backups",
            change={"file": view["file"], "size": view["size"], "verified": view["verified"]},
        )  # fmt: skip
    return view


def _reason(exc: BaseException) -> str:
    if isinstance(exc, OSError) and exc.strerror:
        return f"{exc.strerror} ({exc.filename})" if exc.filename else exc.strerror
    return str(exc) or type(exc).__name__


async def _create(ctx: PluginContext, store: BackupStore, progress: Progress) -> dict[str, Any]:
    settings = store.settings
    passphrase = store.passphrase if settings.encrypt else None
    started = time.monotonic()
    created_at = utcnow()
    directory = store.directory
    directory.mkdir(parents=True, exist_ok=True)
    suffix = ".tar.enc" if passphrase is not None else ".tar"
    final = directory / f"{progress.id}{suffix}"
    partial = directory / f".{progress.id}{suffix}.partial"
    db = ctx.db
    backend = "sqlite" if db.is_sqlite else "postgresql"
    member = fmt.SQLITE_MEMBER if db.is_sqlite else fmt.PG_MEMBER
    snap = directory / f".{progress.id}.snapshot"
    with removing(snap, partial):
        progress.phase = "snapshot"
        if db.is_sqlite:
            source = sqlite_path(db.url)
            await asyncio.to_thread(sqlite_snapshot, source, snap)
            counts = await asyncio.to_thread(sqlite_counts, snap)
            revisions = await asyncio.to_thread(sqlite_revisions, snap)
        else:
            schema = db.schema or "public"
            counts, revisions = await pg_snapshot(db.reader, schema, settings.pg_dump, snap)
        progress.phase = "hashing"
        files = {member: snap, **dict(asset_files(settings.assets))}
        blobs = {fmt.CONFIG_MEMBER: json.dumps(effective_config(ctx), indent=2, sort_keys=True).encode("utf-8")}
        members: dict[str, dict[str, Any]] = {}
        for name, path in files.items():  # hashed while written (write_archive)
            members[name] = {"size": path.stat().st_size, "sha256": None}
        for name, data in blobs.items():
            members[name] = {"size": len(data), "sha256": _sha256(data)}
        product, plugins = versions()
        manifest = {
            "format": fmt.FORMAT,
            "format_version": fmt.FORMAT_VERSION,
            "product": fmt.PRODUCT,
            "product_version": product,
            "plugins": plugins,
            "backend": backend,
            "schema": None if db.is_sqlite else (db.schema or "public"),
            "database_member": member,
            "wal": "folded into the snapshot by the online backup API" if db.is_sqlite else None,
            "revisions": revisions,
            "row_counts": counts,
            "members": members,
            "created_at": created_at.isoformat().replace("+00:00", "Z"),
            "duration_ms": 0,
        }
        progress.phase = "writing"
        progress.bytes_total = sum(m["size"] for m in members.values())

        def advance(n: int) -> None:
            progress.bytes_done += n

        manifest["duration_ms"] = int((time.monotonic() - started) * 1000)
        if passphrase is None and await asyncio.to_thread(_in_place, snap, member, manifest, blobs, files):
            # The snapshot file became the archive: no copy of the database.
            progress.bytes_done = progress.bytes_total
            os.replace(snap, final)
        else:
            await asyncio.to_thread(fmt.write_archive, partial, manifest, files, blobs, passphrase, advance)
            os.replace(partial, final)
        _fsync_dir(directory)
    if settings.verify_after_backup:
        progress.phase = "verifying"
        await verify_path(store, final)
    return store.describe(progress.id, final)


def _in_place(
    snap: Path, member: str, manifest: dict[str, Any], blobs: dict[str, bytes], files: dict[str, Path]
) -> bool:
    """Hash every file, then make the snapshot file the archive where the filesystem allows it.

    The snapshot's pages go to disk while it is hashed (I/O and CPU side by side); inserting the
    manifest in front moves no data, so the archive's final fsync is small."""
    with ThreadPoolExecutor(1) as pool:
        flushed = pool.submit(_fsync_file, snap)
        for name, path in files.items():
            manifest["members"][name]["sha256"] = fmt.sha256_file(path)
        flushed.result()
    others = {name: path for name, path in files.items() if name != member}
    if fmt.archive_in_place(snap, member, manifest, blobs, others):
        return True
    for name in files:  # write_archive hashes while it copies
        manifest["members"][name]["sha256"] = None
    return False


def _sha256(data: bytes) -> str:
    import hashlib

    return hashlib.sha256(data).hexdigest()


def _fsync_file(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _fsync_dir(directory: Path) -> None:
    with contextlib.suppress(OSError):
        fd = os.open(directory, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def start_backup(ctx: PluginContext, origin: Origin | None) -> dict[str, Any]:
    """Start a backup in the background (through the job runner: never two at once)."""
    if ctx.jobs is None:
        raise Unavailable("The job runner is not running")
    backup_id = new_backup_id()
    store = ctx.resource(STORE)
    store.progress[backup_id] = Progress(backup_id)
    try:
        ctx.jobs.run_now(BACKUP_JOB, {"backup_id": backup_id, "origin": origin})
    except JobBusy:
        store.progress.pop(backup_id, None)
        raise Conflict("A backup is already running; try again when it ends", type="backup-running") from None
    return {**_empty_view(backup_id), **store.progress[backup_id].view()}


async def backup_job(job: JobContext) -> dict[str, Any]:
    """The scheduled (or requested) backup; a scheduled run also applies retention."""
    ctx = job.ctx
    backup_id = job.args.get("backup_id") or new_backup_id()
    view = await create_backup(ctx, backup_id, job.args.get("origin"))
    pruned: list[str] = []
    if job.trigger == "schedule":
        pruned = (await prune(ctx, dry_run=False))["deleted"]
    if view["verify_error"]:  # the run is recorded as failed; retention keeps the newest verified archive
        raise Unavailable(f"Backup {backup_id} failed its verification: {view['verify_error']}")
    return {"backup": backup_id, "pruned": pruned, "verified": view["verified"]}


# -- reading ----------------------------------------------------------------------------------------


async def list_backups(ctx: PluginContext, *, limit: int, cursor: str | None) -> dict[str, Any]:
    store = ctx.resource(STORE)
    rows = await asyncio.to_thread(store.listing)
    if cursor is not None:
        when, last_id = decode_cursor("backups", cursor, [str, str])
        after = _parse_time(when)
        if after is None:
            raise decode_error()
        rows = [r for r in rows if (r["created_at"], r["id"]) < (after, last_id)]
    page = rows[:limit]
    nxt = None
    if len(rows) > limit:
        last = page[-1]
        nxt = encode_cursor("backups", [last["created_at"].isoformat(), last["id"]])
    return {"items": page, "next_cursor": nxt}


def decode_error() -> Exception:
    return MalformedInput(
        "The cursor is invalid or belongs to another query; start again without it", type="invalid-cursor"
    )


async def get_backup(ctx: PluginContext, backup_id: str) -> dict[str, Any]:
    store = ctx.resource(STORE)
    progress = store.progress.get(backup_id)
    if progress is not None:
        return {**_empty_view(backup_id), **progress.view()}
    path = store.path_of(backup_id)
    return await asyncio.to_thread(store.describe, backup_id, path)


def download_path(ctx: PluginContext, backup_id: str) -> Path:
    store = ctx.resource(STORE)
    if backup_id in store.progress:
        raise Conflict(f"Backup {backup_id} is not complete")
    return store.path_of(backup_id)


async def delete_backup(ctx: PluginContext, backup_id: str, origin: Origin | None) -> None:
    store = ctx.resource(STORE)
    progress = store.progress.get(backup_id)
    if progress is not None and progress.status == "running":
        raise Conflict(f"Backup {backup_id} is still being written")
    if progress is not None:  # a failed one: forget it
        store.progress.pop(backup_id, None)
        return
    path = store.path_of(backup_id)
    _remove(store, backup_id, path)
    async with ctx.db.write() as s:
        await record_audit(s, entity="backup", entity_id=backup_id, action="delete", origin=origin)


def _remove(store: BackupStore, backup_id: str, path: Path) -> None:
    path.unlink(missing_ok=True)
    (store.directory / f"{backup_id}.verified.json").unlink(missing_ok=True)
    store._manifests.pop(path, None)


# -- verifying --------------------------------------------------------------------------------------


def check_archive(path: Path, passphrase: str | None, pg_restore: str, into: Path) -> dict[str, Any]:
    """Re-hash every member, open the snapshot (integrity check) and compare its row counts with the
    manifest; the database member is left in ``into``. Raises :class:`ArchiveError`."""
    with ArchiveReader(path, passphrase) as reader:
        manifest = reader.manifest
        dbm = manifest["database_member"]
        for _member, _target in reader.members(into, wanted=(dbm,)):
            pass
    db = into / PurePosixPath(dbm).name
    if manifest["backend"] == "sqlite":
        sqlite_integrity(db)
        counts = sqlite_counts(db)
    else:
        try:
            counts = pg_dump_counts(pg_restore, db)
        except SnapshotError as exc:
            raise ArchiveError(str(exc)) from None
    expected = manifest.get("row_counts") or {}
    wrong = [
        f"{t}: {counts.get(t)} rows, the manifest says {n}"
        for t, n in sorted(expected.items())
        if counts.get(t, 0 if manifest["backend"] == "postgresql" else None) != n
    ]
    if wrong:
        raise ArchiveError(f"row counts differ from the manifest ({'; '.join(wrong[:5])})")
    return manifest


async def verify_path(store: BackupStore, path: Path) -> dict[str, Any]:
    def run() -> tuple[bool, str | None]:
        with tempfile.TemporaryDirectory(dir=store.directory, prefix=".verify-") as tmp:
            try:
                check_archive(path, store.passphrase, store.settings.pg_restore, Path(tmp))
            except ArchiveError as exc:
                return False, str(exc)
            except OSError as exc:
                return False, f"cannot read the archive: {_reason(exc)}"
        return True, None

    ok, error = await asyncio.to_thread(run)
    st = path.stat()
    aid = fmt.archive_id(path)
    record = {
        "ok": ok,
        "error": error,
        "verified_at": utcnow().isoformat().replace("+00:00", "Z"),
        "size": st.st_size,
        "mtime_ns": st.st_mtime_ns,
    }
    side = store.directory / f"{aid}.verified.json"
    tmp_side = store.directory / f".{aid}.verified.json.partial"
    tmp_side.write_text(json.dumps(record), encoding="utf-8")
    os.replace(tmp_side, side)
    return record


async def verify_backup(ctx: PluginContext, backup_id: str, origin: Origin | None) -> dict[str, Any]:
    store = ctx.resource(STORE)
    if backup_id in store.progress:
        raise Conflict(f"Backup {backup_id} is not complete")
    path = store.path_of(backup_id)
    record = await verify_path(store, path)
    async with ctx.db.write() as s:
        await record_audit(
            s, entity="backup", entity_id=backup_id, action="verify", origin=origin,
            change={"ok": record["ok"], "error": record["error"]},
        )  # fmt: skip
    return {"id": backup_id, "ok": record["ok"], "error": record["error"], "verified_at": record["verified_at"]}


# -- retention --------------------------------------------------------------------------------------


async def prune(ctx: PluginContext, *, dry_run: bool) -> dict[str, Any]:
    """Apply grandfather-father-son retention to the directory; archives whose manifest cannot be
    read are never touched (they may be someone's only copy)."""
    store = ctx.resource(STORE)
    s = store.settings
    rows = [r for r in await asyncio.to_thread(store.listing) if r["status"] == "complete" and r["file"]]
    keep, delete = plan(
        [Dated(r["id"], r["created_at"], r["verified"]) for r in rows],
        daily=s.keep_daily,
        weekly=s.keep_weekly,
        monthly=s.keep_monthly,
    )
    if not dry_run:
        paths = store.archives()
        for backup_id in delete:
            if backup_id in paths:
                _remove(store, backup_id, paths[backup_id])
        if delete:
            async with ctx.db.write() as session:
                await record_audit(
                    session, entity="backup", action="prune", actor="backups", change={"deleted": delete}
                )
    return {"kept": keep, "deleted": delete, "dry_run": dry_run}
