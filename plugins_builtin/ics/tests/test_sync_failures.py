"""Failing calendars through the pipeline: the run says why, /health turns degraded, the last good data stays.

Every test first syncs a good version of a calendar, then breaks it (a 404, a
closed port, a redirect loop, a file or feed over ``ics.max_bytes``, an
endless RRULE) and checks three things end to end: the run's error, the
``sync`` check of ``GET /health`` and the events ``GET /api/v1/events`` still
lists.
"""

from __future__ import annotations

import re
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import pytest
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response, StreamingResponse
from starlette.routing import Route

from chronos import testing as kit
from ics_support import LOOPBACK_ALLOWED, free_port, ics, single, stamp, today

pytestmark = pytest.mark.exercises_hook("register_sources")

PLUGINS = ["events", "normalize", "ics"]
SMALL_LIMIT = 2048  # ics.max_bytes in these tests: a few KB stand in for a huge file


def config(*calendars: dict, **extra) -> dict:
    return {"ics": {"calendars": list(calendars), "parse_workers": 0, **extra}, "network": LOOPBACK_ALLOWED}


# -- a feed whose answer the test switches -------------------------------------------------------------


class Switch:
    """What ``/feed`` answers: ``ok`` (the body), ``404``, ``loop``, ``big`` or ``big-stream``."""

    def __init__(self) -> None:
        self.mode = "ok"
        self.body = b""


def switch_app(switch: Switch) -> Starlette:
    async def feed(request: Request) -> Response:
        if switch.mode == "404":
            return Response("gone", status_code=404)
        if switch.mode == "loop":
            return RedirectResponse("/feed?again=1", status_code=302)
        if switch.mode == "big":  # announced by Content-Length
            return Response(b"BEGIN:VCALENDAR\r\n" + b"X" * (4 * SMALL_LIMIT), media_type="text/calendar")
        if switch.mode == "big-stream":  # no Content-Length: only counting the bytes finds it

            async def chunks():
                yield b"BEGIN:VCALENDAR\r\n"
                for _ in range(8):
                    yield b"X" * 1024

            return StreamingResponse(chunks(), media_type="text/calendar")
        return Response(switch.body, media_type="text/calendar")

    return Starlette(routes=[Route("/feed", feed)])


class Server:
    """A uvicorn in a thread that a test can stop (its port is then closed)."""

    def __init__(self, switch: Switch) -> None:
        self.switch = switch
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        self._server = uvicorn.Server(
            uvicorn.Config(switch_app(switch), host="127.0.0.1", port=self.port, log_level="warning", lifespan="off")
        )
        self._thread = threading.Thread(target=self._server.run, daemon=True)

    def start(self) -> Server:
        self._thread.start()
        deadline = time.monotonic() + 10
        while not self._server.started:
            if time.monotonic() > deadline:
                raise RuntimeError("the switchable feed server did not start")
            time.sleep(0.02)
        return self

    def stop(self) -> None:
        self._server.should_exit = True
        self._thread.join(5)
        assert not self._thread.is_alive(), "the feed server did not stop"


@pytest.fixture(scope="module")
def feed() -> Iterator[Server]:
    server = Server(Switch()).start()
    try:
        yield server
    finally:
        server.stop()


# -- helpers ----------------------------------------------------------------------------------------------


async def events_of(client, calendar_id: str) -> list[dict]:
    lo = (datetime.now(UTC) - timedelta(days=400)).strftime("%Y-%m-%dT00:00:00Z")
    hi = (datetime.now(UTC) + timedelta(days=400)).strftime("%Y-%m-%dT00:00:00Z")
    r = await client.get("/api/v1/events", params={"calendar_id": calendar_id, "from": lo, "to": hi, "limit": 500})
    assert r.status_code == 200, r.text
    return r.json()["items"]


async def titles(client, calendar_id: str) -> list[str]:
    return sorted(e["title"] for e in await events_of(client, calendar_id))


async def sync_check(client) -> dict:
    """The ``sync`` block of ``GET /health`` (the detailed report: the client's key holds ``health.read``)."""
    r = await client.get("/health")
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["status"] in ("ok", "degraded"), body
    return body["checks"]["sync"]


async def assert_degraded(client, name: str, message: str) -> dict:
    """/health shows ``name`` failing with ``message``; the overall status is degraded too."""
    r = await client.get("/health")
    body = r.json()
    assert r.status_code == 200 and body["status"] == "degraded", body
    check = body["checks"]["sync"]
    assert check["status"] == "degraded", check
    assert name in check["detail"], check
    cal = check["calendars"][name]
    assert cal["status"] == "error", cal
    assert re.search(message, cal["error"]), cal["error"]
    assert cal["last_success_at"] is not None  # the good sync before the failure is remembered
    return cal


GOOD = ics(single("a", "Alpha"), single("b", "Beta", days=2))


# -- http feeds -----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("mode", "message"),
    [
        ("404", r"^HTTP 404 Not Found from http://127\.0\.0\.1:\d+$"),
        ("loop", r"^more than 5 redirects from http://127\.0\.0\.1:\d+ \(a redirect loop\?\)$"),
        ("big", r"announces .* more than the limit of .* \(ics\.max_bytes\)$"),
        ("big-stream", r"sent more than the limit of .* \(ics\.max_bytes\)$"),
    ],
    ids=["404", "redirect-loop", "too-large", "too-large-stream"],
)
async def test_a_failing_feed_degrades_health_and_keeps_the_last_good_data(
    chronos_app, api_client, feed, mode, message
):
    feed.switch.mode, feed.switch.body = "ok", GOOD.encode()
    assert len(feed.switch.body) < SMALL_LIMIT
    cal = {"id": "web", "url": feed.base + "/feed?token=s3cret", "interval_seconds": 0}
    async with chronos_app(plugins=PLUGINS, config=config(cal, max_bytes=SMALL_LIMIT)) as app:
        c = await api_client(app, scopes=["events.read", "health.read"])
        run = await kit.sync_now(app, "ics", "web")
        assert (run.status, run.added) == ("ok", 2), run
        assert (await sync_check(c))["calendars"]["ics/web"]["status"] == "ok"

        feed.switch.mode = mode
        try:
            run = await kit.sync_now(app, "ics", "web", full=True)
        finally:
            feed.switch.mode = "ok"
        assert run.status == "error", run
        assert re.search(message, run.error), run.error
        assert "s3cret" not in run.error
        assert (run.added, run.updated, run.deleted) == (0, 0, 0)
        assert await titles(c, "web") == ["Alpha", "Beta"]  # the last good data stays
        shown = await assert_degraded(c, "ics/web", message)
        assert shown["last_run_id"] == run.id and "s3cret" not in str(shown)

        # The feed answers again: the calendar is healthy once more.
        run = await kit.sync_now(app, "ics", "web", full=True)
        assert run.status == "ok", run
        assert (await sync_check(c))["status"] == "ok"
        assert await titles(c, "web") == ["Alpha", "Beta"]


async def test_an_unreachable_feed_degrades_health_and_keeps_the_last_good_data(chronos_app, api_client):
    switch = Switch()
    switch.body = GOOD.encode()
    server = Server(switch).start()
    cals = [
        {"id": "web", "url": server.base + "/feed?token=s3cret", "interval_seconds": 0},
        {"id": "never", "url": f"http://127.0.0.1:{free_port()}/cal.ics", "interval_seconds": 0},
    ]
    try:
        async with chronos_app(plugins=PLUGINS, config=config(*cals)) as app:
            c = await api_client(app, scopes=["events.read", "health.read"])
            assert (await kit.sync_now(app, "ics", "web")).added == 2
            server.stop()  # the port is closed now: connections are refused

            run = await kit.sync_now(app, "ics", "web", full=True)
            assert run.status == "error", run
            assert re.search(r"^cannot connect to http://127\.0\.0\.1:\d+: ", run.error), run.error
            assert "s3cret" not in run.error and run.deleted == 0
            assert await titles(c, "web") == ["Alpha", "Beta"]
            await assert_degraded(c, "ics/web", r"^cannot connect to ")

            # A feed that never answered: an error too, with no success to show.
            run = await kit.sync_now(app, "ics", "never")
            assert run.status == "error" and run.error.startswith("cannot connect to http://127.0.0.1:"), run.error
            check = await sync_check(c)
            assert check["status"] == "degraded" and "ics/never" in check["detail"]
            never = check["calendars"]["ics/never"]
            assert never["status"] == "error" and never["last_success_at"] is None
            assert never["error"].startswith("cannot connect to ")
            assert await events_of(c, "never") == []
    finally:
        server.stop()


# -- files ----------------------------------------------------------------------------------------------


async def test_a_file_over_max_bytes_degrades_health_and_keeps_the_last_good_data(chronos_app, api_client, tmp_path):
    path = tmp_path / "team.ics"
    path.write_text(GOOD)
    cal = {"id": "team", "path": str(path), "interval_seconds": 0}
    async with chronos_app(plugins=PLUGINS, config=config(cal, max_bytes=SMALL_LIMIT)) as app:
        c = await api_client(app, scopes=["events.read", "health.read"])
        assert (await kit.sync_now(app, "ics", "team")).added == 2

        # A valid calendar, only too large: 40 entries are well over 2 KB.
        path.write_text(ics(*(single(f"e{i}", f"Event {i}", days=1 + i % 10) for i in range(40))))
        assert path.stat().st_size > SMALL_LIMIT
        run = await kit.sync_now(app, "ics", "team")
        assert run.status == "error", run
        assert str(path) in run.error and "larger than the limit" in run.error and "(ics.max_bytes)" in run.error
        assert (run.added, run.deleted) == (0, 0)
        assert await titles(c, "team") == ["Alpha", "Beta"]
        await assert_degraded(c, "ics/team", r"larger than the limit .*\(ics\.max_bytes\)")

        path.write_text(ics(single("a", "Alpha")))
        run = await kit.sync_now(app, "ics", "team")
        assert (run.status, run.deleted) == ("ok", 1)
        assert (await sync_check(c))["status"] == "ok"


async def test_the_size_error_states_sizes_a_reader_can_tell_apart(chronos_app, tmp_path):
    """A 3 KB file against a 2 KB limit must not read "is 0.0 MB, larger than the limit of 0.0 MB"."""
    path = tmp_path / "team.ics"
    path.write_bytes(b"X" * (SMALL_LIMIT + 1024))
    cal = {"id": "team", "path": str(path), "interval_seconds": 0}
    async with chronos_app(plugins=PLUGINS, config=config(cal, max_bytes=SMALL_LIMIT)) as app:
        run = await kit.sync_now(app, "ics", "team")
        assert run.status == "error" and "(ics.max_bytes)" in run.error, run.error
        shown = re.findall(r"(\d[\d,]*(?:\.\d+)?) ?([KMG]?B)\b", run.error)
        assert shown == [(f"{SMALL_LIMIT + 1024:,}", "B"), (f"{SMALL_LIMIT:,}", "B")], run.error


# -- an endless RRULE -----------------------------------------------------------------------------------


def daily_forever(uid: str, freq: str = "DAILY") -> str:
    """A series that started 30 days ago at 09:00 UTC and never ends (no COUNT, no UNTIL)."""
    start = datetime.combine(today() - timedelta(days=30), datetime.min.time(), UTC).replace(hour=9)
    return (
        f"UID:{uid}\nDTSTART:{stamp(start)}\nDTEND:{stamp(start + timedelta(minutes=30))}\n"
        f"RRULE:FREQ={freq}\nSUMMARY:Forever {freq.lower()}"
    )


async def test_an_endless_rrule_is_expanded_inside_the_window_only(chronos_app, api_client, tmp_path):
    path = tmp_path / "series.ics"
    path.write_text(ics(daily_forever("forever")))
    cal = {"id": "series", "path": str(path), "past_days": 2, "horizon_days": 5, "interval_seconds": 0}
    async with chronos_app(plugins=PLUGINS, config=config(cal)) as app:
        c = await api_client(app, scopes=["events.read", "health.read"])
        run = await kit.sync_now(app, "ics", "series")
        # The window is [today - past_days, today + horizon_days + 1): 2 + 1 + 5 days, one instance each.
        assert (run.status, run.added, run.failed) == ("ok", 8, 0), run
        items = await events_of(c, "series")
        starts = [datetime.fromisoformat(e["start_utc"].replace("Z", "+00:00")) for e in items]
        assert [t.date() for t in starts] == [today() + timedelta(days=d) for d in range(-2, 6)]
        assert {t.hour for t in starts} == {9}
        assert {e["uid"] for e in items} == {"forever"}
        assert len({e["recurrence_id"] for e in items}) == 8
        assert (await sync_check(c))["calendars"]["ics/series"]["status"] == "ok"


async def test_an_endless_rrule_over_max_instances_fails_alone(chronos_app, api_client, tmp_path):
    path = tmp_path / "series.ics"
    path.write_text(ics(daily_forever("forever"), single("x", "Plain")))
    cal = {"id": "series", "path": str(path), "past_days": 2, "horizon_days": 5, "interval_seconds": 0}
    async with chronos_app(plugins=PLUGINS, config=config(cal, max_instances_per_event=50)) as app:
        c = await api_client(app, scopes=["events.read", "health.read"])
        assert (await kit.sync_now(app, "ics", "series")).added == 9  # 8 daily instances + the plain event

        # Now hourly and still endless: 8 days x 24 instances, far more than 50.
        path.write_text(ics(daily_forever("forever", "HOURLY"), single("x", "Plain renamed")))
        run = await kit.sync_now(app, "ics", "series")
        assert (run.status, run.failed, run.updated, run.deleted) == ("partial", 1, 1, 0), run
        [error] = run.errors
        assert error["uid"] == "forever" and error["stage"] == "source"
        assert "more than 50 instances inside the sync window" in error["message"]
        assert "ics.max_instances_per_event" in error["message"]
        items = await events_of(c, "series")
        # The series' last good instances stay; the other entry is updated.
        assert sorted(e["title"] for e in items) == ["Forever daily"] * 8 + ["Plain renamed"]

        check = await sync_check(c)
        assert check["status"] == "degraded" and "ics/series" in check["detail"], check
        shown = check["calendars"]["ics/series"]
        assert shown["status"] == "partial" and shown["error"], shown
