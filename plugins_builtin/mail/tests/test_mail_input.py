"""Bad input: a clear 413/422, nothing stored, nothing sent, nothing crashes."""

from __future__ import annotations

import base64

from sqlalchemy import func, select

OK = {"to": ["a@example.com"], "subject": "s", "text": "x"}


async def _count(app) -> int:
    from chronos_mail.models import MailDelivery

    async with app.state.chronos.db.read() as s:
        return (await s.execute(select(func.count()).select_from(MailDelivery))).scalar_one()


BAD = [
    ({"subject": "Hi\r\nBcc: evil@example.com"}, "/subject"),
    ({"subject": "Hi\nX-Injected: 1"}, "/subject"),
    ({"to": ["a@example.com\r\nBcc: evil@example.com"]}, "/to/0"),
    ({"to": ["Ada\r\n <a@example.com>"]}, "/to/0"),
    ({"cc": ["ok@example.com", "no-at-sign"]}, "/cc/1"),
    ({"bcc": ["a@@example.com"]}, "/bcc/0"),
    ({"to": ["a@localhost"]}, "/to/0"),
    ({"to": ["a@[192.0.2.1]"]}, "/to/0"),
    ({"to": ["a@exa mple.com"]}, "/to/0"),
    ({"to": ["Ada <a@example.com>, b@example.com"]}, "/to/0"),
    ({"to": ["ädä@example.com"]}, "/to/0"),
    ({"to": ["a@-example.com"]}, "/to/0"),
    ({"to": ["a..b@example.com"]}, "/to/0"),
    ({"attachments": [{"filename": "a.txt", "content": "!!!not base64!!!"}]}, "/attachments/0/content"),
    ({"attachments": [{"filename": "a.txt", "content": "YWJj="}]}, "/attachments/0/content"),
    ({"attachments": [{"filename": "a\r\nContent-Type: text/html", "content": "YWJj"}]}, "/attachments/0/filename"),
    ({"attachments": [{"filename": "../../etc/passwd", "content": "YWJj"}]}, "/attachments/0/filename"),
    (
        {"attachments": [{"filename": "a.eml", "content_type": "multipart/mixed", "content": "YWJj"}]},
        "/attachments/0/content_type",
    ),
    (
        {"attachments": [{"filename": "a.bin", "content_type": "text/html\r\nX: y", "content": "YWJj"}]},
        "/attachments/0/content_type",
    ),
]


async def test_bad_input_is_422_and_nothing_is_stored(chronos_app, api_client, smtpd, mail_config, drain):
    async with chronos_app(plugins=["mail"], config=mail_config(smtpd)) as app:
        c = await api_client(app, scopes=["mail.send"])
        for change, pointer in BAD:
            r = await c.post("/api/v1/mail/send", json={**OK, **change})
            assert r.status_code == 422, (change, r.text)
            assert r.headers["content-type"] == "application/problem+json"
            assert pointer in [e["pointer"] for e in r.json()["errors"]], (change, r.json())
        assert await _count(app) == 0
        await drain(app)
        assert smtpd.mailbox.received == [] and smtpd.mailbox.data_attempts == 0


async def test_limits_and_shapes(chronos_app, api_client, smtpd, mail_config, drain):
    config = mail_config(smtpd, max_attachment_bytes=1000, max_recipients=3)
    async with chronos_app(plugins=["mail"], config=config) as app:
        c = await api_client(app, scopes=["mail.send"])
        big = base64.b64encode(b"x" * 1001).decode()
        r = await c.post("/api/v1/mail/send", json={**OK, "attachments": [{"filename": "a", "content": big}]})
        assert r.status_code == 413 and r.json()["limit"] == 1000
        halves = [{"filename": f"{i}", "content": base64.b64encode(b"x" * 600).decode()} for i in range(2)]
        assert (await c.post("/api/v1/mail/send", json={**OK, "attachments": halves})).status_code == 413
        # Exactly at the limit is fine; line-wrapped base64 is accepted.
        wrapped = base64.encodebytes(b"y" * 1000).decode()
        r = await c.post("/api/v1/mail/send", json={**OK, "attachments": [{"filename": "ok.bin", "content": wrapped}]})
        assert r.status_code == 202, r.text

        r = await c.post(
            "/api/v1/mail/send",
            json={**OK, "to": ["a@example.com", "b@example.com"], "cc": ["c@example.com"], "bcc": ["d@example.com"]},
        )
        assert r.status_code == 422 and "limit is 3" in r.text
        for body in (
            {"to": [], "subject": "s", "text": "x"},
            {"to": ["a@example.com"], "text": "x"},
            {"to": ["a@example.com"], "subject": "s"},
            {**OK, "template_id": 1},
            {**OK, "unknown": 1},
            {"to": "a@example.com", "subject": "s", "text": "x"},
        ):
            r = await c.post("/api/v1/mail/send", json=body)
            assert r.status_code == 422, (body, r.text)
        r = await c.post("/api/v1/mail/send", content=b"{not json", headers={"content-type": "application/json"})
        assert r.status_code == 400
        r = await c.post("/api/v1/mail/send", json=OK, headers={"Idempotency-Key": "bad key with spaces"})
        assert r.status_code == 422
        await drain(app)
        assert len(smtpd.mailbox.received) == 1


async def test_unconfigured_sender_is_503(chronos_app, api_client):
    async with chronos_app(plugins=["mail"]) as app:
        c = await api_client(app, scopes=["mail.send"])
        r = await c.post("/api/v1/mail/send", json=OK)
        assert r.status_code == 503 and "mail.from" in r.json()["detail"]
