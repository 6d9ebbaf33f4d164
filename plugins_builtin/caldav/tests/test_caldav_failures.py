"""Bad input: each breaks one calendar's run with a clear error, keeps the last good data, and the service goes on.

Every test syncs a good calendar first, then breaks it, and checks the run's
error, that the events stay, that ``GET /health`` and ``GET
/api/v1/sync/calendars`` answer 200 without the password, and that a later
sync recovers.
"""

from __future__ import annotations

import asyncio
import re
import socket

import pytest

from caldav_support import PASSWORD, PLUGINS, calendar_config, titles, vevent
from chronos import testing as kit

pytestmark = pytest.mark.exercises_hook("register_sources")


async def check_no_secrets_and_no_5xx(c, *, error: str) -> None:
    health = await c.get("/health")
    assert health.status_code == 200, health.text
    cal = health.json()["checks"]["sync"]["calendars"]["caldav/work"]
    assert cal["status"] == "error" and re.search(error, cal["error"]), cal
    listed = await c.get("/api/v1/sync/calendars")
    plugins = await c.get("/api/v1/plugins")
    assert listed.status_code == 200 and plugins.status_code == 200
    for text in (health.text, listed.text, plugins.text):
        assert PASSWORD not in text


async def break_and_recover(app, c, *, error: str, restore, expect=("Alpha",)) -> None:
    run = await kit.sync_now(app, "caldav", "work", full=True)
    assert run.status == "error", run
    assert re.search(error, run.error), run.error
    assert PASSWORD not in run.error
    assert await titles(c) == sorted(expect)  # the last good data stays
    await check_no_secrets_and_no_5xx(c, error=error)
    restore()
    run = await kit.sync_now(app, "caldav", "work", full=True)
    assert run.status == "ok", run


@pytest.fixture
async def synced(chronos_app, api_client, radicale, password_env, proxy):
    """An app whose calendar ``work`` (through the proxy, in pass mode) synced ``Alpha``."""

    async def factory(**extra):
        cal = radicale.calendar()
        cal.add_event(vevent("a@t", "Alpha"))
        url = proxy.base + str(cal.url.path)
        config = calendar_config(cal, password_env, url=url, **extra.pop("entry", {}))
        config["caldav"].update(extra)
        app_cm = chronos_app(plugins=PLUGINS, config=config)
        app = await app_cm.__aenter__()
        c = await api_client(app, scopes=["events.read", "health.read", "admin"])
        run = await kit.sync_now(app, "caldav", "work")
        assert (run.status, run.added) == ("ok", 1), run
        opened.append(app_cm)
        return app, c, cal

    opened: list = []
    yield factory
    for cm in opened:
        await cm.__aexit__(None, None, None)


async def test_revoked_credentials(synced, monkeypatch, password_env):
    app, c, _cal = await synced()
    monkeypatch.setenv(password_env, "an-old-password")
    await break_and_recover(
        app,
        c,
        error=r"^HTTP 401 Unauthorized from http://127\.0\.0\.1:\d+: the server refused the username or password$",
        restore=lambda: monkeypatch.setenv(password_env, PASSWORD),
    )


async def test_missing_credentials(synced, monkeypatch, password_env):
    app, c, _cal = await synced()
    monkeypatch.delenv(password_env)
    await break_and_recover(
        app,
        c,
        error=rf"^the environment variable {password_env} \(password_env\) is not set$",
        restore=lambda: monkeypatch.setenv(password_env, PASSWORD),
    )


async def test_a_server_answering_html(synced, proxy):
    app, c, _cal = await synced()
    proxy.mode = "html"
    await break_and_recover(
        app,
        c,
        error=r"^http://127\.0\.0\.1:\d+ answered text/html instead of a WebDAV multistatus \(XML\)",
        restore=lambda: setattr(proxy, "mode", "pass"),
    )


async def test_redirects_are_not_followed(synced, proxy):
    app, c, _cal = await synced()
    proxy.mode = "redirect"
    await break_and_recover(
        app,
        c,
        error=r"^http://127\.0\.0\.1:\d+ redirects elsewhere; configure the calendar's final URL",
        restore=lambda: setattr(proxy, "mode", "pass"),
    )


async def test_a_server_that_never_answers(synced, proxy):
    app, c, _cal = await synced(timeout_seconds=2)
    proxy.mode = "hang"
    await break_and_recover(
        app,
        c,
        error=r"^http://127\.0\.0\.1:\d+ did not answer in time \(caldav\.timeout_seconds\)$",
        restore=lambda: setattr(proxy, "mode", "pass"),
    )


async def test_a_calendar_that_does_not_exist(chronos_app, api_client, radicale, password_env):
    cal = radicale.calendar()
    cal.add_event(vevent("a@t", "Alpha"))
    config = calendar_config(cal, password_env)
    missing = {**config["caldav"]["calendars"][0], "id": "missing", "url": radicale.base + "/ann/no-such-calendar/"}
    config["caldav"]["calendars"].append(missing)
    async with chronos_app(plugins=PLUGINS, config=config) as app:
        c = await api_client(app, scopes=["events.read", "health.read"])
        run = await kit.sync_now(app, "caldav", "missing")
        assert run.status == "error", run
        assert re.search(r"^HTTP 404 Not Found from http://127\.0\.0\.1:\d+: there is no calendar", run.error)
        assert (await c.get("/health")).status_code == 200
        # The other calendar is unaffected.
        assert (await kit.sync_now(app, "caldav", "work")).added == 1
        assert await titles(c) == ["Alpha"]


async def test_entries_the_pipeline_cannot_take_fail_alone(chronos_app, api_client, radicale, password_env):
    """An unknown TZID and a 5 MB description: those two entries fail, the rest syncs, nothing is lost."""
    cal = radicale.calendar()
    cal.add_event(vevent("a@t", "Alpha"))
    async with chronos_app(plugins=PLUGINS, config=calendar_config(cal, password_env)) as app:
        c = await api_client(app, scopes=["events.read", "health.read"])
        assert (await kit.sync_now(app, "caldav", "work")).added == 1
        mars = (
            vevent("mars@t", "On Mars")
            .replace("DTSTART:", "DTSTART;TZID=Mars/Olympus:")
            .replace("Z\r\nDTEND", "\r\nDTEND")
        )
        cal.add_event(mars)
        cal.add_event(vevent("big@t", "Big", extra="DESCRIPTION:" + "x" * (5 * 1024 * 1024)))
        cal.add_event(vevent("b@t", "Beta"))
        run = await kit.sync_now(app, "caldav", "work")
        assert run.status == "partial" and run.failed == 2, run
        by_uid = {e["uid"]: e["message"] for e in run.errors}
        assert "unknown time zone TZID='Mars/Olympus'" in by_uid["mars@t"], by_uid
        assert "description" in by_uid["big@t"], by_uid
        assert await titles(c) == ["Alpha", "Beta"]
        assert (await c.get("/health")).status_code == 200
        # The run keeps its cursor: the next sync offers the failed entries again (a full listing) and stays partial.
        cal.event_by_uid("big@t").delete()
        run = await kit.sync_now(app, "caldav", "work")
        assert run.status == "partial" and run.failed == 1, run
        assert await titles(c) == ["Alpha", "Beta"]


async def test_an_unreadable_password_file(synced, tmp_path):
    missing = tmp_path / "nowhere" / "caldav.pw"
    app, c, _cal = await synced()
    source = kit.runtime_of(app).pipeline.calendar("caldav", "work").source
    cfg = source._by_id["work"]
    source._by_id["work"] = cfg.model_copy(update={"password_env": None, "password_file": missing})
    await break_and_recover(
        app,
        c,
        error=rf"^cannot read the password file {re.escape(str(missing))}: No such file or directory$",
        restore=lambda: source._by_id.__setitem__("work", cfg),
    )


async def test_credentials_that_cannot_be_sent(synced, monkeypatch, password_env):
    app, c, _cal = await synced()
    monkeypatch.setenv(password_env, "p\u00e4ss\u20ac\u2603")  # not encodable for Basic auth by every client
    run = await kit.sync_now(app, "caldav", "work", full=True)
    # Either the client refuses to encode it or the server refuses it: a clear error, never the password.
    assert run.status == "error", run
    assert "\u2603" not in run.error and ("HTTP 401" in run.error or "failed: " in run.error), run.error
    assert await titles(c) == ["Alpha"]
    await check_no_secrets_and_no_5xx(c, error=".")


async def test_the_scheduled_job_keeps_running_through_failures(
    chronos_app, api_client, radicale, monkeypatch, password_env
):
    """With the job runner on: failing runs repeat on schedule, other work goes on, and the calendar recovers."""
    cal = radicale.calendar()
    cal.add_event(vevent("a@t", "Alpha"))
    monkeypatch.setenv(password_env, "revoked")
    config = calendar_config(cal, password_env, interval_seconds=0.5)
    async with chronos_app(plugins=PLUGINS, config=config, run_jobs=True) as app:
        c = await api_client(app, scopes=["events.read", "health.read"])

        async def runs() -> list[dict]:
            r = await c.get("/api/v1/sync/runs", params={"limit": 100})
            assert r.status_code == 200, r.text
            return [x for x in r.json()["items"] if x["calendar_id"] == "work"]

        async def until(predicate, what: str) -> None:
            deadline = asyncio.get_running_loop().time() + 60
            while not await predicate():
                assert asyncio.get_running_loop().time() < deadline, f"timed out waiting for {what}"
                await asyncio.sleep(0.1)

        async def two_failures() -> bool:
            return sum(x["status"] == "error" for x in await runs()) >= 2

        await until(two_failures, "two failed scheduled runs")
        assert all("HTTP 401" in x["error"] for x in await runs() if x["status"] == "error")
        assert (await c.get("/health")).status_code == 200

        monkeypatch.setenv(password_env, PASSWORD)

        async def recovered() -> bool:
            return any(x["status"] == "ok" for x in await runs())

        await until(recovered, "a successful scheduled run")
        assert await titles(c) == ["Alpha"]


async def test_a_name_that_rebinds_to_a_refused_address_after_the_check_is_not_connected(
    chronos_app, api_client, radicale, password_env, proxy, monkeypatch
):
    """The check before the run sees an allowed address; every later lookup answers loopback (refused).
    The session connects only to addresses the guard checked at connect time, so nothing reaches the server."""
    system_lookup = socket.getaddrinfo
    answers: list[str] = []

    def rebinding(host, port, *args, **kwargs):
        if host != "calendar.rebind.test":
            return system_lookup(host, port, *args, **kwargs)
        answers.append("127.0.0.2" if not answers else "127.0.0.1")
        return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", (answers[-1], int(port)))]

    monkeypatch.setattr(socket, "getaddrinfo", rebinding)
    cal = radicale.calendar()
    cal.add_event(vevent("a@t", "Alpha"))
    url = f"http://calendar.rebind.test:{proxy.port}{cal.url.path}"
    config = calendar_config(cal, password_env, url=url) | {"network": {"allow": ["127.0.0.2/32"]}}
    async with chronos_app(plugins=PLUGINS, config=config) as app:
        c = await api_client(app, scopes=["events.read", "health.read", "admin"])
        run = await kit.sync_now(app, "caldav", "work")
        assert run.status == "error", run
        assert re.search(r"calendar\.rebind\.test \(127\.0\.0\.1\) is a loopback address", run.error), run.error
        assert answers[:2] == ["127.0.0.2", "127.0.0.1"]  # checked once before the run, then at connect
        assert proxy.requests == []
        assert await titles(c) == []
        assert (await c.get("/health")).status_code == 200
