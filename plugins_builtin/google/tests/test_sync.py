"""The google source through the whole pipeline, against the fake Google Calendar v3 server."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest

from chronos import testing as kit
from google_support import Fault, all_day, config, events_of, soon, sync, timed, utc, weekly_instances

pytestmark = pytest.mark.exercises_hook("register_sources")

PLUGINS = ["events", "normalize", "google"]
NY = ZoneInfo("America/New_York")


async def test_full_then_incremental_with_pages(chronos_app, api_client, fake_google, tmp_path):
    cal = "team@group.calendar.google.com"
    fake_google.put_many(cal, [timed(f"ev{i:03d}", soon(1 + i % 20), summary=f"Event {i}") for i in range(120)])
    async with chronos_app(plugins=PLUGINS, config=config(fake_google, tmp_path, {"id": "team"}, page_size=50)) as app:
        run = await sync(app, "team")
        assert (run.status, run.added, run.failed) == ("ok", 120, 0), run.error
        lists = fake_google.list_requests()
        assert len(lists) == 3 and all(r["params"]["singleEvents"] == "true" for r in lists)
        assert "timeMin" in lists[0]["params"] and "syncToken" not in lists[0]["params"]
        assert [bool(r["params"].get("pageToken")) for r in lists] == [False, True, True]
        assert run.cursor["sync_token"] and run.cursor["calendar"] == cal

        fake_google.requests.clear()
        fake_google.put(cal, timed("ev001", soon(3), summary="Renamed"))
        fake_google.put(cal, timed("new", soon(4), summary="New one"))
        fake_google.cancel(cal, "ev002")
        run = await sync(app, "team")
        assert (run.status, run.added, run.updated, run.deleted) == ("ok", 1, 1, 1)
        [only] = fake_google.list_requests()
        assert only["params"]["syncToken"] == run.cursor["sync_token"] or only["params"]["syncToken"]
        assert "timeMin" not in only["params"]

        c = await api_client(app, scopes=["events.read"])
        events = await events_of(c, "team")
        assert len(events) == 120 and ("ev002", "") not in events
        assert events[("ev001", "")]["title"] == "Renamed"

        fake_google.requests.clear()
        run = await sync(app, "team")  # nothing changed: one request, nothing written
        assert (run.status, run.added, run.updated, run.deleted) == ("ok", 0, 0, 0)
        assert len(fake_google.list_requests()) == 1


async def test_gone_sync_token_resyncs_and_deletes_exactly_what_vanished(chronos_app, fake_google, tmp_path):
    cal = "home@group.calendar.google.com"
    fake_google.put_many(cal, [timed(f"h{i}", soon(1 + i), summary=f"Home {i}") for i in range(10)])
    async with chronos_app(plugins=PLUGINS, config=config(fake_google, tmp_path, {"id": "home"}, page_size=4)) as app:
        assert (await sync(app, "home")).added == 10
        # While the token is expired, h3 disappears without a cancelled stub (as after a long absence).
        with fake_google.lock:
            del fake_google.calendars[cal].events["h3"]
        fake_google.put(cal, timed("h4", soon(5), summary="Home 4 moved"))
        fake_google.expire_sync_tokens()
        fake_google.requests.clear()
        run = await sync(app, "home")
        assert (run.status, run.added, run.updated, run.deleted, run.unchanged) == ("ok", 0, 1, 1, 8), run.error
        lists = fake_google.list_requests()
        assert lists[0]["params"].get("syncToken") and "syncToken" not in lists[1]["params"]
        assert "timeMin" in lists[1]["params"]
        assert run.cursor["sync_token"]
        # A token the server refuses with 400 (not 410) also starts a full listing.
        fake_google.requests.clear()
        fake_google.fail_next(Fault(400, "invalid"))
        run = await sync(app, "home")
        assert (run.status, run.added, run.deleted) == ("ok", 0, 0), run.error
        assert [bool(r["params"].get("syncToken")) for r in fake_google.list_requests()][:2] == [True, False]
        # The new token works incrementally again.
        fake_google.requests.clear()
        assert (await sync(app, "home")).status == "ok"
        assert [bool(r["params"].get("syncToken")) for r in fake_google.list_requests()] == [True]


async def test_a_resync_failing_half_way_deletes_nothing(chronos_app, fake_google, tmp_path):
    cal = "half@group.calendar.google.com"
    fake_google.put_many(cal, [timed(f"x{i}", soon(1 + i)) for i in range(9)])
    cfg = config(fake_google, tmp_path, {"id": "half"}, page_size=3, max_retries=1)
    async with chronos_app(plugins=PLUGINS, config=cfg) as app:
        first = await sync(app, "half")
        assert first.added == 9
        with fake_google.lock:
            del fake_google.calendars[cal].events["x8"]
        fake_google.expire_sync_tokens()
        # 410 for the token, the new listing's first page, then its second page fails for good.
        fake_google.fail_next(Fault(503, paged=True), Fault(503, paged=True))
        run = await sync(app, "half")
        assert run.status == "error" and "HTTP 503" in run.error and run.deleted == 0
        assert run.cursor == first.cursor  # the listing restarts next time
        run = await sync(app, "half")
        assert (run.status, run.deleted, run.unchanged) == ("ok", 1, 8), run.error


async def test_cancelled_instances_and_dst(chronos_app, api_client, fake_google, tmp_path):
    cal = "ny@group.calendar.google.com"
    fake_google.calendar(cal, time_zone="America/New_York")
    # A weekly 09:00 New York meeting over 40 weeks: across at least one DST change, whatever today is.
    today = datetime.now(UTC).date()
    first = datetime.combine(today + timedelta(days=1), datetime.min.time()).replace(hour=9)
    instances = weekly_instances("weekly", first, 40, "America/New_York", summary="Weekly sync")
    fake_google.put_many(cal, instances)
    fake_google.put(cal, all_day("holiday", today + timedelta(days=2), days=2, summary="Holiday"))
    async with chronos_app(plugins=PLUGINS, config=config(fake_google, tmp_path, {"id": "ny"})) as app:
        run = await sync(app, "ny")
        assert (run.status, run.added) == ("ok", 41), run.error
        c = await api_client(app, scopes=["events.read"])
        events = await events_of(c, "ny")
        weekly = [e for (uid, _), e in events.items() if uid == "weekly"]
        assert len(weekly) == 40
        local = {utc(e["start_utc"]).astimezone(NY).strftime("%H:%M") for e in weekly}
        assert local == {"09:00"}  # same local time whether EST or EDT
        offsets = {utc(e["start_utc"]).astimezone(NY).utcoffset() for e in weekly}
        assert len(offsets) == 2  # the series does cross a DST change
        assert all(e["timezone"] == "America/New_York" for e in weekly)
        holiday = events[("holiday", "")]
        assert holiday["all_day"] and holiday["start_date"] == str(today + timedelta(days=2))
        assert holiday["end_date"] == str(today + timedelta(days=4)) and holiday["transparency"] == "free"

        # Cancel the third instance (an exception of the series) and move the fourth.
        third, fourth = instances[2], instances[3]
        fake_google.cancel(cal, third["id"])
        moved = dict(fourth)
        moved["start"] = {
            "dateTime": fourth["start"]["dateTime"].replace("T09:", "T11:"),
            "timeZone": "America/New_York",
        }
        moved["end"] = {"dateTime": fourth["end"]["dateTime"].replace("T10:", "T12:"), "timeZone": "America/New_York"}
        fake_google.put(cal, moved)
        run = await sync(app, "ny")
        assert (run.status, run.updated, run.deleted) == ("ok", 1, 1), run.error
        events = await events_of(c, "ny")
        rid3 = utc(third["originalStartTime"]["dateTime"]).astimezone(UTC).strftime("%Y%m%dT%H%M%SZ")
        rid4 = utc(fourth["originalStartTime"]["dateTime"]).astimezone(UTC).strftime("%Y%m%dT%H%M%SZ")
        assert ("weekly", rid3) not in events
        assert utc(events[("weekly", rid4)]["start_utc"]).astimezone(NY).strftime("%H:%M") == "11:00"

        # The whole series is deleted and Google reports only its master as cancelled.
        with fake_google.lock:
            for inst in instances:
                del fake_google.calendars[cal].events[inst["id"]]
        fake_google.put(cal, {"id": "weekly", "status": "cancelled"})
        run = await sync(app, "ny")
        assert (run.status, run.deleted) == ("ok", 39), run.error
        assert set(await events_of(c, "ny")) == {("holiday", "")}


async def test_rate_limits_are_retried_honouring_retry_after(chronos_app, fake_google, tmp_path):
    cal = "busy@group.calendar.google.com"
    fake_google.put_many(cal, [timed(f"b{i}", soon(1 + i)) for i in range(3)])
    fake_google.fail_next(
        Fault(429, retry_after="0"), Fault(403, "rateLimitExceeded"), Fault(503), Fault(403, "userRateLimitExceeded")
    )
    async with chronos_app(plugins=PLUGINS, config=config(fake_google, tmp_path, {"id": "busy"})) as app:
        run = await sync(app, "busy")
        assert (run.status, run.added) == ("ok", 3), run.error
        assert len(fake_google.list_requests()) == 5


async def test_persistent_errors_keep_the_last_good_data_and_degrade_health(
    chronos_app, api_client, fake_google, tmp_path
):
    cal = "flaky@group.calendar.google.com"
    fake_google.put_many(cal, [timed(f"f{i}", soon(1 + i)) for i in range(4)])
    cfg = config(fake_google, tmp_path, {"id": "flaky"}, max_retries=2)
    async with chronos_app(plugins=PLUGINS, config=cfg) as app:
        good = await sync(app, "flaky")
        assert good.added == 4
        fake_google.requests.clear()
        fake_google.fail_next(*[Fault(500)] * 3)
        run = await sync(app, "flaky")
        assert run.status == "error" and "HTTP 500" in run.error and "3 attempt(s)" in run.error
        assert len(fake_google.list_requests()) == 3
        # A Retry-After beyond google.backoff_max_seconds ends the run at once.
        fake_google.fail_next(Fault(429, retry_after="7200"))
        run = await sync(app, "flaky")
        assert run.status == "error" and "7200" in run.error
        c = await api_client(app, scopes=["events.read", "health.read"])
        assert len(await events_of(c, "flaky")) == 4
        health = (await c.get("/health")).json()
        sync_check = health["checks"]["sync"]
        assert health["status"] == "degraded" and sync_check["status"] == "degraded"
        assert sync_check["calendars"]["google/flaky"]["status"] == "error"
        # The next good run clears it, from the same cursor.
        run = await sync(app, "flaky")
        assert run.status == "ok" and run.cursor["sync_token"] == good.cursor["sync_token"]
        assert (await c.get("/health")).json()["checks"]["sync"]["status"] == "ok"


@pytest.mark.parametrize(
    ("case", "expected"),
    [
        ("html", "something other than JSON"),
        ("missing", "does not exist or is not shared"),
        ("timeout", "no answer from"),
        ("malformed_key", "not JSON"),
        ("not_a_key", "not a service-account key"),
        ("bad_pem", "not a usable service-account key"),
        ("unknown_account", "refused the credentials (invalid_grant)"),
        ("refused_token", "HTTP 410"),
    ],
)
async def test_bad_input_fails_that_calendars_run_only(chronos_app, api_client, fake_google, tmp_path, case, expected):
    cal = "bad@group.calendar.google.com"
    fake_google.put_many(cal, [timed(f"k{i}", soon(1 + i)) for i in range(3)])
    other = "fine@group.calendar.google.com"
    fake_google.put(other, timed("ok1", soon(2)))
    cfg = config(fake_google, tmp_path, {"id": "bad"}, {"id": "fine"}, timeout_seconds=1, max_retries=0)
    async with chronos_app(plugins=PLUGINS, config=cfg) as app:
        assert (await sync(app, "bad")).added == 3
        source = kit.runtime_of(app).pipeline.sources["google"][1]
        key_path = tmp_path / "service-account.json"
        if case == "html":
            fake_google.fail_next(Fault(200, html=True))
        elif case == "missing":
            with fake_google.lock:
                del fake_google.calendars[cal]
        elif case == "timeout":
            fake_google.fail_next(Fault(200, hang=10))
        elif case == "malformed_key":
            key_path.write_text("{not json")
            source._clients.clear()
        elif case == "not_a_key":
            key_path.write_text('{"type": "authorized_user"}')
            source._clients.clear()
        elif case == "bad_pem":
            info = __import__("json").loads(key_path.read_text())
            info["private_key"] = "-----BEGIN PRIVATE KEY-----\nnonsense\n-----END PRIVATE KEY-----\n"
            key_path.write_text(__import__("json").dumps(info))
            source._clients.clear()
        elif case == "unknown_account":
            fake_google.service_accounts.clear()
            fake_google.access_tokens.clear()
            source._clients.clear()
        elif case == "refused_token":
            # The token is refused and so is the full listing that follows.
            fake_google.fail_next(Fault(410, "fullSyncRequired"), Fault(410, "fullSyncRequired"))
        run = await sync(app, "bad")
        fake_google.release.set()
        assert run.status == "error" and expected in run.error, run.error
        assert "PRIVATE KEY" not in run.error and "ya29." not in run.error
        c = await api_client(app, scopes=["events.read"])
        assert len(await events_of(c, "bad")) == 3
        if case not in ("unknown_account", "malformed_key", "not_a_key", "bad_pem"):
            assert (await sync(app, "fine")).status == "ok"


async def test_entries_that_cannot_be_read_are_item_errors(chronos_app, api_client, fake_google, tmp_path):
    cal = "odd@group.calendar.google.com"
    big = "x" * (5 * 1024 * 1024)
    fake_google.put(cal, timed("fine", soon(1)))
    fake_google.put(cal, timed("mars", soon(2), tz=None, **{}))
    with fake_google.lock:
        ev = fake_google.calendars[cal].events["mars"]
        ev["start"]["timeZone"] = ev["end"]["timeZone"] = "Mars/Olympus_Mons"
    fake_google.put(cal, timed("huge", soon(3), description=big))
    fake_google.put(cal, {"id": "nostart", "summary": "broken"})
    async with chronos_app(plugins=PLUGINS, config=config(fake_google, tmp_path, {"id": "odd"})) as app:
        run = await sync(app, "odd")
        assert run.status == "partial" and run.added == 1 and run.failed == 3
        messages = {e["uid"]: e["message"] for e in run.errors}
        assert "unknown time zone 'Mars/Olympus_Mons'" in messages["mars"]
        assert "description" in messages["huge"]
        assert "missing start" in messages["nostart"]
        c = await api_client(app, scopes=["events.read"])
        assert set(await events_of(c, "odd")) == {("fine", "")}


async def test_the_job_runner_and_the_api_outlive_a_failing_calendar(chronos_app, api_client, fake_google, tmp_path):
    fake_google.put("good@group.calendar.google.com", timed("g1", soon(1)))
    fake_google.put("down@group.calendar.google.com", timed("d1", soon(1)))
    fake_google.fail_next(*[Fault(502)] * 2)  # the first scheduled runs meet a failing server
    cfg = config(
        fake_google, tmp_path, {"id": "down", "interval_seconds": 3600}, {"id": "good", "interval_seconds": 3600},
        max_retries=0,
    )  # fmt: skip
    async with chronos_app(plugins=PLUGINS, config=cfg, run_jobs=True) as app:
        c = await api_client(app, scopes=["admin"])
        pipeline = kit.runtime_of(app).pipeline
        for _ in range(600):  # the schedule runs both calendars at start (once this process leads)
            runs = (await c.get("/api/v1/sync/runs", params={"limit": 10})).json()["items"]
            idle = not any(pipeline.is_running("google", cal) for cal in ("down", "good"))
            if idle and len([r for r in runs if r["status"] != "running"]) >= 2:
                break
            await asyncio.sleep(0.1)
        else:
            raise AssertionError(f"the scheduled runs did not finish: {runs}")
        statuses = sorted(r["status"] for r in runs)
        assert "error" in statuses, runs
        # The service still answers and syncs on demand.
        r = await c.post("/api/v1/events/sync", json={"source": "google"})
        assert r.status_code == 202, r.text
        await pipeline.wait()
        for run in r.json()["runs"]:
            done = (await c.get(f"/api/v1/sync/runs/{run['id']}")).json()
            assert done["status"] == "ok", done
        assert (await c.get("/health")).status_code == 200


async def test_an_overridden_api_address_goes_through_the_outbound_policy(chronos_app, fake_google, tmp_path):
    fake_google.put("team@group.calendar.google.com", timed("t1", soon(1)))
    cfg = config(fake_google, tmp_path, {"id": "team"})
    del cfg["network"]  # loopback is not allowed by default
    async with chronos_app(plugins=PLUGINS, config=cfg) as app:
        run = await sync(app, "team")
        assert run.status == "error" and "refused by the outbound network policy" in run.error
        assert "network.allow" in run.error and fake_google.list_requests() == []
