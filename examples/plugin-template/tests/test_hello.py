"""The plugin's own tests, using the fixtures and helpers from chronos.testing."""

from chronos import testing as kit

from chronos_hello.service import GREETER


async def test_greets_with_configured_word(chronos_app, api_client):
    async with chronos_app(plugins=["hello"], config={"hello": {"greeting": "Moin"}}) as app:
        c = await api_client(app, scopes=["hello.write"])
        r = await c.post("/api/v1/hello", json={"name": "Ada"})
        assert r.status_code == 201, r.text
        assert r.json() == {"id": 1, "message": "Moin, Ada!", "times_greeted": 1}
        r = await c.post("/api/v1/hello", json={"name": "Ada"})
        assert r.json()["times_greeted"] == 2
        # The per-app Resource the kernel built for this app.
        assert kit.runtime_of(app).ctx.resource(GREETER).greeted == 2


async def test_requires_its_scope(chronos_app, api_client):
    async with chronos_app(plugins=["hello"]) as app:
        c = await api_client(app, scopes=["events.read"])
        r = await c.post("/api/v1/hello", json={"name": "Ada"})
        assert r.status_code == 403
        assert r.json()["required_scope"] == "hello.write"


async def test_rejects_empty_and_letterless_names(chronos_app, api_client):
    async with chronos_app(plugins=["hello"]) as app:
        c = await api_client(app, scopes=["hello.write"])
        r = await c.post("/api/v1/hello", json={"name": "  "})
        assert r.status_code == 422
        assert r.json()["errors"][0]["pointer"] == "/name"
        # The body's pattern (a name needs a letter) answers the same way.
        r = await c.post("/api/v1/hello", json={"name": "1234"})
        assert r.status_code == 422, r.text
        assert r.headers["content-type"].startswith("application/problem+json")
        assert r.json()["errors"][0]["pointer"] == "/name"


async def test_reads_a_greeting_or_answers_not_found(chronos_app, api_client):
    async with chronos_app(plugins=["hello"]) as app:
        writer = await api_client(app, scopes=["hello.write"])
        reader = await api_client(app, scopes=["hello.read"])
        gid = (await writer.post("/api/v1/hello", json={"name": "Grace"})).json()["id"]
        r = await reader.get(f"/api/v1/hello/greetings/{gid}")
        assert r.status_code == 200 and r.json()["name"] == "Grace"
        r = await reader.get("/api/v1/hello/greetings/999")
        assert r.status_code == 404 and r.json()["type"].endswith("not-found")


async def test_lists_greetings_newest_first_one_page_at_a_time(chronos_app, api_client):
    async with chronos_app(plugins=["hello"]) as app:
        writer = await api_client(app, scopes=["hello.write"])
        reader = await api_client(app, scopes=["hello.read"])
        for name in ("Ada", "Grace", "Linus"):
            await writer.post("/api/v1/hello", json={"name": name})
        first = (await reader.get("/api/v1/hello/greetings", params={"limit": 2})).json()
        assert [g["name"] for g in first["items"]] == ["Linus", "Grace"] and first["next_cursor"]
        rest = (await reader.get("/api/v1/hello/greetings", params={"cursor": first["next_cursor"]})).json()
        assert [g["name"] for g in rest["items"]] == ["Ada"] and rest["next_cursor"] is None
        r = await reader.get("/api/v1/hello/greetings", params={"cursor": "forged"})
        assert r.status_code == 400 and r.json()["type"].endswith("invalid-cursor")
        assert (await writer.get("/api/v1/hello/greetings")).status_code == 403


async def test_greetings_are_audited_with_their_origin(chronos_app, api_client):
    async with chronos_app(plugins=["hello"]) as app:
        c = await api_client(app, scopes=["hello.write"])
        gid = (await c.post("/api/v1/hello", json={"name": "Ada"})).json()["id"]
        [entry] = await kit.audit_entries(app, entity="hello_greeting", entity_id=gid)
        assert entry["action"] == "create" and entry["change"] == {"name": "Ada"}
        assert entry["actor"] and entry["request_id"]


async def test_migrations_match_the_models(chronos_app, database):
    async with chronos_app(plugins=["hello"]):
        assert await kit.schema_drift(database, ["hello_greetings"]) == []


async def test_serves_its_dashboard_panel(chronos_app):
    async with chronos_app(plugins=["hello"]) as app, kit.client(app) as c:
        r = await c.get("/ui/plugins/hello/panel.js")
        assert r.status_code == 200 and "javascript" in r.headers["content-type"]
        assert "export async function render(root, kit)" in r.text
        assert "default-src 'self'" in r.headers["content-security-policy"]
