"""An endpoint's body from a webhook template; a template that fails to render is a dead letter, not a crash."""

from __future__ import annotations

import json
import time

from chronos.plugin import webhook_signing
from webhooks_support import PLUGINS, dispatch, publish, webhooks_config


async def test_a_templated_body_is_signed_and_a_broken_one_is_a_dead_letter(chronos_app, api_client, receiver):
    async with chronos_app(plugins=[*PLUGINS, "templates"], config=webhooks_config()) as app:
        c = await api_client(app, scopes=["webhooks.manage", "templates.manage"])
        good = {
            "name": "chat",
            "type": "webhook",
            "content": {"body": '{"text": {{ ("ping " ~ data.n)|tojson }}, "kind": {{ type|tojson }}}'},
        }
        bad = {"name": "broken", "type": "webhook", "content": {"body": '{"text": {{ data.missing.deeper|tojson }}}'}}
        good_id = (await c.post("/api/v1/templates", json=good)).json()["id"]
        bad_id = (await c.post("/api/v1/templates", json=bad)).json()["id"]
        ep = (await c.post("/api/v1/webhooks", json={"url": receiver.url + "?good", "template_id": good_id})).json()
        await c.post("/api/v1/webhooks", json={"url": receiver.url + "?bad", "template_id": bad_id})
        await publish(app, n=5)
        await dispatch(app)

        (got,) = receiver.received
        assert got.path == "/hook?good" and json.loads(got.body) == {"text": "ping 5", "kind": "test.pinged"}
        webhook_signing.verify(
            [webhook_signing.secret_key(ep["secret"])], got.headers, got.body, now=time.time(), tolerance=300
        )
        (dead,) = (await c.get("/api/v1/outbox/dead")).json()["items"]
        assert dead["attempts"] == 1 and "failed to render" in dead["last_error"]


async def test_a_template_needs_the_templates_plugin(chronos_app, api_client, receiver):
    async with chronos_app(plugins=PLUGINS, config=webhooks_config()) as app:
        c = await api_client(app, scopes=["webhooks.manage"])
        r = await c.post("/api/v1/webhooks", json={"url": receiver.url, "template_id": 1})
        assert r.status_code == 422 and r.json()["errors"][0]["pointer"] == "/template_id"
