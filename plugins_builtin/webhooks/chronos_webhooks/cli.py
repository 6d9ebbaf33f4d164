"""``chronos outbox list | replay | purge-dead``: inspect and repair the outbox from a shell."""

from __future__ import annotations

import asyncio
import json
import re
from datetime import timedelta
from typing import Any

import typer

from chronos.plugin import ChronosError, PluginContext

from chronos_webhooks import service

DURATION_RE = re.compile(r"^(\d+)([smhdw])$")
UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}


def parse_duration(text: str) -> timedelta:
    """``30d``, ``12h``, ``90m``, ``45s``, ``2w``."""
    m = DURATION_RE.match(text.strip())
    if not m:
        raise typer.BadParameter("give a number and a unit: 30d, 12h, 90m, 45s or 2w")
    return timedelta(seconds=int(m.group(1)) * UNITS[m.group(2)])


async def _closing(ctx: PluginContext, coro: Any) -> Any:
    try:
        return await coro
    finally:
        if ctx.has_db:
            await ctx.db.dispose()


def _run(ctx: PluginContext, coro: Any) -> Any:
    try:
        return asyncio.run(_closing(ctx, coro))
    except ChronosError as exc:
        typer.echo(f"error: {exc.detail}", err=True)
        raise typer.Exit(1) from None


def outbox_app(ctx: PluginContext) -> typer.Typer:
    app = typer.Typer(help="Inspect deliveries, replay dead letters, purge old ones.", no_args_is_help=True)

    @app.command("list")
    def list_cmd(
        status: str = typer.Option("dead", "--status", help="dead, pending, delivered or all."),
        limit: int = typer.Option(50, "--limit", min=1, max=10000),
        as_json: bool = typer.Option(False, "--json", help="One JSON document instead of a table."),
    ) -> None:
        """Deliveries, newest first (dead letters by default)."""
        if status not in ("dead", "pending", "delivered", "all"):
            raise typer.BadParameter("dead, pending, delivered or all", param_hint="--status")
        page = _run(
            ctx, service.list_deliveries(ctx, status=None if status == "all" else status, limit=limit, cursor=None)
        )
        rows = page["items"]
        if as_json:
            typer.echo(json.dumps(rows, default=str, indent=2))
            return
        if not rows:
            typer.echo(f"no {status} deliveries" if status != "all" else "no deliveries")
            return
        for d in rows:
            where = f"endpoint {d['endpoint_id']}" if d["endpoint_id"] is not None else d["target"]
            typer.echo(
                f"{d['id']:>8}  {d['status']:<9} {d['event_type']:<20} {where:<14} attempts={d['attempts']:<3}"
                f" {d['webhook_id']}  {(d['last_error'] or '')[:80]}"
            )

    @app.command("replay")
    def replay_cmd(
        delivery_id: int = typer.Argument(None, help="The dead letter to send again."),
        all_dead: bool = typer.Option(False, "--all-dead", help="Every dead letter (of --endpoint, if given)."),
        endpoint: int = typer.Option(None, "--endpoint", help="With --all-dead: only this endpoint's."),
    ) -> None:
        """Send dead letters again, with the same webhook id and a fresh retry schedule."""
        if (delivery_id is None) == (not all_dead):
            raise typer.BadParameter("give a delivery id or --all-dead")
        if delivery_id is not None:
            d = _run(ctx, service.replay_dead(ctx, delivery_id, None))
            typer.echo(f"delivery {d['id']} ({d['webhook_id']}) is pending again")
        else:
            n = _run(ctx, service.replay_all_dead(ctx, endpoint_id=endpoint))
            typer.echo(f"{n} dead letter(s) pending again")

    @app.command("purge-dead")
    def purge_cmd(
        older_than: str = typer.Option(..., "--older-than", help="Age of the dead letters to delete: 30d, 12h …"),
    ) -> None:
        """Delete dead letters older than the given age (their attempts go with them)."""
        n = _run(ctx, service.purge_dead(ctx, parse_duration(older_than)))
        typer.echo(f"{n} dead letter(s) deleted")

    return app
