"""Two dispatchers on one database share the work: every delivery is sent once and none is lost."""

from __future__ import annotations

import asyncio
import json
from collections import Counter

from webhooks_support import PLUGINS, publish, webhooks_config

from chronos_webhooks.dispatcher import DISPATCHER


async def test_two_dispatchers_deliver_each_message_once(chronos_app, api_client, receiver):
    config = webhooks_config(batch_size=7, max_in_flight=4)
    async with chronos_app(plugins=PLUGINS, config=config) as one, chronos_app(plugins=PLUGINS, config=config) as two:
        c = await api_client(one, scopes=["webhooks.manage"])
        await c.post("/api/v1/webhooks", json={"url": receiver.url + "?a"})
        await c.post("/api/v1/webhooks", json={"url": receiver.url + "?b"})
        for n in range(30):
            await publish(one if n % 2 else two, n=n)
        # Publishing woke both apps' dispatchers; then both run once more, side by side.
        woken = [app.state.chronos.jobs.running.get("webhooks.dispatch") for app in (one, two)]
        await asyncio.gather(*(t for t in woken if t is not None), return_exceptions=True)
        counts = await asyncio.gather(
            one.state.chronos.resource(DISPATCHER).run(), two.state.chronos.resource(DISPATCHER).run()
        )
        sent = Counter((r.path, json.loads(r.body)["data"]["n"]) for r in receiver.received)
        assert len(sent) == 60 and set(sent.values()) == {1}, counts
        assert (await c.get("/api/v1/outbox/deliveries", params={"status": "pending"})).json()["items"] == []
