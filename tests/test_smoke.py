async def test_boots_and_answers(chronos_app, api_client):
    async with chronos_app() as app:
        c = await api_client(app, scopes=["admin"])
        r = await c.get("/health")
        assert r.status_code in (200,), r.text
        body = r.json()
        assert body["checks"]["database"]["status"] == "ok"
        r = await c.get("/api/v1/plugins")
        assert r.status_code == 200
        r = await c.post("/api/v1/keys", json={"name": "x", "scopes": ["events.read"]})
        assert r.status_code == 201, r.text
        assert r.json()["secret"].startswith("chr_k_")
        r = await c.get("/api/v1/audit")
        assert r.status_code == 200 and r.json()["items"][0]["action"] == "create"
        r = await c.get("/nope")
        assert r.status_code == 404 and r.headers["content-type"] == "application/problem+json"
