"""Keyword rules from the ``normalize.labels`` setting, end to end through the pipeline.

``test_stages.py`` checks the LabelEnricher as a function; here the rules come
from the app's configuration and events arrive through ``POST /api/v1/events``
(and an ICS sync), so a broken wiring between the settings section, the
``register_enrichers`` hook and the pipeline shows up.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from chronos import testing as kit
from chronos.testing import ConfigError

pytestmark = pytest.mark.exercises_hook("register_enrichers", "register_settings")

LABELS = [
    {"tag": "Deploy", "keywords": ["deploy", "roll out"]},  # default fields: title and description
    {"tag": "onsite", "keywords": ["HQ"], "fields": ["location"]},
]
START = "2030-03-04T12:00:00Z"


async def create(c, **body) -> dict:
    r = await c.post("/api/v1/events", json={"start": START, **body})
    assert r.status_code == 201, r.text
    return r.json()


async def test_configured_keywords_tag_created_events(chronos_app, api_client):
    async with chronos_app(plugins=["events", "normalize"], config={"normalize": {"labels": LABELS}}) as app:
        c = await api_client(app, scopes=["events.read", "events.write"])
        in_title = await create(c, title="DEPLOY web-1")
        in_description = await create(c, title="Release", description="We roll out at noon.")
        at_hq = await create(c, title="Visit", location="Berlin HQ")
        kept = await create(c, title="Planning #team", tags=["Work"])
        not_a_word = await create(c, title="Redeployment review")  # no whole-word match
        wrong_field = await create(c, title="HQ visit")  # "HQ" is only looked for in location
        nothing = await create(c, title="Lunch", description="sandwiches", location="canteen")

        assert in_title["tags"] == ["deploy"]
        assert in_description["tags"] == ["deploy"]
        assert at_hq["tags"] == ["onsite"]
        assert sorted(kept["tags"]) == ["team", "work"]
        assert not_a_word["tags"] == [] and wrong_field["tags"] == [] and nothing["tags"] == []

        # Stored, not only answered: the tag filter finds exactly the labelled events.
        r = await c.get(
            "/api/v1/events", params={"from": "2030-03-01T00:00:00Z", "to": "2030-03-08T00:00:00Z", "tag": "deploy"}
        )
        assert r.status_code == 200, r.text
        assert sorted(e["id"] for e in r.json()["items"]) == sorted([in_title["id"], in_description["id"]])


async def test_configured_keywords_tag_synced_events(chronos_app, api_client, tmp_path):
    day = datetime.now(UTC).date() + timedelta(days=1)
    stamp = day.strftime("%Y%m%d")
    path = tmp_path / "team.ics"
    path.write_text(
        "BEGIN:VCALENDAR\r\nVERSION:2.0\r\nPRODID:-//test//EN\r\n"
        f"BEGIN:VEVENT\r\nUID:d\r\nDTSTART:{stamp}T090000Z\r\nSUMMARY:Weekly sync\r\n"
        "DESCRIPTION:then we deploy the API\r\nEND:VEVENT\r\n"
        f"BEGIN:VEVENT\r\nUID:h\r\nDTSTART:{stamp}T100000Z\r\nSUMMARY:Review\r\nLOCATION:HQ\r\nEND:VEVENT\r\n"
        f"BEGIN:VEVENT\r\nUID:n\r\nDTSTART:{stamp}T110000Z\r\nSUMMARY:Deployed yesterday\r\nEND:VEVENT\r\n"
        "END:VCALENDAR\r\n"
    )
    config = {
        "normalize": {"labels": LABELS},
        "ics": {"calendars": [{"id": "team", "path": str(path), "interval_seconds": 0}], "parse_workers": 0},
    }
    async with chronos_app(plugins=["events", "normalize", "ics"], config=config) as app:
        run = await kit.sync_now(app, "ics", "team")
        assert (run.status, run.added) == ("ok", 3), run
        c = await api_client(app, scopes=["events.read"])
        r = await c.get(
            "/api/v1/events",
            params={"calendar_id": "team", "from": f"{day}T00:00:00Z", "to": f"{day + timedelta(days=1)}T00:00:00Z"},
        )
        assert {e["uid"]: e["tags"] for e in r.json()["items"]} == {"d": ["deploy"], "h": ["onsite"], "n": []}


async def test_without_rules_no_keyword_tags_are_added(chronos_app, api_client):
    async with chronos_app(plugins=["events", "normalize"]) as app:
        c = await api_client(app, scopes=["events.read", "events.write"])
        assert (await create(c, title="DEPLOY web-1", location="HQ"))["tags"] == []


@pytest.mark.backends("sqlite")  # configuration, not storage, is under test
async def test_an_invalid_rule_is_a_configuration_error(chronos_app):
    with pytest.raises(ConfigError) as caught:
        async with chronos_app(
            plugins=["events", "normalize"], config={"normalize": {"labels": [{"tag": "two words", "keywords": ["x"]}]}}
        ):
            pass
    assert "normalize.labels.0.tag" in str(caught.value), caught.value
