"""Plugin delivery targets share the outbox: fan-out by type, retries, Retry-After, dead letters, replay."""

from __future__ import annotations

from chronos.plugin import DeliveryResult, DeliveryTarget, hookimpl
from webhooks_support import Publisher, dispatch, publish, webhooks_config


class Pager(DeliveryTarget):
    name = "pager"
    event_types = ("test.pinged",)

    def __init__(self, answers):
        self.answers = list(answers)
        self.seen = []

    async def deliver(self, delivery):
        self.seen.append((delivery.message.webhook_id, delivery.attempt, dict(delivery.message.payload)))
        answer = self.answers.pop(0) if self.answers else DeliveryResult.delivered()
        if isinstance(answer, Exception):
            raise answer
        return answer


class PagerPlugin(Publisher):
    def __init__(self, target):
        self.target = target

    @hookimpl
    def register_delivery_targets(self):
        return [self.target]


async def test_a_target_gets_its_types_with_retries(chronos_app, api_client):
    pager = Pager([DeliveryResult.retry("busy"), RuntimeError("network down"), DeliveryResult.delivered(200)])
    async with chronos_app(plugins=["webhooks", ("pagers", PagerPlugin(pager))], config=webhooks_config()) as app:
        await publish(app, "test.other", 1)  # not a type the pager takes
        await publish(app, "test.pinged", 2)
        await dispatch(app)
        assert [(attempt, payload) for _, attempt, payload in pager.seen] == [
            (1, {"n": 2}),
            (2, {"n": 2}),
            (3, {"n": 2}),
        ]
        assert len({webhook_id for webhook_id, _, _ in pager.seen}) == 1
        c = await api_client(app, scopes=["webhooks.manage"])
        (d,) = (await c.get("/api/v1/outbox/deliveries")).json()["items"]
        assert (d["target"], d["status"], d["attempts"], d["endpoint_id"]) == ("pager", "delivered", 3, None)


async def test_retry_after_is_honoured(chronos_app, api_client):
    pager = Pager([DeliveryResult.retry("rate limited", after=3600)])
    async with chronos_app(plugins=["webhooks", ("pagers", PagerPlugin(pager))], config=webhooks_config()) as app:
        await publish(app, "test.pinged", 1)
        await dispatch(app)
        assert len(pager.seen) == 1  # not due again for an hour, though the schedule says 0 s
        c = await api_client(app, scopes=["webhooks.manage"])
        (d,) = (await c.get("/api/v1/outbox/deliveries")).json()["items"]
        assert d["status"] == "pending" and d["last_error"] == "rate limited"


async def test_failed_and_gone_are_dead_letters_and_replay_delivers(chronos_app, api_client):
    pager = Pager([DeliveryResult.failed("bad request", status_code=400), DeliveryResult.gone("chat deleted")])
    async with chronos_app(plugins=["webhooks", ("pagers", PagerPlugin(pager))], config=webhooks_config()) as app:
        await publish(app, "test.pinged", 1)
        await publish(app, "test.pinged", 2)
        await dispatch(app)
        c = await api_client(app, scopes=["webhooks.manage"])
        dead = (await c.get("/api/v1/outbox/dead")).json()["items"]
        assert sorted(d["last_error"] for d in dead) == ["bad request", "chat deleted"]
        for d in dead:
            assert (await c.post(f"/api/v1/outbox/dead/{d['id']}/replay")).status_code == 202
        await dispatch(app)
        assert (await c.get("/api/v1/outbox/dead")).json()["items"] == []
        assert [attempt for _, attempt, _ in pager.seen] == [1, 1, 1, 1]
