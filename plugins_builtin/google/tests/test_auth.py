"""Credentials: installed-app tokens (the `chronos google auth` flow), revoked tokens, secrets kept out of sight."""

from __future__ import annotations

import json
import stat
import threading

import httpx
import pytest
from typer.testing import CliRunner

from google_support import config, events_of, soon, sync, timed

from chronos_google.auth import AuthError, authorize
from chronos_google.cli import make_app
from chronos_google.settings import SCOPE_READ, SCOPE_WRITE, GoogleSettings

pytestmark = pytest.mark.exercises_hook("register_sources", "register_cli")

PLUGINS = ["events", "normalize", "google"]


@pytest.fixture(autouse=True)
def _plain_http_oauth(monkeypatch):
    # The fake token endpoint is http on loopback; oauthlib accepts that only when told to.
    monkeypatch.setenv("OAUTHLIB_INSECURE_TRANSPORT", "1")


def user_config(fake, tmp_path, token_file, **cal) -> dict:
    cfg = config(fake, tmp_path, {"id": "mine", **cal})
    cfg["google"]["credentials"] = {
        "client_secrets_file": str(fake.client_file(tmp_path)),
        "token_file": str(token_file),
    }
    return cfg


def browser(url: str) -> None:
    """What a user's browser does: open the consent page, follow the redirect back to the loopback listener."""

    def visit() -> None:
        httpx.get(url, follow_redirects=True, timeout=10)

    threading.Thread(target=visit, daemon=True).start()


def test_the_loopback_flow_writes_a_private_token_file(fake_google, tmp_path):
    client = fake_google.client_file(tmp_path)
    target = tmp_path / "secrets" / "google-token.json"
    path = authorize(str(client), str(target), [SCOPE_WRITE], open_browser=False, on_url=browser, timeout_seconds=20)
    assert path == target
    assert stat.S_IMODE(target.stat().st_mode) == 0o600
    saved = json.loads(target.read_text())
    assert saved["refresh_token"] in fake_google.refresh_tokens and saved["token_uri"].startswith(fake_google.base)


def test_the_console_flow_takes_the_redirected_address_or_the_code(fake_google, tmp_path):
    client = fake_google.client_file(tmp_path)
    seen: list[str] = []

    def answer() -> str:
        # The address the browser ends on (nothing listens there) is pasted back.
        r = httpx.get(seen[0], follow_redirects=False, timeout=10)
        return r.headers["location"]

    target = tmp_path / "token.json"
    target.write_text("old")
    target.chmod(0o644)
    authorize(str(client), str(target), [SCOPE_WRITE], console=True, on_url=seen.append, read_answer=answer)
    assert "redirect_uri=http%3A%2F%2Flocalhost%3A1%2F" in seen[0] and "access_type=offline" in seen[0]
    assert stat.S_IMODE(target.stat().st_mode) == 0o600
    assert json.loads(target.read_text())["refresh_token"] in fake_google.refresh_tokens

    with pytest.raises(AuthError, match="authorization failed"):
        authorize(
            str(client), str(target), [SCOPE_WRITE], console=True, on_url=seen.append, read_answer=lambda: "4/bad"
        )
    with pytest.raises(AuthError, match="not an installed-app OAuth client"):
        authorize(str(target), str(tmp_path / "t2.json"), [SCOPE_WRITE], console=True, on_url=print)


def test_the_cli_command(fake_google, tmp_path):
    token = tmp_path / "token.json"
    settings = GoogleSettings.model_validate(user_config(fake_google, tmp_path, token)["google"])
    app = make_app(lambda: settings)
    fake_google.codes["4/typed-code"] = SCOPE_READ
    result = CliRunner().invoke(app, ["auth", "--calendar", "mine", "--console"], input="4/typed-code\n")
    assert result.exit_code == 0, result.output
    assert "wrote" in result.output and "client-secret-do-not-log" not in result.output
    refresh = json.loads(token.read_text())["refresh_token"]
    assert refresh not in result.output and stat.S_IMODE(token.stat().st_mode) == 0o600
    result = CliRunner().invoke(app, ["auth", "--calendar", "nope", "--console"])
    assert result.exit_code == 2 and "no calendar 'nope'" in result.output


async def test_token_file_credentials_sync_and_a_revoked_token_is_a_clear_error(
    chronos_app, api_client, fake_google, tmp_path, capsys
):
    cal = "mine@group.calendar.google.com"
    fake_google.put(cal, timed("a", soon(1), summary="Mine"))
    token = fake_google.token_file(tmp_path)
    saved = json.loads(token.read_text())
    # As `chronos google auth` leaves it an hour later: an expired access token next to the refresh token.
    token.write_text(json.dumps({**saved, "token": "ya29.expired", "expiry": "2020-01-01T00:00:00Z"}))
    refresh = saved["refresh_token"]
    async with chronos_app(plugins=PLUGINS, config=user_config(fake_google, tmp_path, token)) as app:
        run = await sync(app, "mine")
        assert (run.status, run.added) == ("ok", 1), run.error
        # Revoked: the refresh fails, the run says what to do, the data stays.
        fake_google.refresh_tokens.discard(refresh)
        fake_google.access_tokens.clear()
        run = await sync(app, "mine")
        assert run.status == "error" and "invalid_grant" in run.error and "chronos google auth" in run.error
        c = await api_client(app, scopes=["admin"])
        assert set(await events_of(c, "mine")) == {("a", "")}
        # Nothing a client can read names a secret.
        seen = [
            (await c.get("/health")).text,
            (await c.get("/api/v1/plugins")).text,
            (await c.get("/api/v1/sync/calendars")).text,
            (await c.get("/api/v1/sync/runs", params={"limit": 50})).text,
        ]
        # Re-authorised on disk: the next run reads the new token file.
        fake_google.token_file(tmp_path)
        assert (await sync(app, "mine")).status == "ok"
    logs = capsys.readouterr()
    secret_key = json.loads((tmp_path / "client.json").read_text())["installed"]["client_secret"]
    for text in [*seen, logs.out, logs.err]:
        assert refresh not in text and secret_key not in text and "ya29." not in text
