"""``chronos backup`` (now, list, verify, prune) and ``chronos restore ARCHIVE``."""

from __future__ import annotations

import asyncio
import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import typer

from chronos.plugin import ChronosError, PluginContext

from chronos_backups import service
from chronos_backups.restore import RestoreError, restore


def _fail(message: str, code: int = 1) -> None:
    typer.echo(f"error: {message}", err=True)
    raise typer.Exit(code)


async def _closing(ctx: PluginContext, coro: Any) -> Any:
    try:
        return await coro
    finally:
        if ctx.has_db:
            await ctx.db.dispose()


def backup_app(ctx: PluginContext) -> typer.Typer:
    app = typer.Typer(help="Back up now (`chronos backup`), list, verify and prune backups.")

    @app.callback(invoke_without_command=True)
    def backup(
        typer_ctx: typer.Context,
        verify: bool = typer.Option(False, "--verify", help="Verify the new archive (also when the setting is off)."),
    ) -> None:
        """Take a backup now, with a progress bar."""
        if typer_ctx.invoked_subcommand is not None:
            return
        store = ctx.resource(service.STORE)
        if verify:
            store.settings = store.settings.model_copy(update={"verify_after_backup": True})
        backup_id = service.new_backup_id()

        async def run() -> dict[str, Any]:
            task = asyncio.create_task(service.create_backup(ctx, backup_id))
            with typer.progressbar(length=1000, label="snapshot", file=sys.stderr) as bar:
                shown = 0
                while not task.done():
                    await asyncio.wait({task}, timeout=0.2)
                    p = store.progress.get(backup_id)
                    if p is None:
                        continue
                    bar.label = f"{p.phase:9}"
                    done = int(1000 * p.bytes_done / p.bytes_total) if p.bytes_total else 0
                    if done > shown:
                        bar.update(done - shown)
                        shown = done
                bar.update(1000 - shown)
            return await task

        try:
            view = asyncio.run(_closing(ctx, run()))
        except ChronosError as exc:
            _fail(exc.detail)
        verified = "verified" if view["verified"] else (view["verify_error"] or "not verified")
        typer.echo(f"backup {view['id']}: {store.directory / view['file']} ({view['size']} bytes, {verified})")
        if view["verify_error"]:
            raise typer.Exit(1)

    @app.command("list")
    def list_cmd(as_json: bool = typer.Option(False, "--json")) -> None:
        """Every archive in the backup directory, newest first."""
        rows = ctx.resource(service.STORE).listing()
        if as_json:
            typer.echo(json.dumps(rows, default=str, indent=2))
            return
        for r in rows:
            mark = "verified" if r["verified"] else r["status"]
            typer.echo(f"{r['id']}  {r['created_at']:%Y-%m-%d %H:%M:%S}Z  {r['size'] or 0:>12}  {mark}")

    @app.command("verify")
    def verify_cmd(backup_id: str = typer.Argument(..., help="The backup's id (see `chronos backup list`).")) -> None:
        """Re-hash, open and count one archive."""
        try:
            result = asyncio.run(_closing(ctx, service.verify_backup(ctx, backup_id, None)))
        except ChronosError as exc:
            _fail(exc.detail)
        if not result["ok"]:
            _fail(f"{backup_id}: {result['error']}")
        typer.echo(f"{backup_id}: ok")

    @app.command("prune")
    def prune_cmd(
        dry_run: bool = typer.Option(False, "--dry-run", help="Only show what would be deleted."),
    ) -> None:
        """Apply the retention settings (keep_daily, keep_weekly, keep_monthly) to the backup directory."""
        result = asyncio.run(_closing(ctx, service.prune(ctx, dry_run=dry_run)))
        for backup_id, reasons in result["kept"].items():
            typer.echo(f"keep    {backup_id}  ({', '.join(reasons)})")
        verb = "would delete" if dry_run else "deleted"
        for backup_id in result["deleted"]:
            typer.echo(f"{verb:12} {backup_id}")
        if not result["deleted"]:
            typer.echo("nothing to delete")

    return app


def restore_command(ctx: PluginContext) -> Callable[..., None]:
    def restore_cmd(
        archive: str = typer.Argument(..., help="An archive file, or the id of one in the backup directory."),
        to: str | None = typer.Option(
            None, "--to", help="Restore into this database URL instead of the configured one (another backend too)."
        ),
        schema: str | None = typer.Option(None, "--schema", help="PostgreSQL target: the schema (default: public)."),
        via: str | None = typer.Option(
            None, "--via", help="A PostgreSQL server to read a PostgreSQL archive on (for --to another backend)."
        ),
        yes: bool = typer.Option(False, "--yes", "-y", help="Do not ask for confirmation."),
    ) -> None:
        """Restore a backup while the service is stopped; the previous database is kept beside it."""
        path = Path(archive)
        if not path.exists():
            found = ctx.resource(service.STORE).archives().get(archive)
            if found is None:
                _fail(f"no archive {archive!r} (neither a file nor a backup id)", 2)
            path = found  # type: ignore[assignment]
        target = to or "the configured database"
        if not yes and not typer.confirm(f"Replace {target} with {path.name}? The current one is kept aside."):
            raise typer.Exit(1)

        def say(message: str) -> None:
            typer.echo(f"restore: {message}", err=True)

        try:
            result = asyncio.run(_closing(ctx, restore(ctx, path, to_url=to, schema=schema, via_url=via, say=say)))
        except RestoreError as exc:
            _fail(f"{exc} (the current database is untouched)")
        for note in result["notes"]:
            typer.echo(f"note: {note}")
        typer.echo(f"restored {result['archive']} (taken {result['created_at']}) into {result['target']}")
        if result.get("previous"):
            typer.echo(f"the previous database is kept as {result['previous']}; delete it once you are satisfied")

    return restore_cmd
