"""A new conflict is published once per pair as ``event.conflict`` through the outbox."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import sqlalchemy as sa

from chronos import testing as kit
from chronos.plugin import CalendarSpec, DeliveryResult, DeliveryTarget, EventDraft, hookimpl
from planning_support import PLUGINS, config

T = datetime(2030, 3, 4, 9, 0, tzinfo=UTC)
H = timedelta(hours=1)


async def _published(app) -> list[tuple[str, list[int], str]]:
    async with kit.runtime_of(app).ctx.db.read() as s:
        rows = await s.execute(
            sa.text(
                "SELECT event_type, payload, dedupe_key FROM webhooks_outbox WHERE event_type = 'event.conflict' ORDER BY id"
            )
        )
        out = []
        for event_type, payload, key in rows.all():
            payload = payload if isinstance(payload, dict) else json.loads(payload)
            out.append((event_type, payload["event_ids"], key))
        return out


class Listener(DeliveryTarget):
    """A subscriber, so the outbox keeps the messages (it drops those nobody subscribed to)."""

    name = "listener"
    event_types = ("event.conflict",)

    async def deliver(self, delivery):
        return DeliveryResult.delivered(200)


class ListenerPlugin:
    @hookimpl
    def register_delivery_targets(self):
        return [Listener()]


async def test_one_notification_per_new_pair(chronos_app):
    source = kit.FakeSource([CalendarSpec("ext", read_only=True)])
    plugins = [*PLUGINS, "webhooks", kit.fake_source_plugin(source), ("listener", ListenerPlugin())]
    async with chronos_app(plugins=plugins, config=config()) as app:
        source.add(EventDraft(uid="a", start=T, end=T + 2 * H, title="Planned", mode="auto-plan"), calendar="ext")
        source.add(EventDraft(uid="b", start=T + H, end=T + 3 * H, title="Busy"), calendar="ext")
        await kit.sync_now(app, "fake", "ext")
        [(kind, ids, key)] = await _published(app)
        assert kind == "event.conflict" and key == f"conflict:{ids[0]}:{ids[1]}"
        # still conflicting after a move, gone and back again: no second message for the pair
        for start in (T + H / 2, T + 5 * H, T + H):
            source.add(EventDraft(uid="b", start=start, end=start + 2 * H, title="Busy"), calendar="ext")
            await kit.sync_now(app, "fake", "ext")
        assert len(await _published(app)) == 1
        # a third event overlapping both: one message per new pair (the planned one and the busy one)
        source.add(
            EventDraft(uid="c", start=T + H, end=T + 90 * timedelta(minutes=1), title="Plan 2", mode="auto-plan"),
            calendar="ext",
        )
        await kit.sync_now(app, "fake", "ext")
        got = await _published(app)
        assert len(got) == 3
        assert len({tuple(ids) for _, ids, _ in got}) == 3


async def test_pairs_nobody_takes_are_neither_published_nor_marked(chronos_app, api_client):
    """With the outbox but no subscriber for event.conflict, pairs are kept and nothing is enqueued;
    once an endpoint takes the type, the next new pair is announced (and only that one)."""
    source = kit.FakeSource([CalendarSpec("ext", read_only=True)])
    plugins = [*PLUGINS, "webhooks", kit.fake_source_plugin(source)]
    cfg = {**config(), "network": {"allow": ["127.0.0.1/32"]}}
    async with chronos_app(plugins=plugins, config=cfg) as app:
        source.add(EventDraft(uid="a", start=T, end=T + 2 * H, title="Planned", mode="auto-plan"), calendar="ext")
        source.add(EventDraft(uid="b", start=T + H, end=T + 3 * H, title="Busy"), calendar="ext")
        await kit.sync_now(app, "fake", "ext")
        c = await api_client(app, scopes=["webhooks.manage", "events.read"])
        r = await c.get("/api/v1/conflicts", params={"from": "2030-03-04T00:00:00Z", "to": "2030-03-05T00:00:00Z"})
        assert len(r.json()["items"]) == 1  # the pair is kept
        assert await _published(app) == []
        async with kit.runtime_of(app).ctx.db.read() as s:
            assert (await s.execute(sa.text("SELECT COUNT(*) FROM planning_published"))).scalar() == 0
        r = await c.post("/api/v1/webhooks", json={"url": "http://127.0.0.1:9/hook", "event_types": ["event.conflict"]})
        assert r.status_code == 201, r.text
        source.add(EventDraft(uid="c", start=T + 2 * H, end=T + 4 * H, title="Later"), calendar="ext")
        await kit.sync_now(app, "fake", "ext")  # c overlaps b only: free with free, no pair
        source.add(EventDraft(uid="d", start=T, end=T + H, title="Early"), calendar="ext")
        await kit.sync_now(app, "fake", "ext")  # d overlaps the planned a: one new pair
        [(_, ids, _)] = await _published(app)
        assert len(ids) == 2


async def _announced_by_one_sync(chronos_app) -> list[tuple[str, dict]]:
    source = kit.FakeSource([CalendarSpec("ext", read_only=True)])
    plugins = [*PLUGINS, "webhooks", kit.fake_source_plugin(source), ("listener", ListenerPlugin())]
    async with chronos_app(plugins=plugins, config=config()) as app:
        for i, (start, hours, mode) in enumerate(
            [(0, 2, "auto-plan"), (1, 2, None), (1, 1, "auto-plan"), (5, 1, None)]
        ):
            source.add(
                EventDraft(uid=f"e{i}", start=T + start * H, end=T + (start + hours) * H, title=f"E{i}", mode=mode),
                calendar="ext",
            )
        assert (await kit.sync_now(app, "fake", "ext")).status == "ok"
        async with kit.runtime_of(app).ctx.db.read() as s:
            rows = await s.execute(
                sa.text("SELECT dedupe_key, payload FROM webhooks_outbox WHERE event_type = 'event.conflict'")
            )
            return sorted((k, p if isinstance(p, dict) else json.loads(p)) for k, p in rows.all())


async def test_new_pairs_written_in_sql_are_announced_like_the_others(chronos_app, monkeypatch):
    from chronos_planning import conflicts

    in_sql = await _announced_by_one_sync(chronos_app)
    monkeypatch.setattr(conflicts, "NEW_PAIRS_IN_SQL", False)
    in_python = await _announced_by_one_sync(chronos_app)
    assert len(in_sql) == 3  # e0-e1, e0-e2, e1-e2; e3 stands alone
    assert in_sql == in_python
    first = in_sql[0][1]
    assert first["overlap"] == {"start": "2030-03-04T10:00:00Z", "end": "2030-03-04T11:00:00Z"}
    assert [e["title"] for e in first["events"]] == ["E0", "E1"]
