"""Analytics and text search on GET /api/v1/events: computed in SQL, in a bounded window, under a time budget."""

from __future__ import annotations

from datetime import timedelta

from chronos.plugin import EventStore
from events_support import T0, apply, ev, z

from chronos_events import query

PLUGINS = ["events"]


async def test_analytics_are_computed_in_sql_over_a_bounded_window(chronos_app, api_client, monkeypatch):
    monkeypatch.setattr(query, "busy_minutes", None, raising=False)  # no Python merge of intervals
    async with chronos_app(plugins=PLUGINS, config={"events": {"query_max_window_days": 30}}) as app:
        await apply(
            app,
            [
                ev("a", T0, 60),
                ev("b", T0 + timedelta(minutes=30), 60),  # overlaps a: 90 minutes together
                ev("c", T0 + timedelta(minutes=90), 30),  # touches b's end: 120 in all
                ev("free", T0 + timedelta(hours=5), 60, transparency="free"),
                ev("edge", T0 + timedelta(days=2) - timedelta(minutes=15), 60),  # clipped to 15
                ev("far", T0 + timedelta(days=40), 60, title="budget far"),
            ],
        )
        c = await api_client(app, scopes=["events.read"])
        params = {"from": z(T0), "to": z(T0 + timedelta(days=2)), "analytics": "true"}
        a = (await c.get("/api/v1/events", params=params)).json()["analytics"]
        assert a["total"] == 5 and a["busy_minutes"] == 135
        assert a["window"] == {"from": z(T0), "to": z(T0 + timedelta(days=2))}
        # an open window is closed 30 days after `from`: "far" is outside
        r = await c.get("/api/v1/events", params={"from": z(T0), "analytics": "true"})
        assert r.status_code == 200, r.text
        assert r.json()["analytics"]["total"] == 5
        assert r.json()["analytics"]["window"]["to"] == z(T0 + timedelta(days=30))
        # a longer window than allowed is a 422 that says what to narrow
        for extra in ({"analytics": "true"}, {"text": "budget"}):
            r = await c.get("/api/v1/events", params={"from": z(T0), "to": z(T0 + timedelta(days=31)), **extra})
            assert r.status_code == 422 and r.json()["errors"][0]["pointer"] == "/query/to", r.text
            assert "narrow" in r.json()["detail"]
        # text search without `to` looks 30 days ahead of `from`
        r = await c.get("/api/v1/events", params={"from": z(T0), "text": "budget"})
        assert r.status_code == 200 and r.json()["items"] == []
        r = await c.get("/api/v1/events", params={"from": z(T0 + timedelta(days=20)), "text": "budget"})
        assert [i["uid"] for i in r.json()["items"]] == ["far"]


async def test_a_query_over_its_time_budget_is_a_503_that_says_what_to_narrow(chronos_app, api_client):
    async with chronos_app(plugins=PLUGINS, config={"events": {"query_timeout_ms": 1}}) as app:
        ctx = app.state.chronos
        store = ctx.service(EventStore)
        events = [
            ev(f"e{i}", T0 + timedelta(minutes=7 * i), 30 + i % 50, title=f"meeting number {i}", tags=[f"t{i % 40}"])
            for i in range(30_000)
        ]
        async with ctx.db.write() as s:
            await store.insert_many(s, events)
        c = await api_client(app, scopes=["events.read"])
        window = {"from": z(T0), "to": z(T0 + timedelta(days=300))}
        for extra in ({"analytics": "true"}, {"text": "meeting", "limit": 500}):
            r = await c.get("/api/v1/events", params={**window, **extra})
            assert r.status_code == 503, (extra, r.status_code, r.text[:200])
            assert r.headers["content-type"].startswith("application/problem+json")
            assert r.json()["type"].endswith("query-budget-exceeded") and "narrow the window" in r.json()["detail"]
        # the connections work again afterwards (no handler or timeout left behind)
        r = await c.get("/api/v1/events", params={"from": z(T0), "to": z(T0 + timedelta(hours=1))})
        assert r.status_code == 200 and len(r.json()["items"]) == 9
