"""PATCH re-derives what the enrichers compute from an event's text (tags, sub-tasks)."""

from __future__ import annotations

from chronos import testing as kit
from chronos.plugin import EventDraft, EventIntake
from events_support import T0

PLUGINS = ["events", "normalize"]
WHEN = {"start": "2030-03-04T12:00:00Z", "end": "2030-03-04T13:00:00Z"}


async def _create(c, **body):
    r = await c.post("/api/v1/events", json={**WHEN, **body})
    assert r.status_code == 201, r.text
    return r.json()


async def _patch(c, eid, **body):
    r = await c.patch(f"/api/v1/events/{eid}", json=body)
    assert r.status_code == 200, r.text
    return r.json()


def _tasks(body):
    return [(t["text"], t["done"]) for t in body["sub_tasks"]]


def _ids(body):
    return {t["text"]: t["id"] for t in body["sub_tasks"]}


async def test_a_new_checklist_replaces_the_sub_tasks(chronos_app, api_client):
    async with chronos_app(plugins=PLUGINS) as app:
        c = await api_client(app, scopes=["events.write", "events.read"])
        created = await _create(c, title="Trip", description="[ ] a\n[x] b")
        eid = created["id"]
        assert _tasks(created) == [("a", False), ("b", True)] and created["all_done"] is False

        body = await _patch(c, eid, description="[x] only new task")
        assert _tasks(body) == [("only new task", True)]
        assert body["all_done"] is True and body["content_hash"] != created["content_hash"]
        assert (await c.get(f"/api/v1/events/{eid}")).json() == body

        # The new item can be unticked by id; the old ids are gone.
        new_id = body["sub_tasks"][0]["id"]
        body = await _patch(c, eid, sub_tasks=[{"id": new_id, "done": False}])
        assert _tasks(body) == [("only new task", False)] and body["all_done"] is False
        r = await c.patch(
            f"/api/v1/events/{eid}", json={"sub_tasks": [{"id": created["sub_tasks"][0]["id"], "done": True}]}
        )
        assert r.status_code == 422 and r.json()["errors"][0]["pointer"] == "/sub_tasks/0/id"

        # A description without a checklist leaves no sub-tasks.
        body = await _patch(c, eid, description="just prose")
        assert body["sub_tasks"] == [] and body["all_done"] is False
        assert [e["action"] for e in await kit.audit_entries(app, "event", eid)] == [
            "create",
            "update",
            "update",
            "update",
        ]


async def test_derived_tags_follow_the_title_and_description(chronos_app, api_client):
    async with chronos_app(plugins=PLUGINS) as app:
        c = await api_client(app, scopes=["events.write", "events.read"])
        created = await _create(c, title="T #one", description="see #notes", tags=["keep"])
        eid = created["id"]
        assert created["tags"] == ["keep", "notes", "one"]

        body = await _patch(c, eid, title="T #two")
        assert body["tags"] == ["keep", "notes", "two"]
        body = await _patch(c, eid, description="no tags here")
        assert body["tags"] == ["keep", "two"]
        found = (await c.get("/api/v1/events", params={"from": "2030-03-04T00:00:00Z", "tag": "two"})).json()
        assert [i["id"] for i in found["items"]] == [eid]
        gone = (await c.get("/api/v1/events", params={"from": "2030-03-04T00:00:00Z", "tag": "one"})).json()
        assert gone["items"] == []

        # Other fields do not touch the tags.
        body = await _patch(c, eid, location="Room 1")
        assert body["tags"] == ["keep", "two"]


async def test_explicit_fields_in_the_same_patch_win(chronos_app, api_client):
    async with chronos_app(plugins=PLUGINS) as app:
        c = await api_client(app, scopes=["events.write", "events.read"])
        created = await _create(c, title="T #one", description="[ ] a\n[ ] b")
        eid = created["id"]
        a = _ids(created)["a"]

        # Tags given with the new text are stored as given.
        body = await _patch(c, eid, title="T #three", tags=["mine"])
        assert body["tags"] == ["mine"] and body["title"] == "T #three"
        # A later text edit updates that explicit list like any other: what the old
        # text implied goes, what the new text implies comes, the rest stays.
        body = await _patch(c, eid, title="T #four")
        assert body["tags"] == ["four", "mine"]

        # Done flags given with the new text apply to the new checklist.
        body = await _patch(
            c, eid, description="[ ] a\n[ ] c", sub_tasks=[{"id": a, "done": True}], metadata={"k": "v"}
        )
        assert _tasks(body) == [("a", True), ("c", False)] and body["metadata"] == {"k": "v"}
        r = await c.patch(
            f"/api/v1/events/{eid}", json={"description": "[ ] d", "sub_tasks": [{"id": a, "done": True}]}
        )
        assert r.status_code == 422 and r.json()["errors"][0]["pointer"] == "/sub_tasks/0/id"
        assert _tasks((await c.get(f"/api/v1/events/{eid}")).json()) == [("a", True), ("c", False)]


async def test_done_state_is_kept_for_items_that_stay(chronos_app, api_client):
    async with chronos_app(plugins=PLUGINS) as app:
        c = await api_client(app, scopes=["events.write", "events.read"])
        created = await _create(c, title="List", description="[ ] a\n[ ] b\n[x] c")
        eid = created["id"]
        await _patch(c, eid, sub_tasks=[{"id": _ids(created)["a"], "done": True}])

        # a: ticked through the API, box unchanged in the text -> stays done;
        # c: the edit changed its box -> the text wins; d: new.
        body = await _patch(c, eid, description="[ ] a\n[ ] b\n[ ] c\n[ ] d")
        assert _tasks(body) == [("a", True), ("b", False), ("c", False), ("d", False)]
        assert _ids(body)["a"] == _ids(created)["a"]

        body = await _patch(c, eid, title="List #renamed")
        assert _tasks(body) == [("a", True), ("b", False), ("c", False), ("d", False)]

        body = await _patch(c, eid, description="[ ] b\n[x] d")
        assert _tasks(body) == [("b", False), ("d", True)]
        # An item that comes back is a new item: its old flag is forgotten.
        body = await _patch(c, eid, description="[ ] a\n[ ] b\n[x] d")
        assert _tasks(body) == [("a", False), ("b", False), ("d", True)] and body["all_done"] is False


async def test_a_resync_derives_from_the_local_text(chronos_app, api_client):
    async with chronos_app(plugins=PLUGINS) as app:
        intake = app.state.chronos.service(EventIntake)

        def draft(title, description):
            return EventDraft(uid="u1", start=T0, end=T0.replace(hour=10), title=title, description=description)

        [stored] = await intake.ingest("ics", "work", [draft("Sync #one", "[ ] a")])
        eid = stored.id
        c = await api_client(app, scopes=["events.write", "events.read"])
        body = await _patch(c, eid, description="[ ] x\n[ ] y #local")
        assert body["tags"] == ["local", "one"] and _tasks(body) == [("x", False), ("y #local", False)]
        await _patch(c, eid, sub_tasks=[{"id": _ids(body)["x"], "done": True}])

        # A new source version: its title shows, the local description stays and
        # the derived fields come from what the event shows.
        [again] = await intake.ingest("ics", "work", [draft("Sync #one #new", "[ ] a\n[ ] b #src")])
        assert again.id == eid
        body = (await c.get(f"/api/v1/events/{eid}")).json()
        assert body["title"] == "Sync #one #new" and body["description"] == "[ ] x\n[ ] y #local"
        assert body["tags"] == ["local", "new", "one"]
        assert _tasks(body) == [("x", True), ("y #local", False)]
