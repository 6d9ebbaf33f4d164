"""The ``chronos`` command line."""

from __future__ import annotations

import asyncio
import json
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

import typer

from chronos.settings import ConfigError, Settings, load_settings

if TYPE_CHECKING:  # pragma: no cover
    from chronos.runtime import Runtime

app = typer.Typer(
    help="Chronos Engine: calendars, commands, templates and mail in sync.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
keys_app = typer.Typer(help="Create, list and revoke API keys.", no_args_is_help=True)
audit_app = typer.Typer(help="Inspect the audit log.", no_args_is_help=True)
config_app = typer.Typer(help="Check the configuration; write the documented example.", no_args_is_help=True)
schemas_app = typer.Typer(help="JSON Schemas generated from the models.", no_args_is_help=True)
migrations_app = typer.Typer(help="Inspect and author migrations (plugin authors).", no_args_is_help=True)
app.add_typer(keys_app, name="keys")
app.add_typer(audit_app, name="audit")
app.add_typer(config_app, name="config")
app.add_typer(schemas_app, name="schemas")
app.add_typer(migrations_app, name="migrations")

ConfigOpt = typer.Option(None, "--config", "-c", help="Config file (default: $CHRONOS_CONFIG or config/chronos.yaml).")


class _State:
    config: str | None = None


STATE = _State()


def fail(message: str, code: int = 1) -> None:
    typer.echo(f"error: {message}", err=True)
    raise typer.Exit(code)


def _settings(config: str | None = None, **overrides: Any) -> Settings:
    from chronos.logs import configure_logging

    try:
        settings = load_settings(config or STATE.config, **overrides)
    except ConfigError as exc:
        for line in exc.problems:
            typer.echo(f"config error: {line}", err=True)
        raise typer.Exit(2) from None
    # Logs go to stderr from here on, so stdout carries only the command's output (--json).
    configure_logging(settings.kernel.logging.level, settings.kernel.logging.format)
    return settings


def _runtime(settings: Settings) -> Runtime:
    """The kernel with its plugins loaded (not started); exits 2 on a config or plugin error."""
    from chronos.host import PluginError
    from chronos.runtime import Runtime

    try:
        return Runtime(settings)
    except ConfigError as exc:
        for line in exc.problems:
            typer.echo(f"config error: {line}", err=True)
        raise typer.Exit(2) from None
    except PluginError as exc:
        fail(f"plugin error: {exc}", 2)
        raise  # unreachable: fail() exits


def _run(coro: Any) -> Any:
    return asyncio.run(coro)


async def _migrated(settings: Settings) -> Runtime:
    """A loaded runtime whose database is at head (for one-shot commands)."""
    runtime = _runtime(settings)
    await runtime.migrate()
    return runtime


@app.callback()
def _main(config: str | None = ConfigOpt) -> None:
    STATE.config = config


# -- serving -------------------------------------------------------------------------


@app.command()
def serve(
    config: str | None = ConfigOpt,
    host: str | None = typer.Option(None, help="Bind address (default: server.host, 127.0.0.1)."),
    port: int | None = typer.Option(None, help="Port (default: server.port, 8000)."),
    workers: int | None = typer.Option(
        None, "--workers", min=1, max=64, help="Worker processes sharing the port (default: server.workers, 1)."
    ),
    no_jobs: bool = typer.Option(False, "--no-jobs", help="Serve the API only; run jobs in `chronos worker`."),
    no_migrate: bool = typer.Option(False, "--no-migrate", help="Do not apply migrations on start."),
) -> None:
    """Run the HTTP API (and the job runner unless --no-jobs)."""
    import uvicorn

    from chronos.app import create_app
    from chronos.host import PluginError

    overrides: dict[str, Any] = {}
    if no_migrate:
        overrides["database"] = {"migrate_on_start": False}
    if host:  # the bound address decides whether server.public_metrics: loopback serves /metrics without a key
        overrides["server"] = {"host": host}
    settings = _settings(config, **overrides)
    try:
        application = create_app(settings, run_jobs=False if no_jobs else None, long_running=True)
    except PluginError as exc:
        fail(f"plugin error: {exc}", 2)
    except ConfigError as exc:
        for line in exc.problems:
            typer.echo(f"config error: {line}", err=True)
        raise typer.Exit(2) from None
    srv = settings.kernel.server
    bind_host, bind_port, processes = host or srv.host, port or srv.port, workers or srv.workers
    target: Any = application
    if processes > 1:
        target = _worker_processes_target(settings, config, host, no_jobs)
    shown = f"[{bind_host}]" if ":" in bind_host else bind_host
    typer.echo(
        f"chronos: serving on http://{shown}:{bind_port} (API docs at /docs, health at /health)"
        + (f" with {processes} worker processes" if processes > 1 else "")
        + "; Ctrl-C to stop",
        err=True,
    )
    uvicorn.run(
        target,
        factory=processes > 1,
        workers=processes,
        host=bind_host,
        port=bind_port,
        log_config=None,
        access_log=False,
        proxy_headers=False,
        h11_max_incomplete_event_size=srv.max_header_bytes * 2,
        timeout_graceful_shutdown=srv.shutdown_timeout_seconds,
    )


def _worker_processes_target(settings: Settings, config: str | None, host: str | None, no_jobs: bool) -> str:
    """Prepare ``serve --workers N``: each worker process builds its own app from the same configuration,
    handed over in the environment it inherits. Migrations run here, once, not in N racing workers."""
    if settings.kernel.database.migrate_on_start:
        _run(_runtime(settings).migrate())
    path = config or STATE.config
    if path:
        os.environ["CHRONOS_CONFIG"] = str(Path(path).resolve())
    os.environ["CHRONOS__DATABASE__MIGRATE_ON_START"] = "false"
    if host:
        os.environ["CHRONOS__SERVER__HOST"] = host
    if no_jobs:
        os.environ["CHRONOS__SCHEDULER__ENABLED"] = "false"
    return "chronos.cli:serving_app"


def serving_app() -> Any:
    """The app of one ``serve --workers N`` process (uvicorn's factory), configured from the environment."""
    from chronos.app import create_app

    return create_app(long_running=True)


@app.command()
def worker(config: str | None = ConfigOpt) -> None:
    """Run the job runner without HTTP (for a separate worker process)."""
    import signal

    from chronos.app import freeze_startup_objects

    settings = _settings(config)

    async def main() -> None:
        runtime = _runtime(settings)
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        async with runtime.running(jobs="schedules"):
            freeze_startup_objects()
            runner = runtime.runner
            typer.echo(f"worker {runner.runner_id} running {len(runner.jobs)} job(s); Ctrl-C to stop", err=True)
            await stop.wait()

    _run(main())


@app.command("sync")
def sync_cmd(
    source: str | None = typer.Option(None, "--source", help="Only this source (default: every source)."),
    calendar: str | None = typer.Option(None, "--calendar", help="Only this calendar id."),
    full: bool = typer.Option(False, "--full", help="Ignore saved cursors and list everything again."),
    as_json: bool = typer.Option(False, "--json"),
    progress: bool | None = typer.Option(
        None, "--progress/--no-progress", help="A progress bar on stderr (default: when stderr is a terminal)."
    ),
    config: str | None = ConfigOpt,
) -> None:
    """Sync calendars now, in the foreground, and print each run's counts (exit 1 if one failed)."""
    show = sys.stderr.isatty() if progress is None else progress
    results = _run(_sync_now(_settings(config), source, calendar, full, _SyncProgress() if show else None))
    if as_json:
        typer.echo(json.dumps(results, default=str))
    else:
        _print_runs(results)
    if any(r["status"] in ("error", "busy") for r in results):
        raise typer.Exit(1)


class _SyncProgress:
    """One line on stderr, redrawn while the runs go: a bar over the calendars and the current run's counts."""

    WIDTH = 24

    def __init__(self) -> None:
        self.total = 0
        self.tty = sys.stderr.isatty()

    def show(self, done: int, name: str, row: Any | None) -> None:
        filled = self.WIDTH * done // max(self.total, 1)
        bar = "#" * filled + "-" * (self.WIDTH - filled)
        counts = ""
        if row is not None:
            items = row.added + row.updated + row.unchanged + row.deleted + row.failed
            counts = f" {items:,} items in {row.batches} batch(es) (+{row.added} ~{row.updated} -{row.deleted})"
        line = f"[{bar}] {done}/{self.total} {name}{counts}"
        # On a terminal the line is redrawn in place; elsewhere each step is its own line.
        sys.stderr.write(("\r\x1b[2K" + line) if self.tty else line + "\n")
        sys.stderr.flush()

    def close(self) -> None:
        if self.tty:
            sys.stderr.write("\n")
            sys.stderr.flush()


#: The columns of a sync run that `chronos sync` prints.
RUN_FIELDS = (
    "id", "source", "calendar_id", "status", "not_modified", "duration_ms",
    "added", "updated", "unchanged", "deleted", "failed", "error",
)  # fmt: skip


async def _sync_now(
    settings: Settings, source: str | None, calendar: str | None, full: bool, progress: _SyncProgress | None = None
) -> list[dict[str, Any]]:
    """Run the selected calendars' syncs one after another; one result per calendar."""
    from chronos.db.sync_models import SyncRun
    from chronos.pipeline import SyncBusy, UnknownCalendar

    runtime = _runtime(settings)
    results: list[dict[str, Any]] = []
    # One-shot: migrations always, nothing in the background.
    async with runtime.running(jobs="off", migrate=True):
        ctx, pipeline = runtime.ctx, runtime.pipeline
        try:
            refs = pipeline.select(source, calendar)
        except UnknownCalendar as exc:
            fail(str(exc), 2)
        if progress is not None:
            progress.total = len(refs)
        for done, ref in enumerate(refs):
            src, cal = ref.key
            try:
                run_id = await pipeline.start(src, cal, trigger="cli", full=full)
            except SyncBusy as exc:
                results.append({"source": src, "calendar_id": cal, "status": "busy", "error": str(exc)})
                continue
            # The run goes on in the background; its row's counters grow batch by batch.
            finished = asyncio.ensure_future(pipeline.wait())
            while True:
                await asyncio.wait({finished}, timeout=0.25)
                if progress is not None:
                    async with ctx.db.read() as s:
                        progress.show(done, f"{src}/{cal}", await s.get(SyncRun, run_id))
                if finished.done():
                    break
            async with ctx.db.read() as s:
                row = await s.get(SyncRun, run_id)
            results.append({k: getattr(row, k) for k in RUN_FIELDS})
        if progress is not None:
            progress.show(len(refs), "done", None)
            progress.close()
    return results


def _print_runs(results: list[dict[str, Any]]) -> None:
    if not results:
        typer.echo("sync: no calendars configured")
    for r in results:
        counts = " ".join(f"{k}={r[k]}" for k in ("added", "updated", "unchanged", "deleted", "failed") if k in r)
        extra = " (not modified)" if r.get("not_modified") else ""
        took = f" in {r['duration_ms']} ms" if r.get("duration_ms") is not None else ""
        error = f" — {r['error']}" if r.get("error") else ""
        typer.echo(f"{r['source']}/{r['calendar_id']}: {r['status']}{extra} {counts}{took}{error}")


@app.command("sources")
def sources_cmd(as_json: bool = typer.Option(False, "--json"), config: str | None = ConfigOpt) -> None:
    """List the enabled sources and their calendars: last run, its result, cursor age and next run."""
    sources, rows = _run(_sources(_settings(config)))
    if as_json:
        typer.echo(json.dumps({"sources": sources, "calendars": rows}, default=str))
        return
    names = ", ".join(f"{x['name']} ({x['calendars']} calendar(s), plugin {x['plugin']})" for x in sources)
    typer.echo(f"sources: {names or 'none enabled'}")
    if not rows:
        typer.echo("no calendars configured (list calendars in the source's settings section)")
        return
    header = ("CALENDAR", "MODE", "EVERY", "LAST RUN", "RESULT", "CURSOR AGE", "NEXT RUN")
    table = [header] + [
        (
            f"{r['source']}/{r['calendar_id']}",
            "read-only" if r["read_only"] else "write-back",
            _span(r["interval_seconds"]) if r["interval_seconds"] else "on demand",
            f"{_span(r['last_run_age_seconds'])} ago" if r["last_run_age_seconds"] is not None else "never",
            _result(r),
            _span(r["cursor_age_seconds"]) if r["cursor_age_seconds"] is not None else "-",
            r["next_run"],
        )
        for r in rows
    ]
    widths = [max(len(str(line[i])) for line in table) for i in range(len(header))]
    for line in table:
        typer.echo("  ".join(str(v).ljust(w) for v, w in zip(line, widths, strict=True)).rstrip())
    for r in rows:
        if r["last_error"]:
            typer.echo(f"{r['source']}/{r['calendar_id']}: {r['last_error']}")


def _span(seconds: float) -> str:
    """A duration as a person reads it: 45s, 12m, 3h 5m, 2d 4h."""
    s = int(max(seconds, 0))
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m"
    if s < 86400:
        return f"{s // 3600}h {s % 3600 // 60}m"
    return f"{s // 86400}d {s % 86400 // 3600}h"


def _result(r: dict[str, Any]) -> str:
    status = r["last_status"] or "-"
    if r["last_run"] and status in ("ok", "partial"):
        run = r["last_run"]
        if run.get("not_modified"):
            return f"{status} (not modified)"
        return f"{status} +{run['added']} ~{run['updated']} -{run['deleted']}" + (
            f" !{run['failed']}" if run["failed"] else ""
        )
    return status


async def _sources(settings: Settings) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """The enabled sources, and every configured calendar with its sync state, for `chronos sources`."""
    from sqlalchemy import select

    from chronos.db.base import utcnow
    from chronos.db.sync_models import SyncRun, SyncState

    runtime = _runtime(settings)
    rows: list[dict[str, Any]] = []
    async with runtime.running(jobs="off", migrate=True):
        pipeline, now = runtime.pipeline, utcnow()
        sources = [
            {"name": name, "plugin": plugin, "calendars": sum(1 for key in pipeline.calendars if key[0] == name)}
            for name, (plugin, _src) in sorted(pipeline.sources.items())
        ]
        async with runtime.ctx.db.read() as s:
            states = {(r.source, r.calendar_id): r for r in (await s.execute(select(SyncState))).scalars()}
            for key, ref in sorted(pipeline.calendars.items()):
                recent = (
                    select(SyncRun)
                    .where(SyncRun.source == key[0], SyncRun.calendar_id == key[1])
                    .order_by(SyncRun.id.desc())
                    .limit(500)
                )
                runs = list((await s.execute(recent)).scalars())
                rows.append(_calendar_row(key, ref, states.get(key), runs, now))
    return sources, rows


def _calendar_row(key: tuple[str, str], ref: Any, state: Any, runs: list[Any], now: Any) -> dict[str, Any]:
    """One calendar of `chronos sources` from its state and its recent runs (newest first)."""
    last = runs[0] if runs else None
    held_since = _cursor_held_since(runs, state.cursor if state is not None else None)
    interval = ref.calendar.interval_seconds or 0
    failed = state is not None and last is not None and last.status in ("error", "partial")
    return {
        "source": key[0],
        "calendar_id": key[1],
        "name": str(ref.calendar.options.get("name") or key[1]),
        "read_only": ref.calendar.read_only or not ref.source.can_delete(ref.calendar),
        "interval_seconds": interval,
        "last_status": last.status if last is not None else None,
        "last_run": None if last is None else {k: getattr(last, k) for k in RUN_COUNTS},
        "last_run_at": last.started_at if last is not None else None,
        "last_run_age_seconds": (now - last.started_at).total_seconds() if last is not None else None,
        "last_success_at": state.last_success_at if state is not None else None,
        "last_error": state.last_error if failed else None,
        "cursor_age_seconds": (now - held_since).total_seconds() if held_since is not None else None,
        "next_run": _next_run(interval, last, now),
    }


#: The fields of a calendar's last run that `chronos sources` shows.
RUN_COUNTS = ("id", "status", "not_modified", "added", "updated", "deleted", "failed")


def _cursor_held_since(runs: list[Any], cursor: Any) -> Any:
    """When the calendar got its current cursor: the oldest run of the newest streak ending with it."""
    held_since = None
    if cursor is not None:
        for run in runs:
            if run.cursor != cursor:
                break
            held_since = run.finished_at or run.started_at
    return held_since


def _next_run(interval: float, last: Any, now: Any) -> str:
    """When the schedule syncs the calendar next (where a server or worker runs the jobs)."""
    if not interval:
        return "on demand"
    if last is None:
        return "when the service starts"
    due = (last.started_at - now).total_seconds() + interval
    return f"in {_span(due)}" if due > 0 else "due now"


@app.command("migrate")
def migrate_cmd(config: str | None = ConfigOpt) -> None:
    """Apply pending migrations of the kernel and every enabled plugin."""
    settings = _settings(config)
    applied = _run(_runtime(settings).migrate())
    if not applied:
        typer.echo("migrate: up to date")
    for owner, heads in applied.items():
        typer.echo(f"migrate: {owner} -> {', '.join(heads)}")


@migrations_app.command("current")
def migrations_current(config: str | None = ConfigOpt, as_json: bool = typer.Option(False, "--json")) -> None:
    """Show each owner's current revision and head."""
    from chronos.db.migrate import current

    settings = _settings(config)
    dbs = settings.kernel.database
    status = _run(current(dbs.url, _runtime(settings).host.migrations(), schema=dbs.schema_name))
    if as_json:
        typer.echo(json.dumps(status, indent=2))
        return
    for owner, st in status.items():
        mark = "ok" if st["up_to_date"] else "PENDING"
        applied, heads = ",".join(st["current"]) or "-", ",".join(st["heads"]) or "-"
        typer.echo(f"{owner:20} current={applied:24} head={heads:24} {mark}")


@migrations_app.command("revision")
def migrations_revision(
    owner: str = typer.Argument(..., help="'kernel' or a plugin name."),
    message: str = typer.Option(..., "-m", "--message"),
    rev_id: str | None = typer.Option(None, "--rev-id", help="Readable id, e.g. hello0002 (max 32 chars)."),
    autogenerate: bool = typer.Option(True, "--autogenerate/--empty"),
    config: str | None = ConfigOpt,
) -> None:
    """Write a new revision into OWNER's versions directory.

    Autogenerate compares the models with a database migrated to head: the
    configured one, or a temporary SQLite database when none is configured (so
    running it in a plugin's folder never leaves a database file there).
    """
    import tempfile

    from alembic import command

    from chronos.db.engine import make_engine
    from chronos.db.migrate import migrate, owners_for

    settings = _settings(config)
    migs = _runtime(settings).host.migrations()
    owners = {o.name: o for o in owners_for(migs, require_revisions=False)}
    if owner not in owners:
        fail(f"no migrations owner {owner!r}; choose from {', '.join(owners)}")
    dbs = settings.kernel.database
    scratch = None if "url" in dbs.model_fields_set else tempfile.TemporaryDirectory(prefix="chronos-revision-")
    url = dbs.url if scratch is None else f"sqlite+aiosqlite:///{Path(scratch.name) / 'chronos.db'}"
    if scratch is not None:
        typer.echo("no database configured: comparing the models with a temporary SQLite database", err=True)

    async def main() -> None:
        # Bring every other owner to head first; the new owner may have no revision yet.
        await migrate(url, [m for m in migs if m.name != owner or _has_revisions(m)], schema=dbs.schema_name)
        engine = make_engine(url, role="migrate", schema=dbs.schema_name)
        try:
            async with engine.begin() as conn:
                await conn.run_sync(
                    lambda c: command.revision(
                        owners[owner].config(c),
                        message=message,
                        autogenerate=autogenerate,
                        rev_id=rev_id,
                        head="heads",
                        version_path=owners[owner].versions_dir,
                    )
                )
        finally:
            await engine.dispose()

    try:
        _run(main())
    finally:
        if scratch is not None:
            scratch.cleanup()


def _has_revisions(m: Any) -> bool:
    return any(p.name != "__init__.py" for p in Path(m.versions_dir).glob("*.py"))


@migrations_app.command("check")
def migrations_check(config: str | None = ConfigOpt) -> None:
    """Fail when models and migrations differ (database must be migrated first)."""
    from chronos.db.migrate import diff_models

    settings = _settings(config)
    dbs = settings.kernel.database
    _run(_runtime(settings).migrate())
    diffs = _run(diff_models(dbs.url, schema=dbs.schema_name))
    for d in diffs:
        typer.echo(f"DIFF: {d}", err=True)
    if diffs:
        fail(f"models and migrations differ ({len(diffs)} difference(s))")
    typer.echo("migrations check: ok")


# -- plugins ---------------------------------------------------------------------------


@app.command()
def plugins(config: str | None = ConfigOpt, as_json: bool = typer.Option(False, "--json")) -> None:
    """List installed plugins: status, distribution, hooks, records, routes."""
    from chronos.app import create_app

    settings = _settings(config)
    try:
        application = create_app(settings)
    except Exception as exc:  # noqa: BLE001
        fail(f"{type(exc).__name__}: {exc}", 2)
    rows = application.state.runtime.host.describe()
    if as_json:
        typer.echo(json.dumps(rows, indent=2))
        return
    if not rows:
        typer.echo("no plugins installed")
    for r in rows:
        dist = f"{r['distribution']} {r['version']}" if r["distribution"] else "(in-process)"
        typer.echo(f"{r['name']:16} {r['status']:9} {dist}")
        if r["error"]:
            typer.echo(f"    error: {r['error']}")
        for kind, names in r["records"].items():
            if names:
                typer.echo(f"    {kind}: {', '.join(names)}")
        if r["routes"]:
            typer.echo(f"    routes: {len(r['routes'])}")


# -- keys ----------------------------------------------------------------------------


@keys_app.command("create")
def keys_create(
    name: str = typer.Option(..., "--name", help="What the key is for."),
    scope: list[str] = typer.Option(..., "--scope", help="Scope to grant (repeat for several)."),
    system: list[str] = typer.Option([], "--system", help="Command system the key is bound to (repeatable)."),
    expires: str | None = typer.Option(None, "--expires", help="Lifetime such as 30d, 12h, 2w."),
    as_json: bool = typer.Option(False, "--json"),
    config: str | None = ConfigOpt,
) -> None:
    """Create a key; the secret is printed once."""
    import re

    from chronos.audit import record_audit
    from chronos.exceptions import ChronosError
    from chronos.keys import SYSTEM_RE, create_key, key_view, parse_duration

    try:
        lifetime = parse_duration(expires) if expires else None
    except ValueError as exc:
        fail(str(exc), 2)
    for s in system:
        if not re.match(SYSTEM_RE, s):
            fail(f"invalid system id {s!r}: letters, digits, '.', '_', '-' (max 64)", 2)
    settings = _settings(config)

    async def main() -> tuple[dict[str, Any], str]:
        ctx = (await _migrated(settings)).ctx
        try:
            async with ctx.db.write() as s:
                row, secret = await create_key(
                    s,
                    name=name,
                    scopes=list(scope),
                    known_scopes=ctx.scopes,
                    systems=list(system),
                    expires_in=lifetime,
                    max_lifetime_days=settings.kernel.auth.max_key_lifetime_days,
                    created_by="cli",
                )
                view = key_view(row)
                await record_audit(
                    s,
                    entity="api_key",
                    entity_id=row.id,
                    action="create",
                    actor="cli",
                    change={"name": name, "scopes": view["scopes"], "systems": view["systems"]},
                )
            return view, secret
        finally:
            await ctx.db.dispose()

    try:
        view, secret = _run(main())
    except ChronosError as exc:
        fail(exc.detail, 2)
    if as_json:
        typer.echo(json.dumps({**view, "secret": secret}, default=str))
    else:
        typer.echo(f"created key {view['id']} ({view['name']}) scopes={','.join(view['scopes'])}")
        typer.echo(f"secret (shown once): {secret}")


@keys_app.command("list")
def keys_list(as_json: bool = typer.Option(False, "--json"), config: str | None = ConfigOpt) -> None:
    """List keys (never their secrets)."""
    from chronos.keys import key_view, list_keys

    settings = _settings(config)

    async def main() -> list[dict[str, Any]]:
        ctx = (await _migrated(settings)).ctx
        try:
            async with ctx.db.read() as s:
                return [key_view(r) for r in await list_keys(s)]
        finally:
            await ctx.db.dispose()

    rows = _run(main())
    if as_json:
        typer.echo(json.dumps(rows, default=str))
        return
    for r in rows:
        exp = r["expires_at"].isoformat() if r["expires_at"] else "never"
        typer.echo(
            f"{r['id']}  {r['status']:8} {r['prefix']}…  {r['name']}  scopes={','.join(r['scopes'])} expires={exp}"
        )


@keys_app.command("revoke")
def keys_revoke(key_id: str = typer.Argument(...), config: str | None = ConfigOpt) -> None:
    """Revoke a key by id; it stops working at once (not the bootstrap key, which lives in the environment)."""
    from chronos.audit import record_audit
    from chronos.exceptions import ChronosError
    from chronos.keys import revoke_key

    settings = _settings(config)

    async def main() -> bool:
        ctx = (await _migrated(settings)).ctx
        try:
            async with ctx.db.write() as s:
                row = await revoke_key(s, key_id)
                if row is None:
                    return False
                await record_audit(s, entity="api_key", entity_id=key_id, action="revoke", actor="cli")
                return True
        finally:
            await ctx.db.dispose()

    try:
        revoked = _run(main())
    except ChronosError as exc:
        fail(exc.detail)
    if not revoked:
        fail(f"no key with id {key_id!r}")
    typer.echo(f"revoked {key_id}")


# -- audit, config, schemas ------------------------------------------------------------


@audit_app.command("verify")
def audit_verify(config: str | None = ConfigOpt) -> None:
    """Check the audit log's HMAC chain and its signed head; exit 1 at the first broken row."""
    from chronos.audit import verify_chain
    from chronos.audit_key import ENV_VAR, key_file_path

    settings = _settings(config)
    key_file = key_file_path(settings)
    if not os.environ.get(ENV_VAR) and not key_file.exists():
        # Starting would create a fresh key, and every signed row would then read as forged.
        fail(
            f"no audit key: {ENV_VAR} is not set and {key_file} does not exist; restore the key file from the"
            " backup taken with the database (or set audit.key_file to where it is)"
        )

    async def main() -> tuple[int, int | None, str | None]:
        ctx = (await _migrated(settings)).ctx
        try:
            async with ctx.db.read() as s:
                return await verify_chain(s)
        finally:
            await ctx.db.dispose()

    checked, broken, reason = _run(main())
    if broken == 0:
        fail(f"audit log not verifiable: {reason}")
    if broken is not None:
        fail(f"audit chain broken at row {broken}: {reason} ({checked} rows verified before it)")
    typer.echo(f"audit verify: ok ({checked} rows)")


@config_app.command("check")
def config_check(config: str | None = ConfigOpt) -> None:
    """Validate the configuration and every enabled plugin's section; report every problem at once."""
    from chronos.host import PluginError
    from chronos.logs import configure_logging
    from chronos.runtime import Runtime

    problems: list[str] = []
    try:
        # A kernel problem is collected and its section checked no further; the plugins' sections still are.
        settings = load_settings(config or STATE.config, collect=problems)
    except ConfigError as exc:
        problems = exc.problems
    else:
        configure_logging(settings.kernel.logging.level, settings.kernel.logging.format)
        try:
            host = Runtime(settings).host
        except ConfigError as exc:
            problems += exc.problems
        except PluginError as exc:
            problems.append(f"plugin error: {exc}")
    if problems:
        for line in problems:
            typer.echo(f"config error: {line}", err=True)
        raise typer.Exit(2)
    typer.echo(f"config ok: {settings.raw.path or 'defaults'}; plugins enabled: {', '.join(host.enabled()) or 'none'}")


PluginsOpt = typer.Option(None, "--plugin", help="Only this plugin (repeatable; default: every installed plugin).")


@config_app.command("example")
def config_example_cmd(
    out: str = typer.Option("config/chronos.example.yaml", "--out", help="File to write, or - for stdout."),
    plugin: list[str] | None = PluginsOpt,
) -> None:
    """Write the example configuration: every key of the kernel and the installed plugins, with defaults."""
    from chronos.schemas import config_example

    text = config_example(plugins=plugin or None)
    if out == "-":
        typer.echo(text, nl=False)
        return
    path = Path(out)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    typer.echo(f"wrote {path}")


@schemas_app.command("export")
def schemas_export(
    out: Path = typer.Option(Path("schemas"), "--out", help="Directory to write into."),
    plugin: list[str] | None = PluginsOpt,
) -> None:
    """Write schemas/*.schema.json from the models (a test checks they are current)."""
    from chronos.schemas import generate_all

    out.mkdir(parents=True, exist_ok=True)
    for name, schema in generate_all(plugins=plugin or None).items():
        path = out / name
        path.write_text(json.dumps(schema, indent=2, sort_keys=True) + "\n", encoding="utf-8")
        typer.echo(f"wrote {path}")


def _add_plugin_commands() -> None:
    """Mount plugin CLI groups; a broken config leaves only the kernel's commands."""
    config = None
    argv = sys.argv[1:]
    for i, arg in enumerate(argv):
        if arg in ("--config", "-c") and i + 1 < len(argv):
            config = argv[i + 1]
        elif arg.startswith("--config="):
            config = arg.split("=", 1)[1]
    try:
        from chronos.logs import configure_logging
        from chronos.runtime import Runtime

        # This probe only finds plugin commands; the command itself reports problems.
        configure_logging("critical", "console")
        host = Runtime(load_settings(config)).host
    except Exception:  # noqa: BLE001 - the real command will report the problem
        return
    for _plugin, rec in host.cli_commands():
        if rec.command is not None:
            app.command(rec.name, help=rec.help or None)(rec.command)
        elif rec.app is not None:
            app.add_typer(rec.app, name=rec.name, help=rec.help or None)


def _kernel_command_requested(argv: list[str]) -> bool:
    """True when argv names one of the kernel's own commands (no plugin lookup needed)."""
    kernel = {c.name or getattr(c.callback, "__name__", "") for c in app.registered_commands}
    kernel |= {g.name for g in app.registered_groups}
    words = [
        a for i, a in enumerate(argv) if not a.startswith("-") and (i == 0 or argv[i - 1] not in ("--config", "-c"))
    ]
    return bool(words) and words[0] in kernel


def main() -> None:
    # Loading every plugin just to list their commands would double the start-up
    # work of `serve`, `worker` and the other kernel commands.
    if not _kernel_command_requested(sys.argv[1:]):
        _add_plugin_commands()
    try:
        app()
    except (KeyboardInterrupt, SystemExit):
        raise
    except Exception as exc:  # one actionable line, not a traceback
        if os.environ.get("CHRONOS_DEBUG"):
            raise
        typer.echo(f"error: {type(exc).__name__}: {exc} (set CHRONOS_DEBUG=1 for a traceback)", err=True)
        raise SystemExit(1) from None


if __name__ == "__main__":  # pragma: no cover
    main()
