"""GET /api/v1/events without ``limit``: pages of 50 (the documented default), on every query path."""

from __future__ import annotations

from datetime import timedelta

import pytest

from events_support import T0, apply, ev, z

PLUGINS = ["events"]
M = timedelta(minutes=30)
WINDOW = {"from": z(T0 - M), "to": z(T0 + 100 * M)}


async def page(c, **params) -> dict:
    r = await c.get("/api/v1/events", params=params)
    assert r.status_code == 200, r.text
    return r.json()


@pytest.mark.parametrize(
    "extra", [{}, {"analytics": "true"}, {"calendar_id": "work", "tag": "t"}], ids=["window", "analytics", "filtered"]
)
async def test_sixty_events_make_a_page_of_fifty_then_ten(chronos_app, api_client, extra):
    async with chronos_app(plugins=PLUGINS) as app:
        # 60 events inside the window (every 30 minutes), plus one just outside.
        await apply(
            app,
            [ev(f"e{i:02}", T0 + i * M, 15, tags=["t"]) for i in range(60)]
            + [ev("outside", T0 + 120 * M, 15, tags=["t"])],
        )
        c = await api_client(app, scopes=["events.read"])

        first = await page(c, **WINDOW, **extra)
        assert len(first["items"]) == 50, len(first["items"])
        assert first["next_cursor"], "a truncated page must offer the next one"
        assert [e["uid"] for e in first["items"]] == [f"e{i:02}" for i in range(50)]

        second = await page(c, **WINDOW, **extra, cursor=first["next_cursor"])
        assert [e["uid"] for e in second["items"]] == [f"e{i:02}" for i in range(50, 60)]
        assert second["next_cursor"] is None
        if "analytics" in extra:
            assert first["analytics"]  # still the analytics path, counted over every match


async def test_the_default_also_applies_without_a_window(chronos_app, api_client):
    async with chronos_app(plugins=PLUGINS) as app:
        # T0 lies in the future: the default direction (future, from now) lists all 60.
        await apply(app, [ev(f"e{i:02}", T0 + i * M, 15) for i in range(60)])
        c = await api_client(app, scopes=["events.read"])
        first = await page(c)
        assert len(first["items"]) == 50 and first["next_cursor"]
        second = await page(c, cursor=first["next_cursor"])
        assert len(second["items"]) == 10 and second["next_cursor"] is None
        assert {e["uid"] for e in first["items"] + second["items"]} == {f"e{i:02}" for i in range(60)}
