"""The Telegram channel against a local Bot API server: message text and escaping, the answers
mapped onto the outbox's outcomes, the token kept out of every detail, and delivery through the outbox."""

from __future__ import annotations

import pytest

from chronos import testing as kit
from chronos.plugin import Delivery, OutboundPolicy
from telegram_support import (
    CHAT,
    TOKEN,
    Alarms,
    FakeBotApi,
    dispatch,
    free_port,
    markdown_v2_plain,
    message,
    publish,
    serving,
)

from chronos_telegram.plugin import TelegramPlugin
from chronos_telegram.render import escape_html, escape_markdown_v2, render
from chronos_telegram.settings import TelegramSettings
from chronos_telegram.target import TelegramTarget

LOOPBACK = OutboundPolicy.from_entries(["127.0.0.1/32"])
NASTY = "<script>alert(1)</script> & *bold* _x_ [link](http://e.x) a.b-c!{}|#+=~`>\\"


def target(base: str, outbound=LOOPBACK, **settings) -> TelegramTarget:
    values = {"bot_token": TOKEN, "chat_id": CHAT, **settings}
    return TelegramTarget(outbound, TelegramSettings(**values), api_base=base)


def delivery(payload: dict, event_type: str = "kitchen.alarm") -> Delivery:
    return Delivery(id=7, message=message(payload, event_type), attempt=1, target="telegram")


# -- text ---------------------------------------------------------------------------------------------


def test_values_are_escaped_for_each_parse_mode():
    assert escape_html("a < b && c > d") == "a &lt; b &amp;&amp; c &gt; d"
    escaped = escape_markdown_v2(NASTY)
    assert markdown_v2_plain(escaped) == NASTY.replace("*", "")  # every special character escaped, nothing lost
    assert all(escaped[i - 1] == "\\" for i, ch in enumerate(escaped) if ch in "_*[]()~`>#+-=|{}.!" and i)


def test_the_template_keeps_its_markup_and_values_get_none():
    msg = message({"title": "Oven <hot>", "note": "*now*"})
    html = render("<b>{{ title }}</b> {{ payload.note }} {{ payload.missing }}|{{ event_type }}", msg, "HTML")
    assert html == "<b>kitchen.alarm: Oven &lt;hot&gt;</b> *now* |kitchen.alarm"
    md = render("*{{ payload.title }}*", msg, "MarkdownV2")
    assert md == "*Oven <hot\\>*"  # ">" is special in MarkdownV2 (a quote), "<" is not
    assert render("{{ payload.note }}", msg, "MarkdownV2") == "\\*now\\*"


def test_a_long_payload_is_shortened_to_fit_one_message():
    msg = message({"title": "Big", "note": "ü" * 20_000, **{f"f{i}": "x" * 400 for i in range(40)}})
    text = render(TelegramSettings().template_text(), msg, "HTML")
    assert len(text) <= 4096 and text.startswith("<b>kitchen.alarm: Big</b>\ntitle: Big\nnote: üü")


# -- answers --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("mode", ["HTML", "MarkdownV2"])
async def test_a_message_reaches_the_chat(mode):
    async with serving(FakeBotApi()) as api:
        result = await target(api.base, parse_mode=mode).deliver(delivery({"title": "Timer", "note": NASTY}))
    assert result.outcome == "delivered" and result.response_excerpt == "message_id 1", result
    (call,) = api.calls
    assert call["chat_id"] == CHAT and call["parse_mode"] == mode
    assert call["link_preview_options"] == {"is_disabled": True} and call["disable_notification"] is False
    assert api.paths == [f"/bot{TOKEN}/sendMessage"]
    shown = call["text"] if mode == "HTML" else markdown_v2_plain(call["text"])
    assert "kitchen.alarm: Timer" in shown
    if mode == "HTML":
        assert "&lt;script&gt;alert(1)&lt;/script&gt; &amp; *bold*" in call["text"]


async def test_rate_limits_retry_after_telegrams_delay():
    api = FakeBotApi()
    api.replies.append(
        (
            429,
            {
                "ok": False,
                "error_code": 429,
                "description": "Too Many Requests: retry after 17",
                "parameters": {"retry_after": 17},
            },
        )
    )
    async with serving(api):
        result = await target(api.base).deliver(delivery({"title": "x"}))
    assert (result.outcome, result.retry_after, result.status_code) == ("retry", 17.0, 429)
    assert "retry after 17" in result.detail


@pytest.mark.parametrize(
    ("status", "answer", "outcome", "says"),
    [
        (403, {"description": "Forbidden: bot was blocked by the user"}, "gone", "bot was blocked"),
        (400, {"description": "Bad Request: chat not found"}, "failed", "chat not found"),
        (
            400,
            {"description": "Bad Request: group chat was upgraded", "parameters": {"migrate_to_chat_id": -100987}},
            "failed",
            "set telegram.chat_id to -100987",
        ),
        (502, {"description": "Bad Gateway"}, "retry", "Bad Gateway"),
    ],
)
async def test_refusals_map_onto_outbox_outcomes(status, answer, outcome, says):
    api = FakeBotApi()
    api.replies.append((status, {"ok": False, "error_code": status, **answer}))
    async with serving(api):
        result = await target(api.base).deliver(delivery({"title": "x"}))
    assert result.outcome == outcome and says in result.detail and result.status_code == status


async def test_the_token_never_appears_in_a_detail():
    other = "987654321:ZZZhBP0av28gQWk7ONLf2Kp3hUYhd8Rc1_q"
    async with serving(FakeBotApi()) as api:
        wrong = await target(api.base, bot_token=other).deliver(delivery({"title": "x"}))
    assert wrong.outcome == "failed" and "bot token" in wrong.detail and "Unauthorized" in wrong.detail
    unreachable = await target(f"http://127.0.0.1:{free_port()}").deliver(delivery({"title": "x"}))
    assert unreachable.outcome == "retry" and "cannot reach the Bot API" in unreachable.detail
    refused = await target("http://127.0.0.1:9", outbound=OutboundPolicy()).deliver(delivery({"title": "x"}))
    assert refused.outcome == "failed" and "refused: 127.0.0.1 is a loopback address" in refused.detail
    for result in (wrong, unreachable, refused):
        assert TOKEN not in result.detail and other not in result.detail
        assert TOKEN.split(":")[1] not in result.detail and other.split(":")[1] not in result.detail


async def test_a_markup_error_in_the_template_is_a_permanent_failure():
    async with serving(FakeBotApi()) as api:
        result = await target(api.base, template="<blink>{{ title }}</blink>").deliver(delivery({"title": "x"}))
    assert result.outcome == "failed" and "can't parse entities" in result.detail


# -- settings -------------------------------------------------------------------------------------------


def test_the_token_is_refused_in_the_config_file(database, tmp_path):
    path = tmp_path / "chronos.yaml"
    path.write_text(f"telegram:\n  chat_id: '{CHAT}'\n  bot_token: '{TOKEN}'\n")
    with pytest.raises(kit.ConfigError) as caught:
        kit.make_test_app(database, [("telegram", TelegramPlugin())], path=path)
    assert "CHRONOS__TELEGRAM__BOT_TOKEN" in str(caught.value) and TOKEN not in str(caught.value)


def test_a_malformed_token_is_refused_without_echoing_it(database):
    env = {"CHRONOS__TELEGRAM__BOT_TOKEN": "not-a-token-s3cret"}
    with pytest.raises(kit.ConfigError) as caught:
        kit.make_test_app(database, [("telegram", TelegramPlugin())], {"telegram": {"chat_id": CHAT}}, env=env)
    assert "telegram.bot_token" in str(caught.value) and "s3cret" not in str(caught.value)


async def test_the_token_can_come_from_a_file(tmp_path):
    secret = tmp_path / "token"
    secret.write_text(TOKEN + "\n")
    async with serving(FakeBotApi()) as api:
        t = TelegramTarget(LOOPBACK, TelegramSettings(bot_token_file=secret, chat_id=CHAT), api_base=api.base)
        assert (await t.deliver(delivery({"title": "x"}))).outcome == "delivered"


async def test_without_a_token_or_chat_there_is_no_target(chronos_app):
    async with chronos_app(plugins=["webhooks", ("telegram", TelegramPlugin())]) as app:
        assert "telegram" not in app.state.chronos.delivery_targets


# -- through the outbox ---------------------------------------------------------------------------------


def app_config(**telegram) -> dict:
    return {
        "network": {"allow": ["127.0.0.1/32"]},
        "webhooks": {"retry_schedule_seconds": [0, 0], "jitter_ratio": 0, "timeout_seconds": 2},
        "telegram": {"chat_id": CHAT, "event_types": ["kitchen.*"], **telegram},
    }


async def test_outbox_messages_reach_the_chat_with_the_outboxs_retries(chronos_app, api_client, capsys):
    api = FakeBotApi()
    async with serving(api):
        plugins = ["webhooks", ("alarms", Alarms()), ("telegram", TelegramPlugin(api_base=api.base))]
        env = {"CHRONOS__TELEGRAM__BOT_TOKEN": TOKEN}
        async with chronos_app(plugins=plugins, config=app_config(), env=env) as app:
            assert "telegram" in app.state.chronos.delivery_targets
            api.replies.append(
                (
                    429,
                    {
                        "ok": False,
                        "error_code": 429,
                        "description": "Too Many Requests",
                        "parameters": {"retry_after": 0},
                    },
                )
            )
            await publish(app, {"title": "Tea is ready", "note": "5 min"})
            for _ in range(3):  # rate limited first: the outbox tries again (at once: retry_after 0)
                await dispatch(app)
            assert len(api.calls) == 2 and api.calls[0] == api.calls[1] and "Tea is ready" in api.calls[1]["text"]

            api.replies.append((403, {"ok": False, "error_code": 403, "description": "Forbidden: bot was kicked"}))
            await publish(app, {"title": "Second"})
            await dispatch(app)
            c = await api_client(app, scopes=["admin"])
            r = await c.get("/api/v1/outbox/dead")
            assert r.status_code == 200, r.text
            dead = [d for d in r.json()["items"] if d.get("target") == "telegram"]
            assert len(dead) == 1 and "bot was kicked" in r.text
    out = capsys.readouterr()
    assert TOKEN.split(":")[1] not in out.err + out.out + r.text
