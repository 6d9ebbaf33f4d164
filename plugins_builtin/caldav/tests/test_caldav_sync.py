"""Syncing a real Radicale calendar through the pipeline: full listing, sync tokens, recurrence, fallbacks."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

import pytest

from caldav_support import LOOPBACK, PLUGINS, calendar_config, source_of, titles, vevent, weekly
from chronos import testing as kit

pytestmark = pytest.mark.exercises_hook("register_sources")


async def test_full_then_incremental_sync_with_a_sync_token(chronos_app, api_client, radicale, password_env):
    cal = radicale.calendar()
    cal.add_event(vevent("a@t", "Alpha"))
    cal.add_event(vevent("b@t", "Beta", days=2))
    cal.add_event(weekly("w@t", "Weekly", 4))
    async with chronos_app(plugins=PLUGINS, config=calendar_config(cal, password_env)) as app:
        c = await api_client(app, scopes=["events.read"])
        run = await kit.sync_now(app, "caldav", "work")
        assert (run.status, run.added) == ("ok", 6), run
        assert run.cursor["mode"] == "sync" and run.cursor["sync_token"].startswith("http://radicale.org/ns/sync/")
        assert await titles(c) == ["Alpha", "Beta", "Weekly", "Weekly", "Weekly", "Weekly"]

        # Nothing changed: one REPORT, nothing to do.
        run = await kit.sync_now(app, "caldav", "work")
        assert run.status == "ok" and run.not_modified, run
        assert source_of(app).requests["work"] == 1

        # An edit, a delete, an addition and a series losing one instance: one REPORT again.
        cal.event_by_uid("a@t").delete()
        cal.add_event(vevent("b@t", "Beta moved", days=3))
        cal.add_event(vevent("c@t", "Gamma"))
        cal.add_event(weekly("w@t", "Weekly", 4, exdate_week=2))
        run = await kit.sync_now(app, "caldav", "work")
        assert run.status == "ok", run
        assert source_of(app).requests["work"] == 1
        assert (run.added, run.deleted) == (1, 2), run
        assert await titles(c) == ["Beta moved", "Gamma", "Weekly", "Weekly", "Weekly"]

        # The whole series goes: every instance goes with it.
        cal.event_by_uid("w@t").delete()
        run = await kit.sync_now(app, "caldav", "work")
        assert (run.status, run.deleted) == ("ok", 3), run
        assert await titles(c) == ["Beta moved", "Gamma"]


async def test_an_expired_sync_token_lists_everything_and_deletes_only_at_the_end(
    chronos_app, api_client, radicale, password_env, database
):
    cal = radicale.calendar()
    cal.add_event(vevent("a@t", "Alpha"))
    cal.add_event(vevent("b@t", "Beta"))
    async with chronos_app(plugins=PLUGINS, config=calendar_config(cal, password_env)) as app:
        c = await api_client(app, scopes=["events.read"])
        assert (await kit.sync_now(app, "caldav", "work")).added == 2
        # The server no longer knows the token (as after its sync history was pruned).
        from sqlalchemy import update

        from chronos.db.sync_models import SyncState

        async with app.state.chronos.db.write() as s:
            state = await s.get(SyncState, ("caldav", "work"))
            bogus = {**state.cursor, "sync_token": "http://radicale.org/ns/sync/" + "0" * 64}
            await s.execute(update(SyncState).where(SyncState.source == "caldav").values(cursor=bogus))
        cal.event_by_uid("a@t").delete()
        cal.add_event(vevent("c@t", "Gamma"))
        run = await kit.sync_now(app, "caldav", "work")
        assert run.status == "ok", run
        assert (run.added, run.deleted) == (1, 1), run
        assert run.cursor["sync_token"] != bogus["sync_token"]
        assert await titles(c) == ["Beta", "Gamma"]
        # Next time the fresh token works again: incremental, one request.
        run = await kit.sync_now(app, "caldav", "work")
        assert run.not_modified and source_of(app).requests["work"] == 1


async def test_a_server_without_sync_collection_uses_ctag_and_fetches_only_changed_objects(
    chronos_app, api_client, radicale, proxy, password_env
):
    cal = radicale.calendar()
    for i in range(5):
        cal.add_event(vevent(f"e{i}@t", f"Event {i}", days=i + 1))
    proxy.mode = "no-sync"
    url = proxy.base + str(cal.url.path)
    async with chronos_app(plugins=PLUGINS, config=calendar_config(cal, password_env, url=url)) as app:
        c = await api_client(app, scopes=["events.read"])
        run = await kit.sync_now(app, "caldav", "work")
        assert (run.status, run.added) == ("ok", 5), run
        assert run.cursor["mode"] == "ctag" and run.cursor["ctag"] and "sync_token" not in run.cursor

        proxy.requests.clear()
        run = await kit.sync_now(app, "caldav", "work")
        assert run.not_modified, run
        assert [m for m, _ in proxy.requests] == ["PROPFIND"]  # only the ctag

        cal.event_by_uid("e1@t").delete()
        cal.add_event(vevent("e2@t", "Event 2 renamed", days=3))
        proxy.requests.clear()
        run = await kit.sync_now(app, "caldav", "work")
        assert run.status == "ok" and (run.updated, run.deleted) == (1, 1), run
        # ctag, the etags, and one multiget of the one changed object.
        assert [m for m, _ in proxy.requests] == ["PROPFIND", "PROPFIND", "REPORT"]
        assert await titles(c) == ["Event 0", "Event 2 renamed", "Event 3", "Event 4"]


async def test_a_server_offering_a_token_but_refusing_the_report_falls_back_to_ctag(
    chronos_app, radicale, proxy, password_env
):
    cal = radicale.calendar()
    cal.add_event(vevent("a@t", "Alpha"))
    proxy.mode = "refuse-report"
    url = proxy.base + str(cal.url.path)
    async with chronos_app(plugins=PLUGINS, config=calendar_config(cal, password_env, url=url)) as app:
        run = await kit.sync_now(app, "caldav", "work")
        assert (run.status, run.added, run.cursor["mode"]) == ("ok", 1, "sync"), run
        cal.add_event(vevent("b@t", "Beta"))
        run = await kit.sync_now(app, "caldav", "work")  # the report is refused: a full listing by ctag
        assert (run.status, run.added, run.cursor["mode"]) == ("ok", 1, "ctag"), run
        run = await kit.sync_now(app, "caldav", "work")
        assert run.status == "ok" and run.not_modified, run


async def test_a_server_capping_reports_is_listed_by_etags_and_multigets(
    chronos_app, api_client, radicale, proxy, password_env, monkeypatch
):
    """Radicale answers a REPORT over 10,000 events with 400: the listing goes by hrefs instead."""
    import chronos_caldav.source

    monkeypatch.setattr(chronos_caldav.source, "MULTIGET_CHUNK", 2)
    cal = radicale.calendar()
    for i in range(5):
        cal.add_event(vevent(f"e{i}@t", f"Event {i}", days=i + 1))
    proxy.mode = "cap-report"
    url = proxy.base + str(cal.url.path)
    async with chronos_app(plugins=PLUGINS, config=calendar_config(cal, password_env, url=url)) as app:
        c = await api_client(app, scopes=["events.read"])
        run = await kit.sync_now(app, "caldav", "work")
        assert (run.status, run.added, run.cursor["mode"]) == ("ok", 5, "sync"), run
        reports = [m for m, _ in proxy.requests if m == "REPORT"]
        assert len(reports) == 1 + 3  # the refused calendar-query, then three multigets of at most 2
        assert await titles(c) == [f"Event {i}" for i in range(5)]
        cal.event_by_uid("e0@t").delete()
        run = await kit.sync_now(app, "caldav", "work")
        assert (run.status, run.deleted) == ("ok", 1), run


async def test_concurrent_edits_between_and_during_syncs_converge(chronos_app, api_client, radicale, password_env):
    """Two clients edit while the service syncs: whatever the interleaving, the next sync shows the server."""
    cal = radicale.calendar()
    other = radicale.client.calendar(url=str(cal.url))
    cal.add_event(vevent("x@t", "First"))
    async with chronos_app(plugins=PLUGINS, config=calendar_config(cal, password_env)) as app:
        c = await api_client(app, scopes=["events.read"])
        assert (await kit.sync_now(app, "caldav", "work")).added == 1

        async def edit_while_syncing() -> None:
            for i in range(10):
                await asyncio.to_thread(other.add_event, vevent("x@t", f"Edit {i}"))
                await asyncio.to_thread(cal.add_event, vevent(f"n{i}@t", f"New {i}"))

        await asyncio.gather(edit_while_syncing(), kit.sync_now(app, "caldav", "work"))
        run = await kit.sync_now(app, "caldav", "work")
        assert run.status == "ok", run
        assert await titles(c) == sorted(["Edit 9", *(f"New {i}" for i in range(10))])


async def test_digest_auth(chronos_app, api_client, radicale, proxy, password_env):
    cal = radicale.calendar()
    cal.add_event(vevent("a@t", "Alpha"))
    proxy.mode = "digest"
    url = proxy.base + str(cal.url.path)
    config = calendar_config(cal, password_env, url=url, auth="digest")
    async with chronos_app(plugins=PLUGINS, config=config) as app:
        run = await kit.sync_now(app, "caldav", "work")
        assert (run.status, run.added) == ("ok", 1), run


async def test_the_password_may_come_from_a_file(chronos_app, radicale, tmp_path):
    cal = radicale.calendar()
    cal.add_event(vevent("a@t", "Alpha"))
    secret = tmp_path / "caldav-password"
    secret.write_text("s3cret-pw\n")
    entry = {"id": "work", "url": str(cal.url), "username": "ann", "password_file": str(secret), "interval_seconds": 0}
    async with chronos_app(plugins=PLUGINS, config={"caldav": {"calendars": [entry]}, **LOOPBACK}) as app:
        run = await kit.sync_now(app, "caldav", "work")
        assert (run.status, run.added) == ("ok", 1), run


async def test_recurring_series_follow_the_window_as_days_pass(chronos_app, api_client, radicale, password_env):
    cal = radicale.calendar()
    cal.add_event(weekly("w@t", "Weekly", 20))
    cal.add_event(vevent("once@t", "Once"))
    config = calendar_config(cal, password_env, past_days=0, horizon_days=14)
    async with chronos_app(plugins=PLUGINS, config=config) as app:
        c = await api_client(app, scopes=["events.read"])
        run = await kit.sync_now(app, "caldav", "work")
        assert (run.status, run.added) == ("ok", 3), run  # days 1 and 8 of the series, and the single event

        # A week later: the first instance left the window, the one of day 15 entered it.
        source = source_of(app)
        later = datetime.now(UTC) + timedelta(days=7)
        source.clock = lambda: later
        run = await kit.sync_now(app, "caldav", "work")
        assert (run.status, run.added, run.deleted) == ("ok", 1, 1), run
        assert await titles(c) == ["Once", "Weekly", "Weekly"]
        assert source.requests["work"] == 2  # the sync-collection REPORT and one multiget of the series
        # Same day again: nothing to do.
        run = await kit.sync_now(app, "caldav", "work")
        assert run.not_modified and source.requests["work"] == 1
