"""The templates API end to end, on SQLite and PostgreSQL."""

from __future__ import annotations

from sqlalchemy import select

from chronos import testing as kit
from chronos.plugin import EventIntake, EventStore, Service, StoredEvent, hookimpl

WELCOME = {
    "name": "welcome",
    "type": "email",
    "description": "Sent when an account is created",
    "tags": ["onboarding", "account"],
    "variables_json": {
        "type": "object",
        "properties": {
            "name": {"type": "string"},
            "count": {"type": "integer", "minimum": 1},
            "team": {"type": "string", "default": "the team"},
        },
        "required": ["name"],
    },
    "content": {
        "subject": "Welcome, {{ name }}",
        "html": "<p>Hello {{ name }}</p>{% if count is defined %}<p>{{ count }} items</p>{% endif %}",
        "text": "Hello {{ name }} from {{ team }}",
    },
}


def email(name: str, **extra):
    return {"name": name, "type": "email", "content": {"subject": "S {{ x }}", "text": "T"}, **extra}


async def _audit(app, entity_id=None):
    return [(a["action"], a["change"]) for a in await kit.audit_entries(app, "template", entity_id)]


async def test_crud_roundtrip_with_audit(chronos_app, api_client):
    async with chronos_app(plugins=["templates"]) as app:
        c = await api_client(app, scopes=["templates.manage", "events.read"])
        r = await c.post("/api/v1/templates", json=WELCOME)
        assert r.status_code == 201, r.text
        t = r.json()
        assert r.headers["location"] == f"/api/v1/templates/{t['id']}"
        assert t["usage_count"] == 0 and t["last_used_at"] is None
        assert t["created_at"].endswith("Z")
        assert t["content"] == WELCOME["content"]

        r = await c.post("/api/v1/templates", json=WELCOME)
        assert r.status_code == 409 and r.json()["template_id"] == t["id"]

        r = await c.patch(f"/api/v1/templates/{t['id']}", json={"content": {"text": None}, "tags": ["x"]})
        assert r.status_code == 200, r.text
        assert "text" not in r.json()["content"] and r.json()["content"]["html"] == WELCOME["content"]["html"]
        assert r.json()["tags"] == ["x"]

        r = await c.put(f"/api/v1/templates/{t['id']}", json={**WELCOME, "name": "welcome-2"})
        assert r.status_code == 200 and r.json()["name"] == "welcome-2"
        assert (await c.get(f"/api/v1/templates/{t['id']}")).json()["content"]["text"] == WELCOME["content"]["text"]

        # Changing the type needs that type's content.
        r = await c.patch(f"/api/v1/templates/{t['id']}", json={"type": "event"})
        assert r.status_code == 422 and r.json()["errors"][0]["pointer"] == "/content"

        r = await c.delete(f"/api/v1/templates/{t['id']}")
        assert r.status_code == 204
        r = await c.get(f"/api/v1/templates/{t['id']}")
        assert r.status_code == 404 and r.headers["content-type"] == "application/problem+json"
        assert [a for a, _ in await _audit(app, t["id"])] == ["create", "update", "replace", "delete"]


async def test_scopes(chronos_app, api_client):
    async with chronos_app(plugins=["templates"]) as app:
        reader = await api_client(app, scopes=["events.read"])
        r = await reader.post("/api/v1/templates", json=WELCOME)
        assert r.status_code == 403 and r.json()["required_scope"] == "templates.manage"
        writer = await api_client(app, scopes=["templates.manage"])
        assert (await writer.get("/api/v1/templates")).status_code == 403
        assert (await reader.get("/api/v1/templates")).status_code == 200


async def test_syntax_error_on_save_has_line_and_column(chronos_app, api_client):
    async with chronos_app(plugins=["templates"]) as app:
        c = await api_client(app, scopes=["templates.manage"])
        bad = {**WELCOME, "content": {"subject": "ok", "html": "<p>\n  {{ name }\n</p>"}}
        r = await c.post("/api/v1/templates", json=bad)
        assert r.status_code == 422, r.text
        err = r.json()["errors"][0]
        assert err["pointer"] == "/content/html"
        assert (err["line"], err["column"]) == (2, 11)
        assert "line 2, column 11" in err["detail"]

        unclosed = {**WELCOME, "content": {"subject": "ok", "text": "a\n {% for x in y %}\n{{ x }}"}}
        err = (await c.post("/api/v1/templates", json=unclosed)).json()["errors"][0]
        assert (err["pointer"], err["line"], err["column"]) == ("/content/text", 2, 2)

        unknown_filter = {**WELCOME, "content": {"subject": "{{ name|shout }}", "text": "x"}}
        err = (await c.post("/api/v1/templates", json=unknown_filter)).json()["errors"][0]
        assert err["pointer"] == "/content/subject" and "shout" in err["detail"] and err["column"] == 9

        bad_schema = {**WELCOME, "variables_json": {"type": "nope"}}
        r = await c.post("/api/v1/templates", json=bad_schema)
        assert r.status_code == 422 and r.json()["errors"][0]["pointer"].startswith("/variables_json")

        no_body = {**WELCOME, "content": {"subject": "x"}}
        r = await c.post("/api/v1/templates", json=no_body)
        assert r.status_code == 422 and r.json()["errors"][0]["pointer"] == "/content"
        assert (await c.get("/api/v1/templates", headers={})).status_code == 403  # nothing else was written


async def test_injection_is_refused_on_save(chronos_app, api_client):
    attempts = [
        "{{ ''.__class__.__mro__ }}",
        "{{ ''['__class__'] }}",
        "{% import 'os' as os %}{{ os }}",
        "{% include 'x.html' %}",
        "{% extends 'base' %}",
        "{{ name.upper.__globals__ }}",
    ]
    async with chronos_app(plugins=["templates"]) as app:
        c = await api_client(app, scopes=["templates.manage"])
        for i, src in enumerate(attempts):
            r = await c.post("/api/v1/templates", json=email(f"evil-{i}", content={"subject": "x", "html": src}))
            assert r.status_code == 422, (src, r.text)
            err = r.json()["errors"][0]
            assert err["pointer"] == "/content/html" and err["line"] == 1 and err["column"] >= 1, err


async def test_render_preview_escaping_and_variables(chronos_app, api_client):
    async with chronos_app(plugins=["templates"]) as app:
        c = await api_client(app, scopes=["templates.manage", "events.read"])
        tid = (await c.post("/api/v1/templates", json=WELCOME)).json()["id"]
        r = await c.post(f"/api/v1/templates/{tid}/render", json={"variables": {"name": "<b>Ada</b>", "count": 2}})
        assert r.status_code == 200, r.text
        out = r.json()["output"]
        # Autoescape applies to the HTML part only.
        assert out["html"] == "<p>Hello &lt;b&gt;Ada&lt;/b&gt;</p><p>2 items</p>"
        assert out["subject"] == "Welcome, <b>Ada</b>"
        assert out["text"] == "Hello <b>Ada</b> from the team"  # the schema's default filled in

        r = await c.post(f"/api/v1/templates/{tid}/render", json={"variables": {"count": 0}})
        assert r.status_code == 422
        pointers = {e["pointer"]: e["detail"] for e in r.json()["errors"]}
        assert "/variables/name" in pointers and "/variables/count" in pointers

        # Without a schema entry, StrictUndefined still names the missing variable.
        loose = email("loose", content={"subject": "Hi {{ who }}", "text": "x"})
        lid = (await c.post("/api/v1/templates", json=loose)).json()["id"]
        r = await c.post(f"/api/v1/templates/{lid}/render", json={"variables": {}})
        assert r.status_code == 422 and r.json()["errors"][0]["pointer"] == "/variables/who"
        assert r.json()["type"] == "urn:chronos:problem:template-variables"

        # Nothing was used by previews.
        assert (await c.get(f"/api/v1/templates/{tid}")).json()["usage_count"] == 0


async def test_runaway_templates_end_in_422(chronos_app, api_client):
    bombs = {
        "forever": "{% for i in range(100000) %}{% for j in range(100000) %}{% endfor %}{% endfor %}",
        "huge-range": "{% for i in range(10**9) %}x{% endfor %}",
        "100mb": "{{ 'x' * 100000000 }}",
        "100mb-loop": "{% for i in range(100000) %}{{ 'x' * 1000 }}{% endfor %}",
        "set-block": "{% set s = 'a' * 500000 %}{% set b %}{% for i in range(100000) %}{{ s }}{% endfor %}{% endset %}{{ b|length }}",
        "doubling": "{% set ns = namespace(s='ab') %}{% for i in range(64) %}{% set ns.s = ns.s ~ ns.s %}{% endfor %}",
        "fan-out": "{% macro f(n) %}{% if n %}{{ f(n-1) }}{{ f(n-1) }}{% endif %}{% endmacro %}{{ f(40) }}",
        "center": "{{ 'x'|center(999999999) }}",
        "format-width": "{{ '{:>999999999}'.format(1) }}",
        "printf-width": "{{ '%999999999d' % 1 }}",
        "power": "{{ 7 ** 99999999 }}",
        "replace": "{% set s = 'a' * 100000 %}{{ s|replace('', s) }}",
        "join": "{% set s = 'a' * 100000 %}{{ range(50000)|join(s) }}",
        "attr-walk": "{{ (range(3)|map('string')).gi_frame }}",
    }
    config = {"templates": {"render_timeout_seconds": 0.5}}
    async with chronos_app(plugins=["templates"], config=config) as app:
        c = await api_client(app, scopes=["templates.manage", "events.read"])
        for name, src in bombs.items():
            r = await c.post("/api/v1/templates", json=email(name, content={"subject": "x", "html": src}))
            assert r.status_code == 201, (name, r.text)
            r = await c.post(f"/api/v1/templates/{r.json()['id']}/render", json={"variables": {}})
            assert r.status_code == 422, (name, r.text)
            body = r.json()
            assert body["errors"][0]["pointer"] == "/content/html", (name, body)
            assert body["type"] in ("urn:chronos:problem:template-limit", "urn:chronos:problem:template-unsafe"), body
        # The server is still fine afterwards.
        ok = (
            await c.post("/api/v1/templates", json=email("fine", content={"subject": "{{ 1 + 1 }}", "text": "t"}))
        ).json()
        r = await c.post(f"/api/v1/templates/{ok['id']}/render", json={"variables": {}})
        assert r.json()["output"]["subject"] == "2"


async def test_list_filters_search_sort_and_cursor(chronos_app, api_client):
    async with chronos_app(plugins=["templates"]) as app:
        c = await api_client(app, scopes=["templates.manage", "events.read", "events.write"])
        ids = {}
        for i in range(7):
            body = email(f"tpl-{i}", description=f"number {i}", tags=["even" if i % 2 == 0 else "odd", "Batch_1"])
            ids[i] = (await c.post("/api/v1/templates", json=body)).json()["id"]
        hook = {
            "name": "hook",
            "type": "webhook",
            "tags": ["even"],
            "content": {"url": "https://example.com/{{ x }}", "body": '{"v": {{ x|tojson }}}'},
        }
        ids["hook"] = (await c.post("/api/v1/templates", json=hook)).json()["id"]
        for _ in range(3):
            assert (await c.post(f"/api/v1/templates/{ids[5]}/use", json={"variables": {"x": 1}})).status_code == 200
        assert (await c.post(f"/api/v1/templates/{ids[2]}/use", json={"variables": {"x": 1}})).status_code == 200

        page = (await c.get("/api/v1/templates", params={"limit": 3})).json()
        usage_cursor = page["next_cursor"]
        assert [t["id"] for t in page["items"]][:2] == [ids[5], ids[2]]
        seen = [t["id"] for t in page["items"]]
        while page["next_cursor"]:
            page = (await c.get("/api/v1/templates", params={"limit": 3, "cursor": page["next_cursor"]})).json()
            seen += [t["id"] for t in page["items"]]
        assert sorted(seen) == sorted(ids.values()) and len(seen) == len(set(seen))

        names = []
        page = {"next_cursor": None}
        while True:
            params = {"sort": "name", "limit": 2, **({"cursor": page["next_cursor"]} if page["next_cursor"] else {})}
            page = (await c.get("/api/v1/templates", params=params)).json()
            names += [t["name"] for t in page["items"]]
            if not page["next_cursor"]:
                break
        assert names == sorted(names) and len(names) == 8

        got = (await c.get("/api/v1/templates", params={"type": "webhook"})).json()["items"]
        assert [t["name"] for t in got] == ["hook"]
        got = (await c.get("/api/v1/templates", params={"q": "EVEN number"})).json()["items"]
        assert sorted(t["name"] for t in got) == ["tpl-0", "tpl-2", "tpl-4", "tpl-6"]
        got = (await c.get("/api/v1/templates", params={"q": "odd 3"})).json()["items"]
        assert [t["name"] for t in got] == ["tpl-3"]
        # LIKE wildcards are literal.
        assert (await c.get("/api/v1/templates", params={"q": "batch_1"})).json()["items"]
        assert not (await c.get("/api/v1/templates", params={"q": "batch%1"})).json()["items"]

        for forged in ("nope", "eyJrIjoidGVtcGxhdGVzLnVzYWdlIiwidiI6WyJ4IiwxXX0", "x" * 3000):
            r = await c.get("/api/v1/templates", params={"cursor": forged})
            assert r.status_code in (400, 422), r.text
        # A cursor of the usage order is refused by the name order.
        r = await c.get("/api/v1/templates", params={"sort": "name", "cursor": usage_cursor})
        assert r.status_code == 400


async def test_variables_cheat_sheet(chronos_app, api_client):
    body = {
        "name": "order",
        "type": "email",
        "variables_json": {
            "type": "object",
            "properties": {"user": {"type": "object"}, "unused": {"type": "string"}},
            "required": ["user"],
        },
        "content": {
            "subject": "Order {{ order.id }} for {{ user.name }}",
            "html": "{% for item in order['items'] %}{{ item.name }}{% endfor %}{{ user.address.city }}",
        },
    }
    async with chronos_app(plugins=["templates"]) as app:
        c = await api_client(app, scopes=["templates.manage", "events.read"])
        tid = (await c.post("/api/v1/templates", json=body)).json()["id"]
        r = await c.get(f"/api/v1/templates/{tid}/variables")
        assert r.status_code == 200, r.text
        v = {x["name"]: x for x in r.json()["variables"]}
        assert set(v) == {"order", "user", "unused"}
        assert v["user"]["paths"] == ["user.address.city", "user.name"]
        assert v["user"]["used_in"] == ["subject", "html"] and v["user"]["required"] and v["user"]["declared"]
        assert v["user"]["schema"] == {"type": "object"}
        assert v["order"]["paths"] == ["order.id", "order.items"] and not v["order"]["declared"]
        assert v["unused"]["used_in"] == []
        assert r.json()["undeclared"] == ["order"] and r.json()["unused"] == ["unused"]


async def test_export_import_roundtrip(chronos_app, api_client):
    async with chronos_app(plugins=["templates"]) as app:
        c = await api_client(app, scopes=["templates.manage", "events.read"])
        await c.post("/api/v1/templates", json=WELCOME)
        await c.post("/api/v1/templates", json=email("other"))
        r = await c.get("/api/v1/templates/export")
        assert r.status_code == 200 and "attachment" in r.headers["content-disposition"]
        doc = r.json()
        assert doc["format"] == "chronos.templates" and [t["name"] for t in doc["templates"]] == ["other", "welcome"]
        assert "id" not in doc["templates"][0]

        assert (await c.get("/api/v1/templates/export", params={"ids": 2**70})).status_code == 422
        only = (await c.get("/api/v1/templates/export", params={"ids": [1]})).json()["templates"]
        assert [t["name"] for t in only] == ["welcome"]

        r = await c.post("/api/v1/templates/import", json=doc)
        assert r.status_code == 409 and r.json()["names"] == ["other", "welcome"]
        r = await c.post("/api/v1/templates/import", params={"on_conflict": "skip"}, json=doc)
        assert r.json() == {"created": [], "replaced": [], "skipped": ["other", "welcome"]}

        doc["templates"][0]["description"] = "changed"
        doc["templates"].append({**doc["templates"][1], "name": "welcome-copy"})
        r = await c.post("/api/v1/templates/import", params={"on_conflict": "replace"}, json=doc)
        assert r.json() == {"created": ["welcome-copy"], "replaced": ["other", "welcome"], "skipped": []}
        items = (await c.get("/api/v1/templates", params={"sort": "name"})).json()["items"]
        assert [(t["name"], t["description"]) for t in items][0] == ("other", "changed")
        assert len(items) == 3

        # All or nothing: one broken template stops the whole import.
        broken = {"templates": [email("new-1"), email("new-2", content={"subject": "{{ x", "text": "t"})]}
        r = await c.post("/api/v1/templates/import", json=broken)
        assert r.status_code == 422 and r.json()["errors"][0]["pointer"] == "/templates/1/content/subject"
        assert len((await c.get("/api/v1/templates")).json()["items"]) == 3


async def test_use_records_usage_and_is_idempotent(chronos_app, api_client):
    async with chronos_app(plugins=["templates"]) as app:
        c = await api_client(app, scopes=["templates.manage", "events.read", "events.write"])
        tid = (await c.post("/api/v1/templates", json=WELCOME)).json()["id"]
        body = {"variables": {"name": "Ada"}, "context": {"source": "dashboard"}}
        h = {"Idempotency-Key": "use-1"}
        r1 = await c.post(f"/api/v1/templates/{tid}/use", json=body, headers=h)
        assert r1.status_code == 200, r1.text
        assert r1.json()["output"]["subject"] == "Welcome, Ada" and r1.json()["event"] is None
        assert r1.json()["usage"]["context"] == {"source": "dashboard"}
        r2 = await c.post(f"/api/v1/templates/{tid}/use", json=body, headers=h)
        assert r2.status_code == 200 and r2.json() == r1.json() and r2.headers["idempotency-replayed"] == "true"
        r3 = await c.post(f"/api/v1/templates/{tid}/use", json={**body, "context": {}}, headers=h)
        assert r3.status_code == 409
        t = (await c.get(f"/api/v1/templates/{tid}")).json()
        assert t["usage_count"] == 1 and t["last_used_at"].endswith("Z")
        from chronos_templates.models import TemplateUsage

        async with app.state.chronos.db.read() as s:
            rows = (await s.execute(select(TemplateUsage))).scalars().all()
        assert [(u.template_id, u.context) for u in rows] == [(tid, {"source": "dashboard"})]
        assert rows[0].key_id and rows[0].key_id.startswith("k_")
        assert ("use", {"usage_id": rows[0].id, "event_id": None}) in await _audit(app, tid)


EVENT_TPL = {
    "name": "standup",
    "type": "event",
    "variables_json": {"type": "object", "properties": {"team": {"type": "string"}}, "required": ["team"]},
    "content": {
        "title": "Standup {{ team }}",
        "description": "Daily sync of {{ team }}",
        "duration_minutes": 15,
        "time_of_day": "09:30",
        "timezone": "Europe/Berlin",
        "calendar": "work",
        "tags": ["meeting", "{{ team|lower }}"],
        "subtasks": ["Yesterday", "Today for {{ team }}"],
    },
}


async def test_event_template_without_events_plugin_is_503(chronos_app, api_client):
    async with chronos_app(plugins=["templates"]) as app:
        c = await api_client(app, scopes=["templates.manage", "events.write"])
        tid = (await c.post("/api/v1/templates", json=EVENT_TPL)).json()["id"]
        r = await c.post(f"/api/v1/templates/{tid}/use", json={"variables": {"team": "Ops"}, "date": "2026-03-02"})
        assert r.status_code == 503 and r.json()["plugin"] == "events"
        async with app.state.chronos.db.read() as s:
            from chronos_templates.models import TemplateUsage

            assert (await s.execute(select(TemplateUsage))).scalars().all() == []


class RecordingIntake(EventIntake):
    """A stand-in for the events pipeline that records what it was asked to ingest."""

    def __init__(self) -> None:
        self.calls: list = []
        self.stored: dict = {}

    async def ingest(self, source, calendar_id, drafts, *, actor=None, session=None, principal=None):
        from datetime import UTC, date, datetime, timedelta

        from chronos.plugin import CanonicalEvent

        out = []
        for d in drafts:
            self.calls.append((source, calendar_id, d, actor, session))
            all_day = isinstance(d.start, date) and not isinstance(d.start, datetime)
            start = datetime.combine(d.start, datetime.min.time(), UTC) if all_day else d.start
            end = datetime.combine(d.end, datetime.min.time(), UTC) if all_day else d.end
            ev = CanonicalEvent(
                source=source,
                calendar_id=calendar_id,
                uid=d.uid,
                title=d.title,
                description=d.description,
                start_utc=start,
                end_utc=end or start + timedelta(hours=1),
                all_day=all_day,
                start_date=d.start if all_day else None,
                end_date=d.end if all_day else None,
                timezone=d.timezone,
                tags=d.tags,
                metadata=d.metadata,
            )
            key = (source, calendar_id, d.uid)
            event_id = self.stored.setdefault(key, len(self.stored) + 1)
            now = datetime.now(UTC)
            out.append(
                StoredEvent(id=event_id, event=ev, content_hash=ev.content_hash(), created_at=now, updated_at=now)
            )
        return out


def intake_plugin(intake: RecordingIntake):
    class FakeEvents:
        @hookimpl
        def register_services(self):
            # The route only needs an event store to exist; the intake does the work.
            return [
                Service("test.intake", EventIntake, lambda ctx: intake),
                Service("test.store", EventStore, lambda ctx: object()),
            ]

    return ("fake_events", FakeEvents())


async def test_event_template_creates_event_through_the_intake(chronos_app, api_client):
    intake = RecordingIntake()
    async with chronos_app(plugins=["templates", intake_plugin(intake)]) as app:
        c = await api_client(app, scopes=["templates.manage", "events.write"])
        tid = (await c.post("/api/v1/templates", json=EVENT_TPL)).json()["id"]
        h = {"Idempotency-Key": "standup-2026-03-02"}
        body = {"variables": {"team": "Ops"}, "date": "2026-03-02", "context": {"via": "test"}}
        r = await c.post(f"/api/v1/templates/{tid}/use", json=body, headers=h)
        assert r.status_code == 200, r.text
        event = r.json()["event"]
        # 09:30 in Berlin (CET, +01:00) is 08:30 UTC; 15 minutes long.
        assert event["start_utc"] == "2026-03-02T08:30:00Z" and event["end_utc"] == "2026-03-02T08:45:00Z"
        assert event["title"] == "Standup Ops" and event["calendar_id"] == "work" and event["source"] == "local"
        assert event["tags"] == ["meeting", "ops"]
        assert event["description"] == "Daily sync of Ops\n\n[ ] Yesterday\n[ ] Today for Ops"
        assert event["metadata"] == {"template_id": tid, "template_name": "standup"}
        source, calendar, draft, actor, session = intake.calls[0]
        assert actor and actor.startswith("k_") and draft.timezone == "Europe/Berlin"
        assert session is not None  # the event commits with the usage row

        again = await c.post(f"/api/v1/templates/{tid}/use", json=body, headers=h)
        assert again.json() == r.json() and len(intake.calls) == 1

        # A start with an offset wins over the template's time of day; all-day without time_of_day.
        r = await c.post(
            f"/api/v1/templates/{tid}/use",
            json={"variables": {"team": "Dev"}, "start": "2026-07-01T14:00:00-04:00", "calendar": "home"},
        )
        assert r.json()["event"]["start_utc"] == "2026-07-01T18:00:00Z" and r.json()["event"]["calendar_id"] == "home"
        assert intake.calls[-1][2].uid != intake.calls[0][2].uid
        r = await c.post(f"/api/v1/templates/{tid}/use", json={"variables": {"team": "Dev"}})
        assert r.status_code == 422 and r.json()["errors"][0]["pointer"] == "/start"
        r = await c.post(
            f"/api/v1/templates/{tid}/use", json={"variables": {"team": "Dev"}, "start": "2026-07-01T14:00:00"}
        )
        assert r.status_code == 422
        r = await c.post(
            f"/api/v1/templates/{tid}/use", json={"variables": {"team": "Dev"}, "start": "9999-12-31T23:59:00Z"}
        )
        assert r.status_code == 422 and r.json()["errors"][0]["pointer"] == "/start"
        assert (await c.get(f"/api/v1/templates/{tid}", headers={})).status_code == 403  # events.read not granted


async def test_test_send_without_mail_plugin_is_503(chronos_app, api_client):
    async with chronos_app(plugins=["templates"]) as app:
        c = await api_client(app, scopes=["templates.manage", "mail.send"])
        tid = (await c.post("/api/v1/templates", json=WELCOME)).json()["id"]
        r = await c.post(
            f"/api/v1/templates/{tid}/test-send", json={"to": "ada@example.com", "variables": {"name": "A"}}
        )
        assert r.status_code == 503 and r.json()["plugin"] == "mail"
