"""Bad destinations and hostile receivers: a clear error, nothing sent where it must not go, nothing lost."""

from __future__ import annotations

import pytest

from webhooks_support import PLUGINS, Reply, dispatch, publish, webhooks_config

REFUSED_URLS = [
    "http://127.0.0.1:9/hook",
    "http://169.254.169.254/latest/meta-data/",
    "http://[::ffff:10.0.0.1]/hook",
    "http://10.1.2.3/hook",
    "http://localhost:9/hook",  # a name that resolves to a loopback address
]


@pytest.mark.parametrize("url", REFUSED_URLS)
async def test_private_destinations_are_refused_at_create_and_patch(chronos_app, api_client, url, receiver):
    async with chronos_app(plugins=PLUGINS, config={"webhooks": {}}) as app:
        c = await api_client(app, scopes=["webhooks.manage"])
        r = await c.post("/api/v1/webhooks", json={"url": url})
        assert r.status_code == 422, r.text
        problem = r.json()
        assert problem["type"].endswith("webhook-url-refused") and problem["errors"][0]["pointer"] == "/url"
        assert (await c.get("/api/v1/webhooks")).json()["items"] == []


async def test_file_urls_and_unresolvable_names_are_422(chronos_app, api_client):
    async with chronos_app(plugins=PLUGINS, config={"webhooks": {}}) as app:
        c = await api_client(app, scopes=["webhooks.manage"])
        r = await c.post("/api/v1/webhooks", json={"url": "file:///etc/passwd"})
        assert r.status_code == 422 and r.json()["errors"][0]["pointer"].startswith("/url")
        r = await c.post("/api/v1/webhooks", json={"url": "http://no-such-host.invalid/hook"})
        assert r.status_code == 422 and r.json()["errors"][0]["pointer"] == "/url"
        assert "resolve" in r.json()["detail"]


async def test_patch_checks_the_new_url(chronos_app, api_client, receiver):
    async with chronos_app(plugins=PLUGINS, config=webhooks_config()) as app:
        c = await api_client(app, scopes=["webhooks.manage"])
        ep = (await c.post("/api/v1/webhooks", json={"url": receiver.url})).json()
        r = await c.patch(f"/api/v1/webhooks/{ep['id']}", json={"url": "http://169.254.169.254/"})
        assert r.status_code == 422 and r.json()["type"].endswith("webhook-url-refused")
        assert (await c.get(f"/api/v1/webhooks/{ep['id']}")).json()["url"] == receiver.url


async def test_the_guard_applies_again_at_delivery(chronos_app, api_client, receiver):
    # Created while loopback was allowed; the operator then removes it from network.allow.
    async with chronos_app(plugins=PLUGINS, config=webhooks_config()) as app:
        c = await api_client(app, scopes=["webhooks.manage"])
        await c.post("/api/v1/webhooks", json={"url": receiver.url})
    async with chronos_app(plugins=PLUGINS, config={"webhooks": {"retry_schedule_seconds": [0]}}) as app:
        await publish(app)
        await dispatch(app)
        c = await api_client(app, scopes=["webhooks.manage"])
        (dead,) = (await c.get("/api/v1/outbox/dead")).json()["items"]
        assert "outbound guard" in dead["last_error"] and dead["attempts"] == 1
    assert receiver.received == []


async def test_a_redirect_is_not_followed(chronos_app, api_client, receiver):
    receiver.default = Reply(302, headers={"Location": "http://169.254.169.254/latest/meta-data/"})
    async with chronos_app(plugins=PLUGINS, config=webhooks_config()) as app:
        c = await api_client(app, scopes=["webhooks.manage"])
        await c.post("/api/v1/webhooks", json={"url": receiver.url})
        await publish(app)
        await dispatch(app)
        (dead,) = (await c.get("/api/v1/outbox/dead")).json()["items"]
        assert dead["last_status_code"] == 302 and dead["attempts"] == 1
        assert len(receiver.received) == 1


async def test_a_huge_answer_is_not_read_and_a_silent_receiver_times_out(chronos_app, api_client, receiver):
    receiver.replies = [Reply(200, body=b"y" * 10, body_size=10 * 1024 * 1024), Reply(200, delay=3)]
    config = webhooks_config(timeout_seconds=0.5, response_excerpt_bytes=64, retry_schedule_seconds=[3600])
    async with chronos_app(plugins=PLUGINS, config=config) as app:
        c = await api_client(app, scopes=["webhooks.manage"])
        ep = (await c.post("/api/v1/webhooks", json={"url": receiver.url})).json()
        await publish(app, n=1)
        await dispatch(app)
        await publish(app, n=2)
        await dispatch(app)
        slow, big = (await c.get(f"/api/v1/webhooks/{ep['id']}/deliveries")).json()["items"]
        assert big["outcome"] == "delivered" and big["response_excerpt"] == "y" * 10 + "x" * 54
        assert slow["outcome"] == "retry" and "no answer within 0.5 s" in slow["error"]
        pending = (await c.get("/api/v1/outbox/deliveries", params={"status": "pending"})).json()["items"]
        assert [d["attempts"] for d in pending] == [1]  # kept for its next attempt, not lost
