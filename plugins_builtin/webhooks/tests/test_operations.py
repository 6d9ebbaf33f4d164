"""/health shows the outbox backlog, its oldest pending age and the dead letters; /metrics counts deliveries."""

from __future__ import annotations

from webhooks_support import PLUGINS, Reply, dispatch, publish, webhooks_config


async def test_health_and_metrics(chronos_app, api_client, receiver):
    receiver.replies = [Reply(400), Reply(200, delay=1.0)]
    async with chronos_app(plugins=PLUGINS, config=webhooks_config()) as app:
        c = await api_client(app, scopes=["webhooks.manage"])
        ops = await api_client(app, scopes=["health.read", "metrics.read"])
        await c.post("/api/v1/webhooks", json={"url": receiver.url})
        ctx = app.state.chronos
        await publish(app, n=1)
        running = ctx.jobs.running.get("webhooks.dispatch")
        if running is not None:
            await running  # the publish woke the dispatcher: let it finish
        await publish(app, n=2)  # in the backlog until its slow receiver answers
        outbox = (await ops.get("/health")).json()["checks"]["outbox"]
        assert outbox["status"] == "ok"
        assert outbox["dead"] == 1 and outbox["backlog"] >= 1 and outbox["oldest_pending_seconds"] >= 0

        await dispatch(app)
        outbox = (await ops.get("/health")).json()["checks"]["outbox"]
        assert (outbox["backlog"], outbox["dead"], outbox["oldest_pending_seconds"]) == (0, 1, None)
        metrics = (await ops.get("/metrics")).text
        assert 'chronos_outbox_deliveries_total{outcome="delivered",target="webhook"}' in metrics
        assert 'chronos_outbox_deliveries_total{outcome="failed",target="webhook"}' in metrics
        assert 'chronos_outbox_delivery_seconds_bucket{le="0.5",target="webhook"}' in metrics
