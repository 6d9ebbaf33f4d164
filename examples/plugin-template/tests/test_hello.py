"""The plugin's own tests, using the fixtures from chronos.testing."""


async def test_greets_with_configured_word(chronos_app, api_client):
    async with chronos_app(plugins=["hello"], config={"hello": {"greeting": "Moin"}}) as app:
        c = await api_client(app, scopes=["hello.write"])
        r = await c.post("/api/v1/hello", json={"name": "Ada"})
        assert r.status_code == 201, r.text
        assert r.json() == {"message": "Moin, Ada!", "times_greeted": 1}
        r = await c.post("/api/v1/hello", json={"name": "Ada"})
        assert r.json()["times_greeted"] == 2


async def test_requires_its_scope(chronos_app, api_client):
    async with chronos_app(plugins=["hello"]) as app:
        c = await api_client(app, scopes=["events.read"])
        r = await c.post("/api/v1/hello", json={"name": "Ada"})
        assert r.status_code == 403
        assert r.json()["required_scope"] == "hello.write"


async def test_rejects_empty_name(chronos_app, api_client):
    async with chronos_app(plugins=["hello"]) as app:
        c = await api_client(app, scopes=["hello.write"])
        r = await c.post("/api/v1/hello", json={"name": "  "})
        assert r.status_code == 422
        assert r.json()["errors"][0]["pointer"] == "/name"
