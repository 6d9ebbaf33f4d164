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


async def test_retention_deletes_old_deliveries_and_unsubscribed_messages_but_keeps_dead_letters(
    chronos_app, api_client, receiver
):
    from datetime import timedelta

    from sqlalchemy import func, select, update

    from chronos.plugin import utcnow

    from chronos_webhooks.models import DeliveryRow, OutboxRow
    from chronos_webhooks.service import purge_delivered

    receiver.replies = [Reply(200), Reply(400)]
    async with chronos_app(plugins=PLUGINS, config=webhooks_config(max_in_flight=1)) as app:
        c = await api_client(app, scopes=["webhooks.manage"])
        await publish(app, "test.other", n=0)  # no subscriber yet
        await dispatch(app)
        await c.post("/api/v1/webhooks", json={"url": receiver.url})
        await publish(app, n=1)
        await publish(app, n=2)
        await dispatch(app)
        ctx = app.state.chronos
        past = utcnow() - timedelta(days=31)
        async with ctx.db.write() as s:
            await s.execute(update(DeliveryRow).where(DeliveryRow.status == "delivered").values(delivered_at=past))
            await s.execute(update(OutboxRow).values(created_at=past))
        # The message nobody subscribed to went at fan-out; the delivered one's goes with its delivery.
        assert await purge_delivered(ctx, timedelta(days=30)) == {"deliveries": 1, "messages": 1}
        async with ctx.db.read() as s:
            left = (await s.execute(select(DeliveryRow.status, func.count()).group_by(DeliveryRow.status))).all()
            messages = (await s.execute(select(func.count()).select_from(OutboxRow))).scalar()
        assert left == [("dead", 1)] and messages == 1
