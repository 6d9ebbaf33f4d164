"""`chronos sync [--calendar] [--full]` with progress and counts, and `chronos sources`, against the fake server."""

from __future__ import annotations

import json

import pytest

from google_support import Fault, config, soon, timed
from kernel_support import db_config, invoke_cli_async, write_config

pytestmark = pytest.mark.exercises_hook("register_sources")


async def test_sync_and_sources(database, fake_google, tmp_path):
    for cal in ("team", "home"):
        fake_google.put_many(f"{cal}@group.calendar.google.com", [timed(f"{cal}{i}", soon(1 + i)) for i in range(30)])
    sections = config(fake_google, tmp_path, {"id": "team"}, {"id": "home", "interval_seconds": 0}, page_size=10)
    cfg = write_config(
        tmp_path / "chronos.yaml",
        db_config(database, plugins={"enabled": ["events", "normalize", "google"]}, **sections),
    )
    before = await invoke_cli_async("sources", config=cfg)
    assert before.returncode == 0, before.stderr
    assert before.stdout.startswith("sources: ") and "google (2 calendar(s), plugin google)" in before.stdout
    lines = {line.split()[0]: line for line in before.stdout.splitlines()[2:]}
    assert "never" in lines["google/team"] and "when the service starts" in lines["google/team"]
    assert "on demand" in lines["google/home"]

    run = await invoke_cli_async("sync", "--calendar", "team", "--progress", config=cfg)
    assert run.returncode == 0, run.stderr
    assert run.stdout.startswith("google/team: ok added=30 updated=0 unchanged=0 deleted=0 failed=0 in ")
    assert "google/home" not in run.stdout
    assert "] 1/1 done" in run.stderr and "items in" in run.stderr

    fake_google.requests.clear()
    fake_google.put("team@group.calendar.google.com", timed("team0", soon(2), summary="Changed"))
    run = await invoke_cli_async("sync", "--calendar", "team", "--json", config=cfg)
    [result] = json.loads(run.stdout)
    assert (result["status"], result["updated"], result["added"]) == ("ok", 1, 0)
    assert [bool(r["params"].get("syncToken")) for r in fake_google.list_requests()] == [True]

    fake_google.requests.clear()
    run = await invoke_cli_async("sync", "--calendar", "team", "--full", "--json", config=cfg)
    [result] = json.loads(run.stdout)
    assert (result["status"], result["unchanged"]) == ("ok", 30)
    assert not any(r["params"].get("syncToken") for r in fake_google.list_requests())

    fake_google.fail_next(*[Fault(503)] * 6)
    failed = await invoke_cli_async("sync", "--calendar", "team", config=cfg)
    assert failed.returncode == 1 and "google/team: error" in failed.stdout and "HTTP 503" in failed.stdout

    listing = await invoke_cli_async("sources", "--json", config=cfg)
    listed = json.loads(listing.stdout)
    assert {"name": "google", "plugin": "google", "calendars": 2} in listed["sources"]
    rows = {r["calendar_id"]: r for r in listed["calendars"]}
    assert rows["team"]["last_status"] == "error" and "HTTP 503" in rows["team"]["last_error"]
    assert rows["team"]["cursor_age_seconds"] is not None and rows["team"]["next_run"].startswith(("in ", "due"))
    assert rows["home"]["last_status"] is None and rows["home"]["next_run"] == "on demand"
    table = await invoke_cli_async("sources", config=cfg)
    assert "google/team" in table.stdout and "error" in table.stdout and "HTTP 503" in table.stdout
