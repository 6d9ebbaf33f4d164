"""The n8n channel against a local n8n Webhook node: signed POSTs (verified by the example workflow's own Code
node under Node.js), answers mapped onto the outbox's outcomes, delivery through the outbox; and the example
command worker workflow run against the API."""

from __future__ import annotations

import base64
import json

import pytest

from chronos import testing as kit
from chronos.plugin import Delivery, OutboundPolicy, webhook_signing
from n8n_support import (
    NODE,
    SECRET,
    FakeN8n,
    Sensors,
    dispatch,
    message,
    node,
    publish,
    run_code,
    run_worker_flow,
    serving,
    workflow,
)

from chronos_n8n import plugin as n8n_plugin
from chronos_n8n.settings import N8nSettings
from chronos_n8n.target import N8nTarget

LOOPBACK = OutboundPolicy.from_entries(["127.0.0.1/32"])
NOW = 1_765_096_200


def target(url: str, outbound=LOOPBACK, **settings) -> N8nTarget:
    return N8nTarget(outbound, N8nSettings(url=url, signing_secret=SECRET, **settings), clock=lambda: NOW)


def delivery(payload: dict) -> Delivery:
    return Delivery(id=5, message=message(payload), attempt=1, target="n8n")


def test_signatures_follow_standard_webhooks():
    # The specification's published example.
    body = b'{"test": 2432232314}'
    assert webhook_signing.sign_v1(
        webhook_signing.secret_key(SECRET), "msg_p5jXN8AQM9LWM0D4loKWxJek", 1614265330, body
    ) == ("v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=")
    for bad in ("nope", "whsec_***", "whsec_" + base64.b64encode(b"short").decode()):
        with pytest.raises(ValueError):
            webhook_signing.secret_key(bad)


async def test_a_signed_post_reaches_the_webhook_node():
    async with serving(FakeN8n()) as n8n:
        result = await target(n8n.url).deliver(delivery({"title": "Boiler", "value": 71.5}))
    assert result.outcome == "delivered" and "Workflow was started" in result.response_excerpt, result
    (got,) = n8n.received
    assert json.loads(got.body) == {
        "type": "sensor.reading",
        "timestamp": "2026-12-07T08:30:00Z",
        "data": {"title": "Boiler", "value": 71.5},
    }
    assert got.headers["content-type"] == "application/json"
    assert got.headers["webhook-id"] == "msg_2Y8aXv" and got.headers["webhook-timestamp"] == str(NOW)
    assert got.headers["webhook-signature"] == webhook_signing.sign_v1(
        webhook_signing.secret_key(SECRET), "msg_2Y8aXv", NOW, got.body
    )


@pytest.mark.skipif(NODE is None, reason="Node.js runs the example's Code node")
async def test_the_example_workflow_verifies_what_the_channel_signs():
    verify = node(workflow("chronos-events.json"), "Verify signature")["parameters"]["jsCode"]
    live = N8nTarget(LOOPBACK, N8nSettings(url="http://x", signing_secret=SECRET))  # signs with the real clock
    body, headers = live.request(delivery({"title": "Boiler"}), SECRET)
    item = {"json": {"headers": {k.lower(): v for k, v in headers.items()}}, "raw": base64.b64encode(body).decode()}
    env = {"CHRONOS_N8N_SIGNING_SECRET": SECRET}
    (out,) = run_code(verify, [item], env)
    assert out["json"] == {
        "webhook_id": "msg_2Y8aXv",
        "type": "sensor.reading",
        "timestamp": "2026-12-07T08:30:00Z",
        "data": {"title": "Boiler"},
    }
    tampered = {**item, "raw": base64.b64encode(body.replace(b"Boiler", b"Boiled")).decode()}
    stale_body, stale_headers = target("http://x").request(delivery({"title": "Boiler"}), SECRET)  # signed in 2025
    stale = {"json": {"headers": stale_headers}, "raw": base64.b64encode(stale_body).decode()}
    for bad, bad_env in ((tampered, env), (stale, env), (item, {"CHRONOS_N8N_SIGNING_SECRET": "whsec_" + "A" * 40})):
        with pytest.raises(RuntimeError, match="not signed by Chronos"):
            run_code(verify, [bad], bad_env)


@pytest.mark.parametrize(
    ("active", "reply", "outcome", "says"),
    [
        (False, None, "retry", "is the workflow active?"),
        (True, (410, "gone", {}), "gone", "HTTP 410"),
        (True, (503, "busy", {"Retry-After": "45"}), "retry", "HTTP 503"),
        (True, (422, "bad", {}), "failed", "HTTP 422"),
    ],
)
async def test_answers_map_onto_outbox_outcomes(active, reply, outcome, says):
    fake = FakeN8n(active=active)
    if reply:
        fake.replies.append(reply)
    async with serving(fake) as n8n:
        result = await target(n8n.url).deliver(delivery({"title": "x"}))
    assert result.outcome == outcome and says in result.detail and "/webhook/" not in result.detail
    if reply and reply[0] == 503:
        assert result.retry_after == 45.0


async def test_header_auth_for_n8ns_credential():
    fake = FakeN8n(header_auth=("x-chronos-key", "k3y-value"))
    async with serving(fake) as n8n:
        refused = await target(n8n.url).deliver(delivery({"title": "x"}))
        ok = await target(n8n.url, auth_header="X-Chronos-Key", auth_header_value="k3y-value").deliver(
            delivery({"title": "x"})
        )
    assert refused.outcome == "failed" and "HTTP 403" in refused.detail
    assert ok.outcome == "delivered" and len(fake.received) == 1


async def test_a_private_n8n_needs_network_allow():
    async with serving(FakeN8n()) as n8n:
        result = await target(n8n.url, outbound=OutboundPolicy()).deliver(delivery({"title": "x"}))
    assert result.outcome == "failed" and "refused: 127.0.0.1 is a loopback address" in result.detail
    assert n8n.received == []


def test_the_secret_is_required_and_refused_in_the_config_file(database, tmp_path):
    with pytest.raises(ValueError, match="needs a signing secret"):
        N8nSettings(url="https://n8n.example/webhook/chronos")
    path = tmp_path / "chronos.yaml"
    path.write_text(f"n8n:\n  url: https://n8n.example/webhook/chronos\n  signing_secret: {SECRET}\n")
    with pytest.raises(kit.ConfigError) as caught:
        kit.make_test_app(database, [("n8n", n8n_plugin)], path=path)
    assert "CHRONOS__N8N__SIGNING_SECRET" in str(caught.value) and SECRET not in str(caught.value)


async def test_outbox_messages_reach_n8n_signed(chronos_app):
    async with serving(FakeN8n()) as n8n:
        config = {
            "network": {"allow": ["127.0.0.1/32"]},
            "webhooks": {"retry_schedule_seconds": [0, 0], "jitter_ratio": 0, "timeout_seconds": 2},
            "n8n": {"url": n8n.url, "event_types": ["sensor.*"]},
        }
        env = {"CHRONOS__N8N__SIGNING_SECRET": SECRET}
        async with chronos_app(
            plugins=["webhooks", ("sensors", Sensors()), ("n8n", n8n_plugin)], config=config, env=env
        ) as app:
            await publish(app, {"title": "Boiler", "value": 70})
            await dispatch(app)
    (got,) = n8n.received
    signed = webhook_signing.sign_v1(
        webhook_signing.secret_key(SECRET), got.headers["webhook-id"], int(got.headers["webhook-timestamp"]), got.body
    )
    assert got.headers["webhook-signature"] == signed
    assert json.loads(got.body)["data"] == {"title": "Boiler", "value": 70}


# -- the example command worker --------------------------------------------------------------------------------


def test_the_example_workflows_are_well_formed():
    for name in ("chronos-command-worker.json", "chronos-events.json"):
        flow = workflow(name)
        names = [n["name"] for n in flow["nodes"]]
        assert len(names) == len(set(names)) and len({n["id"] for n in flow["nodes"]}) == len(names)
        for source, ports in flow["connections"].items():
            assert source in names
            assert all(t["node"] in names for port in ports["main"] for t in port)
        assert flow["active"] is False and all(n["type"].startswith("n8n-nodes-base.") for n in flow["nodes"])


@pytest.mark.skipif(NODE is None, reason="Node.js runs the example's Code node")
async def test_the_example_worker_leases_and_completes_commands(chronos_app):
    whitelist = [{"system": "n8n", "action": "NOTIFY", "params": {"text": None}}]
    async with chronos_app(plugins=["commands"], config={"commands": {"whitelist": whitelist}}) as app:
        admin = await kit.create_test_key(app, ["admin"])
        worker_key = await kit.create_test_key(app, ["events.read"], systems=["n8n"], name="n8n")
        async with kit.client(app, admin) as c:
            ids = []
            for text in ("Tea", "Coffee"):
                r = await c.post(
                    "/api/v1/commands", json={"target_system": "n8n", "command": "NOTIFY", "params": {"text": text}}
                )
                assert r.status_code == 201, r.text
                ids.append(r.json()["id"])
            env = {"CHRONOS_URL": str(c.base_url).rstrip("/"), "CHRONOS_SYSTEM": "n8n"}
            flow = workflow("chronos-command-worker.json")
            outputs = await run_worker_flow(flow, c, env, worker_key)
            assert [o["status"] for o in outputs["Complete command"]] == ["completed", "completed"]
            listed = {x["id"]: x for x in (await c.get("/api/v1/commands")).json()["items"]}
            assert listed[ids[0]]["result"] == {"handled_by": "n8n", "command": "NOTIFY", "params": {"text": "Tea"}}
            assert listed[ids[1]]["status"] == "completed"
            again = await run_worker_flow(flow, c, env, worker_key)  # nothing left to lease
            assert again["Lease commands"] == [{"items": []}] and "Complete command" not in again

            # A failing work node sends the command back to the queue through "Fail command".
            r = await c.post(
                "/api/v1/commands", json={"target_system": "n8n", "command": "NOTIFY", "params": {"text": "x"}}
            )
            failing = json.loads(json.dumps(flow))
            node(failing, "Do the work")["parameters"]["jsCode"] = "throw new Error('printer on fire');"
            outputs = await run_worker_flow(failing, c, env, worker_key)
            (failed,) = outputs["Fail command"]
            assert failed["id"] == r.json()["id"] and failed["status"] == "pending"
            assert failed["error"] == "the n8n workflow failed"
