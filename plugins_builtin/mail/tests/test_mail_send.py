"""Sending through a real SMTP server (aiosmtpd), on SQLite and PostgreSQL."""

from __future__ import annotations

import asyncio
import base64
import os

from sqlalchemy import select

PDF = os.urandom(40_000) + b"\x00\xff" * 10
ICS = b"BEGIN:VCALENDAR\r\nVERSION:2.0\r\nEND:VCALENDAR\r\n"


def part(msg, kind: str) -> str:
    """A body part's text with the wire's CRLF line ends normalised."""
    return msg.get_body((kind,)).get_content().replace("\r\n", "\n")


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


MESSAGE = {
    "to": ["Ada Lovelace <ada@example.com>", "bob@example.org"],
    "cc": ["carol@example.net"],
    "bcc": ["dave@example.com"],
    "subject": "Your report — März",
    "html": '<h1>Hello Ada</h1><p>See <a href="https://example.com/r/1">the report</a>.</p><ul><li>one</li><li>two</li></ul>',
    "attachments": [
        {"filename": "report.pdf", "content_type": "application/pdf", "content": b64(PDF)},
        {"filename": "invite.ics", "content_type": "text/calendar", "content": b64(ICS)},
    ],
}


async def test_html_mail_with_attachments_is_sent(chronos_app, api_client, smtpd, mail_config, drain):
    async with chronos_app(plugins=["mail"], config=mail_config(smtpd)) as app:
        c = await api_client(app, scopes=["mail.send"])
        r = await c.post("/api/v1/mail/send", json=MESSAGE)
        assert r.status_code == 202, r.text
        d = r.json()
        assert d["status"] == "queued" and r.headers["location"] == f"/api/v1/mail/deliveries/{d['id']}"
        assert await drain(app) is not None

        assert len(smtpd.mailbox.received) == 1
        got = smtpd.mailbox.received[0]
        assert got.mail_from == "chronos@example.com"
        assert sorted(got.rcpt_tos) == sorted(
            ["ada@example.com", "bob@example.org", "carol@example.net", "dave@example.com"]
        )
        msg = got.message
        assert msg["From"] == "Chronos <chronos@example.com>"
        assert msg["To"] == "Ada Lovelace <ada@example.com>, bob@example.org"
        assert msg["Cc"] == "carol@example.net"
        assert msg["Bcc"] is None and b"dave@example.com" not in got.raw
        assert msg["Subject"] == "Your report — März"
        assert msg["Message-ID"] == d["message_id"] and msg["Date"]
        assert msg.get_content_type() == "multipart/mixed"
        alternative = msg.get_payload()[0]
        assert alternative.get_content_type() == "multipart/alternative"
        assert [p.get_content_type() for p in alternative.get_payload()] == ["text/plain", "text/html"]
        assert part(msg, "html") == MESSAGE["html"] + "\n"
        text = part(msg, "plain")
        assert "Hello Ada" in text and "the report (https://example.com/r/1)" in text and "- one" in text
        assert "<" not in text
        atts = list(msg.iter_attachments())
        assert [(a.get_filename(), a.get_content_type()) for a in atts] == [
            ("report.pdf", "application/pdf"),
            ("invite.ics", "text/calendar"),
        ]
        assert atts[0].get_payload(decode=True) == PDF
        assert atts[1].get_payload(decode=True) == ICS

        r = await c.get(f"/api/v1/mail/deliveries/{d['id']}")
        assert r.status_code == 200
        got_d = r.json()
        assert got_d["status"] == "sent" and got_d["attempts"] == 1 and got_d["last_smtp_code"] == 250
        assert got_d["sent_at"].endswith("Z") and got_d["next_attempt_at"] is None
        assert got_d["attachments"] == [
            {"filename": "report.pdf", "content_type": "application/pdf", "size": len(PDF)},
            {"filename": "invite.ics", "content_type": "text/calendar", "size": len(ICS)},
        ]
        assert got_d["text"] == text and got_d["html"] == MESSAGE["html"]
        # Running the job again sends nothing more.
        await drain(app)
        assert len(smtpd.mailbox.received) == 1


async def test_text_only_and_both_parts(chronos_app, api_client, smtpd, mail_config, drain):
    async with chronos_app(plugins=["mail"], config=mail_config(smtpd)) as app:
        c = await api_client(app, scopes=["mail.send"])
        assert (
            await c.post("/api/v1/mail/send", json={"to": ["a@example.com"], "subject": "t", "text": "only text"})
        ).status_code == 202
        both = {"to": ["a@example.com"], "subject": "b", "text": "my text", "html": "<p>my html</p>"}
        assert (await c.post("/api/v1/mail/send", json=both)).status_code == 202
        await drain(app)
        first, second = (m.message for m in smtpd.mailbox.received)
        assert first.get_content_type() == "text/plain" and first.get_content().replace("\r\n", "\n") == "only text\n"
        assert second.get_content_type() == "multipart/alternative"
        assert part(second, "plain") == "my text\n"
        assert part(second, "html") == "<p>my html</p>\n"


async def test_temporary_failure_is_retried_and_sent_once(chronos_app, api_client, smtpd, mail_config, drain):
    smtpd.mailbox.data_replies = ["451 4.3.0 Try again later"]
    async with chronos_app(plugins=["mail"], config=mail_config(smtpd, retry={"base_seconds": 3600})) as app:
        c = await api_client(app, scopes=["mail.send"])
        did = (await c.post("/api/v1/mail/send", json={"to": ["a@example.com"], "subject": "s", "text": "x"})).json()[
            "id"
        ]
        await drain(app)
        d = (await c.get(f"/api/v1/mail/deliveries/{did}")).json()
        assert (d["status"], d["attempts"], d["last_smtp_code"]) == ("retrying", 1, 451)
        assert "Try again later" in d["last_smtp_text"] and d["next_attempt_at"] is not None
        assert smtpd.mailbox.received == []
        listed = (await c.get("/api/v1/mail/deliveries", params={"status": "retrying"})).json()["items"]
        assert [x["id"] for x in listed] == [did]

        # Not due yet: nothing happens. Make it due, as time passing would.
        await drain(app)
        assert smtpd.mailbox.data_attempts == 1
        from chronos.plugin import utcnow

        from chronos_mail.models import MailDelivery

        async with app.state.chronos.db.write() as s:
            row = await s.get(MailDelivery, did)
            row.next_attempt_at = utcnow()
        await drain(app)
        d = (await c.get(f"/api/v1/mail/deliveries/{did}")).json()
        assert (d["status"], d["attempts"], d["last_smtp_code"]) == ("sent", 2, 250)
        assert len(smtpd.mailbox.received) == 1 and smtpd.mailbox.data_attempts == 2


async def test_permanent_failure_is_not_retried(chronos_app, api_client, smtpd, mail_config, drain):
    smtpd.mailbox.data_replies = ["550 5.1.1 Mailbox unavailable"]
    async with chronos_app(plugins=["mail"], config=mail_config(smtpd)) as app:
        c = await api_client(app, scopes=["mail.send"])
        did = (await c.post("/api/v1/mail/send", json={"to": ["a@example.com"], "subject": "s", "text": "x"})).json()[
            "id"
        ]
        await drain(app)
        await drain(app)
        d = (await c.get(f"/api/v1/mail/deliveries/{did}")).json()
        assert (d["status"], d["attempts"], d["last_smtp_code"]) == ("failed", 1, 550)
        assert "Mailbox unavailable" in d["last_smtp_text"]
        assert smtpd.mailbox.data_attempts == 1 and smtpd.mailbox.received == []


async def test_refused_recipients(chronos_app, api_client, smtpd, mail_config, drain):
    smtpd.mailbox.rcpt_replies = {"gone@example.com": "550 5.1.1 No such user"}
    async with chronos_app(plugins=["mail"], config=mail_config(smtpd)) as app:
        c = await api_client(app, scopes=["mail.send"])
        partial = (
            await c.post(
                "/api/v1/mail/send", json={"to": ["a@example.com", "gone@example.com"], "subject": "s", "text": "x"}
            )
        ).json()["id"]
        alone = (
            await c.post("/api/v1/mail/send", json={"to": ["gone@example.com"], "subject": "s", "text": "x"})
        ).json()["id"]
        await drain(app)
        p = (await c.get(f"/api/v1/mail/deliveries/{partial}")).json()
        assert p["status"] == "sent" and p["refused_recipients"] == {"gone@example.com": "550 5.1.1 No such user"}
        a = (await c.get(f"/api/v1/mail/deliveries/{alone}")).json()
        assert (a["status"], a["last_smtp_code"]) == ("failed", 550)
        assert [m.rcpt_tos for m in smtpd.mailbox.received] == [["a@example.com"]]


async def test_connection_refused_retries_until_max_attempts(chronos_app, api_client, mail_config, drain):
    async with chronos_app(plugins=["mail"], config=mail_config(None)) as app:  # nothing listens on the port
        c = await api_client(app, scopes=["mail.send"])
        did = (await c.post("/api/v1/mail/send", json={"to": ["a@example.com"], "subject": "s", "text": "x"})).json()[
            "id"
        ]
        await drain(app)
        d = (await c.get(f"/api/v1/mail/deliveries/{did}")).json()
        # base_seconds=0: each retry is due at once, so one run uses all three attempts.
        assert (d["status"], d["attempts"], d["last_smtp_code"]) == ("failed", 3, None)
        assert "Connect" in d["last_smtp_text"] or "refused" in d["last_smtp_text"].lower()


async def test_idempotent_retry_sends_one_message(chronos_app, api_client, smtpd, mail_config, drain):
    async with chronos_app(plugins=["mail"], config=mail_config(smtpd)) as app:
        c = await api_client(app, scopes=["mail.send"])
        body = {"to": ["a@example.com"], "subject": "once", "text": "x"}
        h = {"Idempotency-Key": "order-42-confirmation"}
        first = await c.post("/api/v1/mail/send", json=body, headers=h)
        await drain(app)
        again = await c.post("/api/v1/mail/send", json=body, headers=h)
        assert again.status_code == 202 and again.json()["id"] == first.json()["id"]
        assert again.headers["idempotency-replayed"] == "true" and again.json()["status"] == "sent"
        other = await c.post("/api/v1/mail/send", json={**body, "subject": "twice"}, headers=h)
        assert other.status_code == 409 and other.json()["delivery_id"] == first.json()["id"]
        # Another key holder may use the same key for its own message.
        c2 = await api_client(app, scopes=["mail.send"])
        assert (await c2.post("/api/v1/mail/send", json=body, headers=h)).json()["id"] != first.json()["id"]
        await drain(app)
        assert [m.message["Subject"] for m in smtpd.mailbox.received] == ["once", "once"]
        assert len((await c.get("/api/v1/mail/deliveries")).json()["items"]) == 2


async def test_concurrent_runners_never_send_twice(chronos_app, api_client, smtpd, mail_config, drain):
    from chronos_mail.sender import MailSender

    async with chronos_app(plugins=["mail"], config=mail_config(smtpd, batch_size=3)) as app:
        ctx = app.state.chronos
        c = await api_client(app, scopes=["mail.send"])
        await drain(app)
        # Queue without waking the job, then let three independent runners race.
        ctx.jobs.jobs.pop("mail.send")
        for i in range(12):
            assert (
                await c.post("/api/v1/mail/send", json={"to": ["a@example.com"], "subject": f"m{i}", "text": "x"})
            ).status_code == 202
        runners = [MailSender(ctx) for _ in range(3)]
        claims = await asyncio.gather(*(r.claim(5) for r in runners))
        ids = [d.id for batch in claims for d in batch]
        assert len(ids) == len(set(ids)) == 12
        # Claimed rows are leased: nobody else gets them now.
        assert await MailSender(ctx).claim(50) == []
        from chronos_mail.models import MailDelivery

        # As if those runners had died: their leases end and the rows are due again.
        async with ctx.db.write() as s:
            await s.execute(MailDelivery.__table__.update().values(locked_until=None, locked_by=None))
        results = await asyncio.gather(*(r.run(None) for r in runners))
        assert sum(r["sent"] for r in results) == 12
        subjects = sorted(m.message["Subject"] for m in smtpd.mailbox.received)
        assert subjects == sorted(f"m{i}" for i in range(12))
        async with ctx.db.read() as s:
            rows = (await s.execute(select(MailDelivery))).scalars().all()
        # The abandoned claim counts as an attempt.
        assert {(r.status, r.attempts) for r in rows} == {("sent", 2)}


async def test_list_and_cursor(chronos_app, api_client, smtpd, mail_config):
    async with chronos_app(plugins=["mail"], config=mail_config(smtpd)) as app:
        c = await api_client(app, scopes=["mail.send"])
        ids = [
            (await c.post("/api/v1/mail/send", json={"to": ["a@example.com"], "subject": str(i), "text": "x"})).json()[
                "id"
            ]
            for i in range(5)
        ]
        page = (await c.get("/api/v1/mail/deliveries", params={"limit": 2})).json()
        seen = [d["id"] for d in page["items"]]
        while page["next_cursor"]:
            page = (await c.get("/api/v1/mail/deliveries", params={"limit": 2, "cursor": page["next_cursor"]})).json()
            seen += [d["id"] for d in page["items"]]
        assert seen == sorted(ids, reverse=True)
        assert (await c.get("/api/v1/mail/deliveries", params={"cursor": "forged"})).status_code == 400
        assert (await c.get("/api/v1/mail/deliveries", params={"status": "bogus"})).status_code == 422
        assert (await c.get("/api/v1/mail/deliveries/999999")).status_code == 404
        monitor = await api_client(app, scopes=["health.read"])
        health = (await monitor.get("/health")).json()["checks"]["mail.queue"]
        assert health["status"] == "ok" and health["configured"] is True and "queued" in health
        reader = await api_client(app, scopes=["events.read"])
        assert (await reader.get("/api/v1/mail/deliveries")).status_code == 403
        assert (
            await reader.post("/api/v1/mail/send", json={"to": ["a@example.com"], "subject": "s", "text": "x"})
        ).status_code == 403


async def test_mail_queued_while_a_run_ends_is_sent_without_waiting_for_the_poll(
    chronos_app, api_client, smtpd, mail_config, drain
):
    """The run has made its last (empty) claim but has not ended: the kick meets JobBusy.
    The mail must still go out at once, not at the next poll (an hour away here)."""
    from chronos_mail.sender import SENDER

    async with chronos_app(plugins=["mail"], config=mail_config(smtpd, poll_interval_seconds=3600)) as app:
        c = await api_client(app, scopes=["mail.send"])
        await drain(app)
        runner = app.state.chronos.jobs
        sender = app.state.chronos.resource(SENDER)
        original = sender.run
        past_last_claim, release = asyncio.Event(), asyncio.Event()

        async def gated(job):
            counts = await original(job)  # its last claim found nothing
            past_last_claim.set()
            await release.wait()  # ...and it has not ended yet
            return counts

        sender.run = gated
        first = runner.run_now("mail.send")
        await past_last_claim.wait()
        r = await c.post("/api/v1/mail/send", json={"to": ["ada@example.com"], "subject": "s", "text": "x"})
        assert r.status_code == 202, r.text
        assert runner.running["mail.send"] is first and not first.done()  # the kick met JobBusy
        assert smtpd.mailbox.received == []
        sender.run = original
        release.set()
        assert await first == {"sent": 0, "retrying": 0, "failed": 0}
        second = runner.running["mail.send"]
        assert second is not first, "no run was started for the mail queued while the last one ended"
        assert (await asyncio.wait_for(second, 10))["sent"] == 1
        assert len(smtpd.mailbox.received) == 1
        assert (await c.get(f"/api/v1/mail/deliveries/{r.json()['id']}")).json()["status"] == "sent"
