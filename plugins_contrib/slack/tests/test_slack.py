"""The Slack channel against a local Slack: Block Kit from the template with escaped values, both ways in
(incoming webhook, chat.postMessage), answers mapped onto the outbox's outcomes, credentials never in details."""

from __future__ import annotations

import pytest

from chronos import testing as kit
from chronos.plugin import Delivery, OutboundPolicy
from slack_support import CHANNEL, HOOK_PATH, TOKEN, Builds, FakeSlack, controls, dispatch, message, publish, serving

from chronos_slack.plugin import SlackPlugin
from chronos_slack.render import blocks, escape, fill
from chronos_slack.settings import DEFAULT_BLOCKS, SlackSettings
from chronos_slack.target import SlackTarget

LOOPBACK = OutboundPolicy.from_entries(["127.0.0.1/32"])
PINGS = "<!channel> see <https://evil.example|your bank> & <@U123>"


def via_webhook(fake: FakeSlack, outbound=LOOPBACK, **settings) -> SlackTarget:
    return SlackTarget(outbound, SlackSettings(webhook_url=fake.webhook_url, **settings))


def via_api(fake: FakeSlack, **settings) -> SlackTarget:
    values = {"bot_token": TOKEN, "channel": CHANNEL, **settings}
    return SlackTarget(LOOPBACK, SlackSettings(**values), api_base=fake.base + "/api")


def delivery(payload: dict) -> Delivery:
    return Delivery(id=3, message=message(payload), attempt=1, target="slack")


# -- the body -----------------------------------------------------------------------------------------


def test_values_cannot_mention_link_or_format():
    assert escape("a<b>&c") == "a&lt;b&gt;&amp;c"
    filled = blocks(DEFAULT_BLOCKS, message({"title": PINGS, "status": "ok"}))
    assert controls({"blocks": filled}) == []
    assert filled[0] == {"type": "header", "text": {"type": "plain_text", "text": "ci.build: " + escape(PINGS)}}
    assert filled[1]["text"]["text"] == f"*title:* {escape(PINGS)}\n*status:* ok"
    assert filled[2]["elements"][0]["text"] == "ci.build · 2026-12-07T08:30:00Z"


def test_the_template_keeps_its_own_links_and_fits_block_kits_limits():
    template = [
        {"type": "section", "text": {"type": "mrkdwn", "text": "<https://ci.example/b|Build> {{ payload.title }}"}},
        {"type": "header", "text": {"type": "plain_text", "text": "{{ payload.title }}{{ payload.title }}"}},
    ]
    filled = blocks(template, message({"title": "x" * 290}))
    assert filled[0]["text"]["text"].startswith("<https://ci.example/b|Build> xxx")
    assert controls({"blocks": filled}) == ["<https://ci.example/b|Build>"]
    assert len(filled[1]["text"]["text"]) == 150
    assert fill("{{ payload.missing }}|{{ webhook_id }}", message({})) == "|msg_1"


# -- incoming webhook ------------------------------------------------------------------------------------


async def test_a_webhook_post_carries_text_and_blocks():
    async with serving(FakeSlack()) as slack:
        result = await via_webhook(slack).deliver(delivery({"title": "Build 42", "status": PINGS}))
    assert result.outcome == "delivered" and result.response_excerpt == "ok", result
    (body,) = slack.calls
    assert body["text"] == "ci.build: Build 42" and [b["type"] for b in body["blocks"]] == [
        "header",
        "section",
        "context",
    ]
    assert "channel" not in body and controls(body) == []


async def test_text_only_when_blocks_are_empty():
    async with serving(FakeSlack()) as slack:
        result = await via_webhook(slack, blocks=[], text="{{ event_type }} done").deliver(delivery({"title": "x"}))
    assert result.outcome == "delivered" and slack.calls == [{"text": "ci.build done"}]


@pytest.mark.parametrize(
    ("status", "text", "headers", "outcome", "after"),
    [
        (429, "rate_limited", {"Retry-After": "30"}, "retry", 30.0),
        (404, "no_service", {}, "gone", None),
        (410, "channel_is_archived", {}, "gone", None),
        (400, "invalid_blocks", {}, "failed", None),
        (403, "action_prohibited", {}, "failed", None),
        (500, "rollup_error", {}, "retry", None),
    ],
)
async def test_webhook_answers_map_onto_outbox_outcomes(status, text, headers, outcome, after):
    fake = FakeSlack()
    fake.replies.append((status, text, headers))
    async with serving(fake) as slack:
        result = await via_webhook(slack).deliver(delivery({"title": "x"}))
    assert (result.outcome, result.retry_after, result.status_code) == (outcome, after, status)
    assert text in result.detail


async def test_the_webhook_url_never_appears_in_a_detail():
    async with serving(FakeSlack()) as slack:
        url = slack.webhook_url
    down = await SlackTarget(LOOPBACK, SlackSettings(webhook_url=url)).deliver(delivery({"title": "x"}))
    refused = await SlackTarget(OutboundPolicy(), SlackSettings(webhook_url=url)).deliver(delivery({"title": "x"}))
    assert down.outcome == "retry" and "cannot reach Slack" in down.detail
    assert refused.outcome == "failed" and "refused: 127.0.0.1 is a loopback address" in refused.detail
    for result in (down, refused):
        assert HOOK_PATH not in result.detail and "s3cret" not in result.detail


# -- chat.postMessage -------------------------------------------------------------------------------------


async def test_chat_post_message_with_a_bot_token():
    async with serving(FakeSlack()) as slack:
        result = await via_api(slack).deliver(delivery({"title": "Build 43"}))
    assert result.outcome == "delivered" and result.response_excerpt == "ts 1733560000.000001", result
    (body,) = slack.calls
    assert body["channel"] == CHANNEL and body["unfurl_links"] is False and body["text"] == "ci.build: Build 43"
    assert slack.headers[0]["authorization"] == f"Bearer {TOKEN}"
    assert slack.headers[0]["content-type"].startswith("application/json")


@pytest.mark.parametrize(
    ("reply", "outcome", "says"),
    [
        ((429, {"ok": False, "error": "ratelimited"}, {"Retry-After": "12"}), "retry", "ratelimited"),
        ((200, {"ok": False, "error": "is_archived"}, {}), "gone", "is_archived"),
        ((200, {"ok": False, "error": "not_in_channel"}, {}), "gone", "not_in_channel"),
        ((200, {"ok": False, "error": "invalid_blocks"}, {}), "failed", "invalid_blocks"),
        ((200, {"ok": False, "error": "internal_error"}, {}), "retry", "internal_error"),
        ((503, {"ok": False, "error": "service_unavailable"}, {}), "retry", "service_unavailable"),
    ],
)
async def test_api_answers_map_onto_outbox_outcomes(reply, outcome, says):
    fake = FakeSlack()
    fake.replies.append(reply)
    async with serving(fake) as slack:
        result = await via_api(slack).deliver(delivery({"title": "x"}))
    assert result.outcome == outcome and says in result.detail
    if outcome == "retry" and reply[0] == 429:
        assert result.retry_after == 12.0


async def test_an_unknown_channel_is_gone_and_a_wrong_token_fails_without_showing_it():
    async with serving(FakeSlack()) as slack:
        gone = await via_api(slack, channel="C9999999999").deliver(delivery({"title": "x"}))
        wrong = await via_api(slack, bot_token="xoxb-0000000000-wrongwrongwrong").deliver(delivery({"title": "x"}))
    assert gone.outcome == "gone" and "channel_not_found" in gone.detail
    assert wrong.outcome == "failed" and "invalid_auth" in wrong.detail and "xoxb" not in wrong.detail


# -- settings -----------------------------------------------------------------------------------------------


def test_one_way_in_and_a_channel_for_the_token():
    with pytest.raises(ValueError, match="either an incoming webhook"):
        SlackSettings(webhook_url="https://hooks.slack.com/services/T/B/x", bot_token=TOKEN, channel=CHANNEL)
    with pytest.raises(ValueError, match="needs slack.channel"):
        SlackSettings(bot_token=TOKEN)
    with pytest.raises(ValueError, match="has no `type`"):
        SlackSettings(webhook_url="https://hooks.slack.com/services/T/B/x", blocks=[{"text": "x"}])


def test_credentials_are_refused_in_the_config_file(database, tmp_path):
    path = tmp_path / "chronos.yaml"
    path.write_text(f"slack:\n  webhook_url: 'https://hooks.slack.com{HOOK_PATH}'\n")
    with pytest.raises(kit.ConfigError) as caught:
        kit.make_test_app(database, [("slack", SlackPlugin())], path=path)
    assert "CHRONOS__SLACK__WEBHOOK_URL" in str(caught.value) and "s3cret" not in str(caught.value)


# -- through the outbox --------------------------------------------------------------------------------------


async def test_outbox_messages_reach_slack_and_a_removed_webhook_is_a_dead_letter(chronos_app, api_client, capsys):
    async with serving(FakeSlack()) as slack:
        config = {
            "network": {"allow": ["127.0.0.1/32"]},
            "webhooks": {"retry_schedule_seconds": [0, 0], "jitter_ratio": 0, "timeout_seconds": 2},
            "slack": {"event_types": ["ci.*"]},
        }
        env = {"CHRONOS__SLACK__WEBHOOK_URL": slack.webhook_url}
        plugins = ["webhooks", ("builds", Builds()), ("slack", SlackPlugin())]
        async with chronos_app(plugins=plugins, config=config, env=env) as app:
            await publish(app, {"title": "Build 44", "status": "green"})
            await dispatch(app)
            assert [c["text"] for c in slack.calls] == ["ci.build: Build 44"]
            slack.replies.append((404, "no_service", {}))
            await publish(app, {"title": "Build 45"})
            await dispatch(app)
            c = await api_client(app, scopes=["admin"])
            r = await c.get("/api/v1/outbox/dead")
            assert r.status_code == 200, r.text
            assert [d["target"] for d in r.json()["items"]] == ["slack"] and "no_service" in r.text
    out = capsys.readouterr()
    assert "s3cret" not in out.err + out.out + r.text
