"""Text the database cannot store is the client's to fix: a 422 problem, never a 500.

PostgreSQL keeps no NUL character (``\\u0000``) in text columns; SQLite does.
Whatever route the value came through, PostgreSQL's refusal is answered as a
422 ``unstorable-text`` problem and nothing of the request is stored.
"""

from __future__ import annotations

NUL_TITLE = "before\u0000after"


async def test_a_nul_character_is_a_422_on_postgresql_and_stored_on_sqlite(database, chronos_app, api_client):
    async with chronos_app(plugins=None) as app:
        c = await api_client(app, scopes=["admin"])
        event = {
            "calendar_id": "local",
            "title": NUL_TITLE,
            "start": "2026-01-01T10:00:00Z",
            "end": "2026-01-01T11:00:00Z",
        }
        whitelist = {"system": "s1", "action": "PING", "description": NUL_TITLE}
        answers = [await c.post("/api/v1/events", json=event), await c.post("/api/v1/whitelists", json=whitelist)]
        if database.backend == "postgresql":
            for r in answers:
                assert r.status_code == 422, r.text
                assert r.headers["content-type"].startswith("application/problem+json")
                assert r.json()["type"] == "urn:chronos:problem:unstorable-text"
            assert (await c.get("/api/v1/events", params={"text": "before"})).json()["items"] == []
            assert (await c.get("/api/v1/whitelists")).json()["items"] == []
        else:
            assert [r.status_code for r in answers] == [201, 201], [r.text for r in answers]
