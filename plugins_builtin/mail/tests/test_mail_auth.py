"""SMTP login: the password comes from the environment and never shows up anywhere."""

from __future__ import annotations

import pytest
import yaml

from chronos.testing import ConfigError, client, create_test_key, make_test_app, running_app

PASSWORD = "s3cret-pw"
# The local test server speaks plain SMTP; aiosmtpd warns about AUTH without TLS.
pytestmark = pytest.mark.filterwarnings("ignore:Requiring AUTH while not requiring TLS")


def _config(database, server, **smtp):
    return {
        "database": database.settings_section(),
        "scheduler": {"heartbeat_seconds": 0.5, "leader_retry_seconds": 0.5},
        "logging": {"level": "info"},
        "mail": {
            "from": "chronos@example.com",
            "smtp": {
                "host": server.host,
                "port": server.port,
                "starttls": False,
                "username": "chronos",
                # The local test server has no TLS: logging in over plain SMTP must be allowed explicitly.
                "allow_plaintext_auth": True,
                "timeout_seconds": 5,
                **smtp,
            },
            "retry": {"base_seconds": 0, "max_attempts": 2},
        },
    }


async def _send_one(app, drain):
    c = client(app, await create_test_key(app, ["mail.send"]))
    async with c:
        did = (await c.post("/api/v1/mail/send", json={"to": ["a@example.com"], "subject": "s", "text": "x"})).json()[
            "id"
        ]
        await drain(app)
        return (await c.get(f"/api/v1/mail/deliveries/{did}")).json(), (await c.get("/api/v1/mail/deliveries")).text


async def test_password_from_the_environment(database, tmp_path, smtpd_auth, drain, capfd):
    path = tmp_path / "chronos.yaml"
    path.write_text(yaml.safe_dump(_config(database, smtpd_auth)))
    app = make_test_app(
        database, ["mail"], {"logging": {"level": "info"}}, path=path, env={"CHRONOS__MAIL__SMTP__PASSWORD": PASSWORD}
    )
    async with running_app(app):
        delivery, listing = await _send_one(app, drain)
        assert delivery["status"] == "sent", delivery
        assert smtpd_auth.mailbox.logins == [(b"chronos", PASSWORD.encode())]
        assert PASSWORD not in str(delivery) and PASSWORD not in listing
        assert PASSWORD not in repr(app.state.chronos.section("mail"))
    out, err = capfd.readouterr()
    assert "mail_delivery" in out + err  # the sender did log
    assert PASSWORD not in out + err


async def test_password_file(database, tmp_path, smtpd_auth, drain):
    secret = tmp_path / "smtp-password"
    secret.write_text(PASSWORD + "\n")
    cfg = _config(database, smtpd_auth, password_file=str(secret))
    async with running_app(make_test_app(database, ["mail"], cfg)) as app:
        delivery, _ = await _send_one(app, drain)
        assert delivery["status"] == "sent"


async def test_wrong_password_fails_with_the_servers_reply(database, tmp_path, smtpd_auth, drain):
    # Overrides stand in for the file; the password still comes from the environment.
    app = make_test_app(
        database, ["mail"], _config(database, smtpd_auth), env={"CHRONOS__MAIL__SMTP__PASSWORD": "wrong"}
    )
    async with running_app(app):
        delivery, _ = await _send_one(app, drain)
        assert (delivery["status"], delivery["last_smtp_code"], delivery["attempts"]) == ("failed", 535, 1)
        assert "wrong" not in (delivery["last_smtp_text"] or "")
        assert smtpd_auth.mailbox.received == []


async def test_password_in_the_config_file_is_refused(database, tmp_path, smtpd_auth):
    cfg = _config(database, smtpd_auth)
    cfg["mail"]["smtp"]["password"] = PASSWORD
    path = tmp_path / "chronos.yaml"
    path.write_text(yaml.safe_dump(cfg))
    # Refused while the configuration is validated (so `chronos config check` finds it too).
    with pytest.raises(ConfigError, match="CHRONOS__MAIL__SMTP__PASSWORD") as info:
        make_test_app(database, ["mail"], path=path)
    assert PASSWORD not in str(info.value)


async def test_plaintext_login_is_refused_when_configured(database, smtpd_auth):
    cfg = _config(database, smtpd_auth)
    del cfg["mail"]["smtp"]["allow_plaintext_auth"]
    with pytest.raises(ConfigError, match=r"mail\.smtp\.allow_plaintext_auth: true") as info:
        make_test_app(database, ["mail"], cfg, env={"CHRONOS__MAIL__SMTP__PASSWORD": PASSWORD})
    message = str(info.value)
    assert "\n" not in message.strip() and "starttls" in message, message


async def test_no_password_over_a_connection_without_starttls(database, smtpd_auth, drain):
    # starttls: null upgrades when the server offers it; this server does not, so no login happens.
    cfg = _config(database, smtpd_auth, starttls=None)
    del cfg["mail"]["smtp"]["allow_plaintext_auth"]
    app = make_test_app(database, ["mail"], cfg, env={"CHRONOS__MAIL__SMTP__PASSWORD": PASSWORD})
    async with running_app(app):
        delivery, _ = await _send_one(app, drain)
    assert (delivery["status"], delivery["attempts"]) == ("failed", 1), delivery
    assert "unencrypted" in delivery["last_smtp_text"] and "allow_plaintext_auth" in delivery["last_smtp_text"]
    assert smtpd_auth.mailbox.logins == [] and smtpd_auth.mailbox.received == []


async def test_plaintext_login_when_allowed(database, smtpd_auth, drain):
    cfg = _config(database, smtpd_auth, starttls=None)  # allow_plaintext_auth: true
    app = make_test_app(database, ["mail"], cfg, env={"CHRONOS__MAIL__SMTP__PASSWORD": PASSWORD})
    async with running_app(app):
        delivery, _ = await _send_one(app, drain)
    assert delivery["status"] == "sent", delivery
    assert smtpd_auth.mailbox.logins == [(b"chronos", PASSWORD.encode())]
