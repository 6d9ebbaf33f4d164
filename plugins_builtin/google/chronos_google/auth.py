"""The installed-app OAuth flow behind ``chronos google auth``.

The browser flow (loopback) listens on 127.0.0.1 for Google's redirect; the
console flow prints the URL and reads back the address the browser was sent
to (or just its ``code``), for machines without a browser. The refresh token
is written to a file created with mode 0600 and replaced atomically; neither
it nor the client secret is ever printed.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

from google_auth_oauthlib.flow import InstalledAppFlow

#: The redirect address of the console flow: nothing listens there; the user copies it back.
CONSOLE_REDIRECT = "http://localhost:1/"


class AuthError(Exception):
    """The flow could not complete (a message for the operator)."""


class _Flow(InstalledAppFlow):
    """Reports the authorization URL to a callback instead of only printing it."""

    on_url: Callable[[str], None] | None = None

    def authorization_url(self, **kwargs: Any) -> tuple[str, str]:
        url, state = super().authorization_url(**kwargs)
        if self.on_url is not None:
            self.on_url(url)
        return url, state


def _client_flow(client_file: str, scopes: list[str]) -> _Flow:
    path = Path(client_file).expanduser()
    try:
        info = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise AuthError(f"the OAuth client file {path} does not exist") from None
    except (OSError, ValueError):
        raise AuthError(f"the OAuth client file {path} cannot be read as JSON") from None
    if not isinstance(info, dict) or "installed" not in info:
        raise AuthError(f"{path} is not an installed-app OAuth client (create one of type 'Desktop app')")
    try:
        return _Flow.from_client_config(info, scopes=scopes)
    except ValueError as exc:
        raise AuthError(f"{path} is not a usable OAuth client: {str(exc)[:200]}") from None


def write_token(path: str | Path, content: str) -> Path:
    """Write ``content`` to ``path`` with mode 0600 (atomically: a reader never sees half a file)."""
    target = Path(path).expanduser()
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".token-", dir=target.parent)  # mkstemp creates with 0600
    try:
        os.fchmod(fd, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(content)
        os.replace(tmp, target)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return target


def authorize(
    client_file: str,
    token_file: str,
    scopes: list[str],
    *,
    console: bool = False,
    open_browser: bool = True,
    port: int = 0,
    on_url: Callable[[str], None] = print,
    read_answer: Callable[[], str] = input,
    timeout_seconds: int = 300,
) -> Path:
    """Run the flow and store the token file; returns its path."""
    flow = _client_flow(client_file, scopes)
    flow.on_url = on_url
    # offline + consent: Google returns a refresh token even when the app was authorised before.
    options = {"access_type": "offline", "prompt": "consent"}
    try:
        if console:
            flow.redirect_uri = CONSOLE_REDIRECT
            flow.authorization_url(**options)
            answer = read_answer().strip()
            if not answer:
                raise AuthError("no answer given")
            if answer.startswith("http"):
                # oauthlib insists on https; the loopback redirect is http by design.
                flow.fetch_token(authorization_response=answer.replace("http://", "https://", 1))
            else:
                flow.fetch_token(code=answer)
            credentials = flow.credentials
        else:
            credentials = flow.run_local_server(
                host="localhost",
                bind_addr="127.0.0.1",
                port=port,
                open_browser=open_browser,
                authorization_prompt_message="",
                success_message="Chronos may now read this calendar. You can close this window.",
                timeout_seconds=timeout_seconds,
                **options,
            )
    except AuthError:
        raise
    except Exception as exc:  # noqa: BLE001 - one line for the operator, no token material
        # oauthlib's messages carry the server's error code and description, never a token.
        detail = " ".join(str(exc).split())[:200]
        raise AuthError(f"the authorization failed ({type(exc).__name__}{': ' + detail if detail else ''})") from None
    if not getattr(credentials, "refresh_token", None):
        raise AuthError("Google returned no refresh token; remove the app's access in your account and try again")
    return write_token(token_file, credentials.to_json())
