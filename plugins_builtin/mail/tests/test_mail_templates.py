"""The mail and templates plugins together, through their kernel contracts only."""

from __future__ import annotations

from sqlalchemy import func, select

RECEIPT = {
    "name": "receipt",
    "type": "email",
    "variables_json": {
        "type": "object",
        "properties": {"name": {"type": "string"}, "total": {"type": "number"}},
        "required": ["name", "total"],
    },
    "content": {
        "subject": "Receipt for {{ name }}",
        "html": "<p>Thanks {{ name }}!</p><p>Total: <b>{{ '%.2f'|format(total) }} €</b></p>",
    },
}


async def _count(app) -> int:
    from chronos_mail.models import MailDelivery

    async with app.state.chronos.db.read() as s:
        return (await s.execute(select(func.count()).select_from(MailDelivery))).scalar_one()


async def test_send_with_a_template(chronos_app, api_client, smtpd, mail_config, drain):
    async with chronos_app(plugins=["templates", "mail"], config=mail_config(smtpd)) as app:
        c = await api_client(app, scopes=["mail.send", "templates.manage"])
        tid = (await c.post("/api/v1/templates", json=RECEIPT)).json()["id"]
        body = {"to": ["ada@example.com"], "template_id": tid, "variables": {"name": "<Ada>", "total": 12.5}}
        r = await c.post("/api/v1/mail/send", json=body, headers={"Idempotency-Key": "receipt-1"})
        assert r.status_code == 202, r.text
        d = r.json()
        assert (d["template_id"], d["template_name"], d["subject"]) == (tid, "receipt", "Receipt for <Ada>")
        await drain(app)
        msg = smtpd.mailbox.received[0].message
        assert msg["Subject"] == "Receipt for <Ada>"
        html = msg.get_body(("html",)).get_content()
        assert "Thanks &lt;Ada&gt;!" in html and "12.50 €" in html
        text = msg.get_body(("plain",)).get_content()
        assert "Thanks <Ada>!" in text and "Total: 12.50 €" in text  # derived from the HTML

        # A retry after the template changed is still the same request: replayed, not a 409.
        assert (
            await c.patch(f"/api/v1/templates/{tid}", json={"content": {"subject": "New {{ name }}"}})
        ).status_code == 200
        again = await c.post("/api/v1/mail/send", json=body, headers={"Idempotency-Key": "receipt-1"})
        assert again.status_code == 202 and again.json()["id"] == d["id"]
        await drain(app)
        assert len(smtpd.mailbox.received) == 1


async def test_template_problems_are_422_and_nothing_is_queued(chronos_app, api_client, smtpd, mail_config, drain):
    async with chronos_app(plugins=["templates", "mail"], config=mail_config(smtpd)) as app:
        c = await api_client(app, scopes=["mail.send", "templates.manage"])
        tid = (await c.post("/api/v1/templates", json=RECEIPT)).json()["id"]
        hook = {"name": "hook", "type": "webhook", "content": {"body": "{}"}}
        hook_id = (await c.post("/api/v1/templates", json=hook)).json()["id"]

        r = await c.post(
            "/api/v1/mail/send", json={"to": ["a@example.com"], "template_id": tid, "variables": {"total": 1}}
        )
        assert r.status_code == 422 and r.json()["errors"][0]["pointer"] == "/variables/name"
        r = await c.post("/api/v1/mail/send", json={"to": ["a@example.com"], "template_id": 999999})
        assert r.status_code == 422 and r.json()["errors"][0]["pointer"] == "/template_id"
        r = await c.post("/api/v1/mail/send", json={"to": ["a@example.com"], "template_id": hook_id})
        assert r.status_code == 422 and r.json()["type"] == "urn:chronos:problem:template-type"
        # Header injection through a variable that lands in the subject.
        evil = {"name": "x\r\nBcc: victim@example.com", "total": 1}
        r = await c.post("/api/v1/mail/send", json={"to": ["a@example.com"], "template_id": tid, "variables": evil})
        assert r.status_code == 422 and r.json()["errors"][0]["pointer"] == "/subject"
        r = await c.post(f"/api/v1/templates/{tid}/test-send", json={"to": "a@example.com", "variables": evil})
        assert r.status_code == 422
        assert await _count(app) == 0
        await drain(app)
        assert smtpd.mailbox.data_attempts == 0


async def test_test_send(chronos_app, api_client, smtpd, mail_config, drain):
    async with chronos_app(plugins=["templates", "mail"], config=mail_config(smtpd)) as app:
        c = await api_client(app, scopes=["mail.send", "templates.manage"])
        tid = (await c.post("/api/v1/templates", json=RECEIPT)).json()["id"]
        body = {"to": "me@example.com", "variables": {"name": "Me", "total": 3}}
        h = {"Idempotency-Key": "test-1"}
        r = await c.post(f"/api/v1/templates/{tid}/test-send", json=body, headers=h)
        assert r.status_code == 202, r.text
        again = await c.post(f"/api/v1/templates/{tid}/test-send", json=body, headers=h)
        assert again.status_code == 202 and again.json()["delivery_id"] == r.json()["delivery_id"]
        assert again.headers["idempotency-replayed"] == "true"
        other = await c.post(f"/api/v1/templates/{tid}/test-send", json={**body, "to": "you@example.com"}, headers=h)
        assert other.status_code == 409
        await drain(app)
        assert [m.rcpt_tos for m in smtpd.mailbox.received] == [["me@example.com"]]
        assert smtpd.mailbox.received[0].message["Subject"] == "Receipt for Me"
        d = (await c.get(f"/api/v1/mail/deliveries/{r.json()['delivery_id']}")).json()
        assert d["template_id"] == tid and d["status"] == "sent"
        # A test send is not a use of the template.
        assert (await c.get(f"/api/v1/templates/{tid}", headers={})).status_code == 403
        reader = await api_client(app, scopes=["events.read"])
        assert (await reader.get(f"/api/v1/templates/{tid}")).json()["usage_count"] == 0
        assert (await reader.post(f"/api/v1/templates/{tid}/test-send", json=body)).status_code == 403


async def test_template_send_without_templates_plugin_is_503(chronos_app, api_client, smtpd, mail_config):
    async with chronos_app(plugins=["mail"], config=mail_config(smtpd)) as app:
        c = await api_client(app, scopes=["mail.send"])
        r = await c.post("/api/v1/mail/send", json={"to": ["a@example.com"], "template_id": 1})
        assert r.status_code == 503 and r.json()["plugin"] == "templates"
        assert await _count(app) == 0
