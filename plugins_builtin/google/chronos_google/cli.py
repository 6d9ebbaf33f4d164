"""``chronos google …``: connect a Google calendar."""

from __future__ import annotations

from typing import Any

import typer

from chronos_google.auth import AuthError, authorize
from chronos_google.settings import SCOPE_READ, SCOPE_WRITE, GoogleSettings


def make_app(load: Any) -> typer.Typer:
    """The ``google`` command group; ``load()`` returns the validated ``GoogleSettings``."""
    app = typer.Typer(help="Connect Google calendars (OAuth for installed apps).", no_args_is_help=True)

    @app.callback()
    def _group() -> None:
        """Connect Google calendars."""

    @app.command("auth")
    def auth(
        calendar: str = typer.Option(..., "--calendar", help="The calendar's id in google.calendars."),
        console: bool = typer.Option(False, "--console", help="No browser here: paste back the address it ends on."),
        no_browser: bool = typer.Option(False, "--no-browser", help="Print the URL instead of opening a browser."),
        port: int = typer.Option(0, "--port", help="Loopback port for Google's redirect (0: any free port)."),
    ) -> None:
        """Authorise access to a calendar and write its refresh token file (mode 0600)."""
        settings: GoogleSettings = load()
        cfg = next((c for c in settings.calendars if c.id == calendar), None)
        if cfg is None:
            known = ", ".join(c.id for c in settings.calendars) or "none configured"
            typer.echo(f"error: google has no calendar {calendar!r} (known: {known})", err=True)
            raise typer.Exit(2)
        creds = settings.credentials_of(cfg)
        if creds.service_account_file:
            typer.echo(f"calendar {calendar!r} uses a service account: nothing to authorise", err=True)
            raise typer.Exit(0)
        if not creds.client_secrets_file or not creds.token_file:
            typer.echo("error: set client_secrets_file and token_file in google.credentials first", err=True)
            raise typer.Exit(2)
        scopes = [SCOPE_READ if cfg.read_only else SCOPE_WRITE]

        def show(url: str) -> None:
            typer.echo("Open this address in a browser and allow access:" if (console or no_browser) else "")
            typer.echo(url)
            if console:
                typer.echo("Then paste here the address the browser ends on (it will not load), or its code:")

        try:
            path = authorize(
                creds.client_secrets_file,
                creds.token_file,
                scopes,
                console=console,
                open_browser=not (no_browser or console),
                port=port,
                on_url=show,
            )
        except AuthError as exc:
            typer.echo(f"error: {exc}", err=True)
            raise typer.Exit(1) from None
        typer.echo(f"wrote {path} (mode 0600); calendar {calendar!r} can sync now")

    return app
