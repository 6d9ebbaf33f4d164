"""Publishing in the caller's transaction and delivering to a real receiver, on SQLite and PostgreSQL."""

from __future__ import annotations

import json
import time

from sqlalchemy import func, select

from chronos.plugin import webhook_signing
from chronos.testing import audit_entries
from webhooks_support import PLUGINS, Reply, dispatch, publish, webhooks_config

from chronos_webhooks.models import OutboxRow


async def create(c, url, **extra):
    r = await c.post("/api/v1/webhooks", json={"url": url, **extra})
    assert r.status_code == 201, r.text
    return r.json()


def check_signed(received, secret):
    webhook_id, _ = webhook_signing.verify(
        [webhook_signing.secret_key(secret)], received.headers, received.body, now=time.time(), tolerance=300
    )
    return webhook_id


async def test_a_committed_message_is_delivered_signed_and_a_rollback_publishes_nothing(
    chronos_app, api_client, receiver
):
    async with chronos_app(plugins=PLUGINS, config=webhooks_config()) as app:
        c = await api_client(app, scopes=["webhooks.manage"])
        ep = await create(c, receiver.url, event_types=["test.*"])
        assert ep["secret"].startswith("whsec_") and ep["secrets"][0]["prefix"] == ep["secret"][:12]
        assert "secret" not in (await c.get(f"/api/v1/webhooks/{ep['id']}")).json()

        await publish(app, n=7, rollback=True)
        async with app.state.chronos.db.read() as s:
            assert (await s.execute(select(func.count()).select_from(OutboxRow))).scalar() == 0

        await publish(app, n=8)
        await dispatch(app)
        assert len(receiver.received) == 1
        got = receiver.received[0]
        body = json.loads(got.body)
        assert body["type"] == "test.pinged" and body["data"] == {"n": 8} and body["timestamp"].endswith("Z")
        assert got.headers["content-type"] == "application/json"
        webhook_id = check_signed(got, ep["secret"])
        assert webhook_id.startswith("msg_") and got.headers["x-timestamp"] == got.headers["webhook-timestamp"]

        attempts = (await c.get(f"/api/v1/webhooks/{ep['id']}/deliveries")).json()["items"]
        assert [(a["outcome"], a["status_code"], a["webhook_id"]) for a in attempts] == [("delivered", 200, webhook_id)]
        assert attempts[0]["latency_ms"] >= 0 and attempts[0]["response_excerpt"] == "ok"
        assert [e["action"] for e in await audit_entries(app, "webhook_endpoint")] == ["create"]


async def test_filters_by_type_prefix_and_exact(chronos_app, api_client, receiver):
    async with chronos_app(plugins=PLUGINS, config=webhooks_config()) as app:
        c = await api_client(app, scopes=["webhooks.manage"])
        await create(c, receiver.url, event_types=["test.other"])
        await create(c, receiver.url + "?all", event_types=["*"])
        await create(c, receiver.url + "?none", event_types=["event.*"])
        await publish(app, "test.pinged", 1)
        await publish(app, "test.other", 2)
        await dispatch(app)
        got = sorted((r.path, json.loads(r.body)["data"]["n"]) for r in receiver.received)
        assert got == [("/hook", 2), ("/hook?all", 1), ("/hook?all", 2)]


async def test_a_receiver_failing_twice_then_succeeding(chronos_app, api_client, receiver):
    receiver.replies = [Reply(500), Reply(503, headers={"Retry-After": "0"}), Reply(200)]
    async with chronos_app(plugins=PLUGINS, config=webhooks_config()) as app:
        c = await api_client(app, scopes=["webhooks.manage"])
        ep = await create(c, receiver.url)
        await publish(app)
        await dispatch(app)
        assert len(receiver.received) == 3
        ids = {r.headers["webhook-id"] for r in receiver.received}
        assert len(ids) == 1  # one message, one id across retries
        attempts = (await c.get(f"/api/v1/webhooks/{ep['id']}/deliveries")).json()["items"]
        assert [(a["attempt"], a["outcome"], a["status_code"]) for a in attempts] == [
            (3, "delivered", 200),
            (2, "retry", 503),
            (1, "retry", 500),
        ]
        (d,) = (await c.get("/api/v1/outbox/deliveries")).json()["items"]
        assert d["status"] == "delivered" and d["attempts"] == 3


async def test_retries_exhausted_become_a_dead_letter_and_replay_keeps_the_webhook_id(
    chronos_app, api_client, receiver
):
    receiver.default = Reply(500)
    async with chronos_app(plugins=PLUGINS, config=webhooks_config()) as app:
        c = await api_client(app, scopes=["webhooks.manage"])
        await create(c, receiver.url)
        await publish(app)
        await dispatch(app)
        assert len(receiver.received) == 4  # the first attempt and three retries
        (dead,) = (await c.get("/api/v1/outbox/dead")).json()["items"]
        assert dead["status"] == "dead" and dead["attempts"] == 4 and "after 4 attempts" in dead["last_error"]
        health = (await c.get("/health")).json()

        receiver.default = Reply(204)
        r = await c.post(f"/api/v1/outbox/dead/{dead['id']}/replay")
        assert r.status_code == 202 and r.json()["status"] == "pending"
        await dispatch(app)
        assert receiver.received[-1].headers["webhook-id"] == dead["webhook_id"]
        assert (await c.get("/api/v1/outbox/dead")).json()["items"] == []
        assert (await c.post(f"/api/v1/outbox/dead/{dead['id']}/replay")).status_code == 404
    assert health is not None


async def test_410_gone_disables_the_endpoint(chronos_app, api_client, receiver):
    receiver.default = Reply(410)
    async with chronos_app(plugins=PLUGINS, config=webhooks_config()) as app:
        c = await api_client(app, scopes=["webhooks.manage"])
        ep = await create(c, receiver.url)
        await publish(app, n=1)
        await dispatch(app)
        got = (await c.get(f"/api/v1/webhooks/{ep['id']}")).json()
        assert got["enabled"] is False and "410" in got["disabled_reason"]
        await publish(app, n=2)
        await dispatch(app)
        assert len(receiver.received) == 1  # nothing more goes to a disabled endpoint
        (dead,) = (await c.get("/api/v1/outbox/dead")).json()["items"]
        assert dead["last_status_code"] == 410

        receiver.default = Reply(200)
        r = await c.patch(f"/api/v1/webhooks/{ep['id']}", json={"enabled": True})
        assert r.json()["enabled"] is True and r.json()["disabled_reason"] is None
        await publish(app, n=3)
        await dispatch(app)
        assert json.loads(receiver.received[-1].body)["data"] == {"n": 3}


async def test_permanent_refusals_are_dead_at_once_and_408_425_429_are_retried(chronos_app, api_client, receiver):
    receiver.replies = [Reply(400), Reply(429), Reply(408), Reply(425), Reply(200)]
    async with chronos_app(plugins=PLUGINS, config=webhooks_config(max_in_flight=1)) as app:
        c = await api_client(app, scopes=["webhooks.manage"])
        await create(c, receiver.url)
        await publish(app, n=1)
        await dispatch(app)
        (dead,) = (await c.get("/api/v1/outbox/dead")).json()["items"]
        assert dead["attempts"] == 1 and dead["last_status_code"] == 400
        await publish(app, n=2)
        await dispatch(app)
        statuses = [d["status"] for d in (await c.get("/api/v1/outbox/deliveries")).json()["items"]]
        assert statuses == ["delivered", "dead"] and len(receiver.received) == 5


async def test_secret_rotation_signs_with_both_until_the_old_one_expires(chronos_app, api_client, receiver):
    async with chronos_app(plugins=PLUGINS, config=webhooks_config()) as app:
        c = await api_client(app, scopes=["webhooks.manage"])
        ep = await create(c, receiver.url)
        r = await c.patch(f"/api/v1/webhooks/{ep['id']}", json={"rotate_secret": True})
        assert r.status_code == 200, r.text
        rotated = r.json()
        assert rotated["secret"] != ep["secret"] and len(rotated["secrets"]) == 2
        assert rotated["secrets"][1]["expires_at"] is not None and rotated["secrets"][0]["expires_at"] is None
        await publish(app)
        await dispatch(app)
        got = receiver.received[0]
        assert len(got.headers["webhook-signature"].split()) == 2
        assert check_signed(got, ep["secret"]) == check_signed(got, rotated["secret"])


async def test_the_test_route_sends_to_that_endpoint_only(chronos_app, api_client, receiver):
    async with chronos_app(plugins=PLUGINS, config=webhooks_config()) as app:
        c = await api_client(app, scopes=["webhooks.manage"])
        one = await create(c, receiver.url + "?one", event_types=["event.*"])
        await create(c, receiver.url + "?two")
        r = await c.post(f"/api/v1/webhooks/{one['id']}/test")
        assert r.status_code == 202 and r.json()["event_type"] == "outbox.test"
        await dispatch(app)
        assert [x.path for x in receiver.received] == ["/hook?one"]
        assert json.loads(receiver.received[0].body)["data"]["endpoint_id"] == one["id"]


async def test_dedupe_key_publishes_once(chronos_app, api_client, receiver):
    async with chronos_app(plugins=PLUGINS, config=webhooks_config()) as app:
        c = await api_client(app, scopes=["webhooks.manage"])
        await create(c, receiver.url)
        await publish(app, n=1, dedupe_key="k1")
        await publish(app, n=2, dedupe_key="k1")
        await dispatch(app)
        assert [json.loads(r.body)["data"]["n"] for r in receiver.received] == [1]


async def test_crud_and_scopes(chronos_app, api_client, receiver):
    async with chronos_app(plugins=PLUGINS, config=webhooks_config()) as app:
        c = await api_client(app, scopes=["webhooks.manage"])
        ep = await create(c, receiver.url, description="ops", calendars=["team"])
        listed = (await c.get("/api/v1/webhooks")).json()["items"]
        assert [e["id"] for e in listed] == [ep["id"]] and "secret" not in listed[0]
        r = await c.patch(f"/api/v1/webhooks/{ep['id']}", json={"event_types": ["event.*"], "calendars": None})
        assert r.json()["event_types"] == ["event.*"] and r.json()["calendars"] is None and r.json()["secret"] is None
        assert (await c.delete(f"/api/v1/webhooks/{ep['id']}")).status_code == 204
        assert (await c.get(f"/api/v1/webhooks/{ep['id']}")).status_code == 404
        other = await api_client(app, scopes=["events.read"])
        assert (await other.get("/api/v1/webhooks")).status_code == 403


async def test_a_disabled_endpoint_gets_no_test_message(chronos_app, api_client, receiver):
    async with chronos_app(plugins=PLUGINS, config=webhooks_config()) as app:
        c = await api_client(app, scopes=["webhooks.manage"])
        ep = await create(c, receiver.url, enabled=False)
        r = await c.post(f"/api/v1/webhooks/{ep['id']}/test")
        assert r.status_code == 409 and r.json()["type"].endswith("webhook-disabled")


async def test_a_filter_that_matches_no_event_type_is_422(chronos_app, api_client, receiver):
    async with chronos_app(plugins=PLUGINS, config=webhooks_config()) as app:
        c = await api_client(app, scopes=["webhooks.manage"])
        r = await c.post("/api/v1/webhooks", json={"url": receiver.url, "event_types": ["test.*", "tset.pinged"]})
        assert r.status_code == 422 and r.json()["errors"] == [
            {"pointer": "/event_types/1", "detail": "'tset.pinged' matches no event type"}
        ]
        assert "test.pinged" in r.json()["detail"]


async def test_a_receiver_that_is_down_loses_nothing(chronos_app, api_client):
    import asyncio
    import socket

    from sqlalchemy import update

    from chronos.plugin import utcnow
    from webhooks_support import Receiver

    from chronos_webhooks.models import DeliveryRow

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]  # nothing listens there yet
    down = Receiver(port=port)
    async with chronos_app(plugins=PLUGINS, config=webhooks_config(retry_schedule_seconds=[600])) as app:
        c = await api_client(app, scopes=["webhooks.manage"])
        await create(c, down.url)
        for n in range(5):
            await publish(app, n=n)
        await dispatch(app)
        pending = (await c.get("/api/v1/outbox/deliveries", params={"status": "pending"})).json()["items"]
        assert len(pending) == 5 and all("ConnectError" in d["last_error"] for d in pending)
        server = await asyncio.start_server(down.handle, "127.0.0.1", port)
        try:
            async with app.state.chronos.db.write() as s:  # ten minutes later: the retries come due
                await s.execute(update(DeliveryRow).values(next_attempt_at=utcnow()))
            await dispatch(app)
        finally:
            server.close()
        assert sorted(json.loads(r.body)["data"]["n"] for r in down.received) == [0, 1, 2, 3, 4]
        assert (await c.get("/api/v1/outbox/deliveries", params={"status": "delivered"})).json()["items"][0][
            "attempts"
        ] == 2


async def test_the_event_types_are_listed_with_their_schemas(chronos_app, api_client):
    async with chronos_app(plugins=PLUGINS, config=webhooks_config()) as app:
        c = await api_client(app, scopes=["webhooks.manage"])
        items = (await c.get("/api/v1/outbox/event-types")).json()["items"]
        by_name = {t["name"]: t for t in items}
        assert {"test.pinged", "outbox.test", "event.created", "sync.failed"} <= set(by_name)
        assert by_name["test.pinged"]["description"] == "A ping"
        assert by_name["test.pinged"]["payload_schema"]["required"] == ["n"]
