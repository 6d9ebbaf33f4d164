"""Templates and mail benchmark: renders per second and messages per second.

Rendering (no database) of a typical email template — a subject, an HTML body
with a ten-row loop, a filter and a condition, and a text body:

* ``plain jinja2`` (the floor): ``jinja2.Environment`` without a sandbox,
  templates compiled once, rendered in the calling thread;
* ``sandbox``: the plugin's bounded ``ImmutableSandboxedEnvironment``
  (loop, output, time and size guards) in the calling thread;
* ``service``: what the routes call — JSON Schema validation of the
  variables, then the render in a worker thread; one at a time and 8 at once.

Mail to a local aiosmtpd server (in this process, its own thread), N messages
of one recipient with ~3 KB of HTML and a derived text part:

* ``raw aiosmtplib`` (the floor): prebuilt messages over one connection;
* ``enqueue``: ``MailQueue.enqueue`` — validation, text part, one insert and
  one audit row per message (no HTTP);
* ``mail.send job``: claim batches, build MIME, send over one reused
  connection, record each outcome — until the queue is empty.

Every run checks that the server received exactly N messages and every
delivery is ``sent``.

Usage::

    python bench/templates_mail.py                      # both backends
    python bench/templates_mail.py --backends sqlite --renders 2000 --messages 200
"""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import socket
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
PG_URL = os.environ.get("CHRONOS_TEST_PG_URL", "postgresql+asyncpg://postgres@127.0.0.1:5432/test")

SUBJECT = "Your order #{{ order.id }} has shipped, {{ user.name }}"
HTML = """<!doctype html><html><body style="font-family:sans-serif">
<h1>Hello {{ user.name }},</h1>
<p>Your order <b>#{{ order.id }}</b> from {{ order.date }} is on its way.</p>
<table>{% for item in order['items'] %}
  <tr><td>{{ loop.index }}</td><td>{{ item.name|title }}</td><td>{{ item.qty }}</td>
      <td>{{ '%.2f'|format(item.price * item.qty) }} €</td></tr>{% endfor %}
</table>
<p>Total: <b>{{ '%.2f'|format(order.total) }} €</b></p>
{% if user.vip %}<p>As a VIP you get free returns.</p>{% endif %}
<p><a href="https://shop.example.com/orders/{{ order.id }}">Track your parcel</a></p>
</body></html>"""
TEXT = """Hello {{ user.name }},
your order #{{ order.id }} is on its way.
{% for item in order['items'] %}- {{ item.qty }} x {{ item.name }}
{% endfor %}Total: {{ '%.2f'|format(order.total) }} EUR"""
SCHEMA = {
    "type": "object",
    "properties": {
        "user": {
            "type": "object",
            "properties": {"name": {"type": "string"}, "vip": {"type": "boolean"}},
            "required": ["name"],
        },
        "order": {"type": "object", "required": ["id", "items", "total"]},
    },
    "required": ["user", "order"],
}


def variables() -> dict[str, Any]:
    items = [{"name": f"item number {i}", "qty": i % 3 + 1, "price": 3.5 + i} for i in range(10)]
    return {
        "user": {"name": "Ada <Lovelace>", "vip": True},
        "order": {
            "id": 48213,
            "date": "2026-11-28",
            "items": items,
            "total": sum(i["qty"] * i["price"] for i in items),
        },
    }


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def rate(n: int, seconds: float) -> str:
    return f"{n / seconds:,.0f}"


# -- rendering ----------------------------------------------------------------------------


async def bench_render(n: int) -> list[tuple[str, float]]:
    import jinja2

    from chronos_templates.sandbox import Limits, TemplateSandbox
    from chronos_templates.service import TemplateService
    from chronos_templates.settings import TemplatesSettings

    v = variables()
    plain_text = jinja2.Environment()
    plain_html = jinja2.Environment(autoescape=True)
    compiled = (plain_text.from_string(SUBJECT), plain_html.from_string(HTML), plain_text.from_string(TEXT))
    sandbox = TemplateSandbox(Limits())
    parts = {"subject": (SUBJECT, False), "html": (HTML, True), "text": (TEXT, False)}
    service = TemplateService(TemplatesSettings())

    class Row:  # the stored template, as the service sees it
        type, content, variables_json = "email", {"subject": SUBJECT, "html": HTML, "text": TEXT}, SCHEMA

    # Same output from every path, or the comparison is meaningless.
    floor_out = [t.render(v) for t in compiled]
    assert sandbox.render(parts, v)["html"] == floor_out[1]
    assert (await service.render(Row, v))["html"] == floor_out[1]

    results = []
    t = time.perf_counter()
    for _ in range(n):
        for tpl in compiled:
            tpl.render(v)
    results.append(("plain jinja2, same thread (floor)", n / (time.perf_counter() - t)))

    t = time.perf_counter()
    for _ in range(n):
        sandbox.render(parts, v)
    results.append(("sandbox, same thread", n / (time.perf_counter() - t)))

    t = time.perf_counter()
    for _ in range(n):
        await service.render(Row, v)
    results.append(("service: schema + worker thread", n / (time.perf_counter() - t)))

    t = time.perf_counter()
    for _ in range(n // 8):
        await asyncio.gather(*(service.render(Row, v) for _ in range(8)))
    results.append(("service, 8 concurrent", (n // 8 * 8) / (time.perf_counter() - t)))
    service.close()
    return results


# -- mail ---------------------------------------------------------------------------------


class Sink:
    def __init__(self) -> None:
        self.count = 0

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:  # noqa: N802
        self.count += 1
        return "250 OK"


def message_body(i: int, html: str) -> dict[str, Any]:
    return {"to": [f"user{i}@example.com"], "subject": f"Your order #{i} has shipped", "html": html}


async def bench_raw_smtp(port: int, sink: Sink, n: int, html: str) -> float:
    import aiosmtplib

    from chronos.plugin import utcnow

    from chronos_mail.addresses import parse_address
    from chronos_mail.mime import build_message, html_to_text

    sender = parse_address("Shop <shop@example.com>")
    msgs = [
        build_message(
            sender=sender,
            to=[parse_address(f"user{i}@example.com")],
            cc=[],
            subject=f"Order #{i}",
            html=html,
            text=html_to_text(html),
            attachments=[],
            message_id=f"<{i}.bench@example.com>",
            date=utcnow(),
        )
        for i in range(n)
    ]
    before = sink.count
    client = aiosmtplib.SMTP(hostname="127.0.0.1", port=port, start_tls=False, timeout=30)
    t = time.perf_counter()
    await client.connect()
    for i, m in enumerate(msgs):
        await client.send_message(m, sender="shop@example.com", recipients=[f"user{i}@example.com"])
    await client.quit()
    elapsed = time.perf_counter() - t
    assert sink.count - before == n, (sink.count, n)
    return n / elapsed


async def bench_chronos_mail(backend: str, port: int, sink: Sink, n: int, html: str) -> list[tuple[str, float]]:
    from sqlalchemy import func, select

    from chronos.app import create_app
    from chronos.plugin import MailQueue, OutgoingMail
    from chronos.settings import load_settings
    from chronos.testing import running_app, temporary_database

    from chronos_mail.models import MailDelivery

    with tempfile.TemporaryDirectory() as tmp:
        async with temporary_database(backend, Path(tmp)) as db:
            database = {**db.settings_section(), "pool_size": 10}
            settings = load_settings(
                path=None,
                env={},
                database=database,
                logging={"level": "error"},
                plugins={"enabled": ["mail"]},
                mail={
                    "from": "Shop <shop@example.com>",
                    "batch_size": 50,
                    "smtp": {"host": "127.0.0.1", "port": port, "starttls": False},
                },
            )
            app = create_app(settings, plugins=["mail"], run_jobs=False, env={})
            async with running_app(app):
                ctx = app.state.chronos
                # Queue first, send after: keep the enqueue from waking the job.
                job = ctx.jobs.jobs.pop("mail.send")
                queue = ctx.service(MailQueue)
                t = time.perf_counter()
                for i in range(n):
                    b = message_body(i, html)
                    await queue.enqueue(OutgoingMail(to=b["to"], subject=b["subject"], html=b["html"]))
                enqueue_rate = n / (time.perf_counter() - t)
                ctx.jobs.jobs["mail.send"] = job
                before = sink.count
                t = time.perf_counter()
                counts = await ctx.jobs.run_now("mail.send")
                send_rate = n / (time.perf_counter() - t)
                assert counts == {"sent": n, "retrying": 0, "failed": 0}, counts
                assert sink.count - before == n
                async with ctx.db.read() as s:
                    sent = (await s.execute(select(func.count()).where(MailDelivery.status == "sent"))).scalar_one()
                assert sent == n
    return [
        (f"enqueue (MailQueue.enqueue), {backend}", enqueue_rate),
        (f"mail.send job (claim, MIME, SMTP, record), {backend}", send_rate),
    ]


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--renders", type=int, default=5000)
    parser.add_argument("--messages", type=int, default=500)
    parser.add_argument("--backends", default="sqlite,postgresql")
    args = parser.parse_args()
    for sub in ("templates", "mail"):
        sys.path.insert(0, str(ROOT / "plugins_builtin" / sub))

    print(
        f"# Python {platform.python_version()} on {platform.machine()}, {os.cpu_count()} CPUs; "
        f"{args.renders} renders, {args.messages} messages\n"
    )
    rows = await bench_render(args.renders)
    floor = rows[0][1]
    print("Rendering a typical email template (subject + HTML with a 10-row loop + text)")
    print(f"| {'path':42} | {'renders/s':>10} | {'vs floor':>8} |")
    print(f"|{'-' * 44}|{'-' * 12}|{'-' * 10}|")
    for name, value in rows:
        print(f"| {name:42} | {value:>10,.0f} | {value / floor:>7.0%} |")

    from aiosmtpd.controller import Controller

    html = sandbox_html()
    sink = Sink()
    port = free_port()
    controller = Controller(sink, hostname="127.0.0.1", port=port)
    controller.start()
    try:
        raw = await bench_raw_smtp(port, sink, args.messages, html)
        mail_rows = [("raw aiosmtplib, one connection (floor)", raw)]
        for backend in [b.strip() for b in args.backends.split(",") if b.strip()]:
            mail_rows += await bench_chronos_mail(backend, port, sink, args.messages, html)
    finally:
        controller.stop()
    print(f"\nMail to a local aiosmtpd ({args.messages} messages, {len(html):,} chars of HTML, text derived)")
    print(f"| {'path':55} | {'msgs/s':>8} | {'vs floor':>8} |")
    print(f"|{'-' * 57}|{'-' * 10}|{'-' * 10}|")
    for name, value in mail_rows:
        print(f"| {name:55} | {value:>8,.0f} | {value / raw:>7.0%} |")


def sandbox_html() -> str:
    """The benchmark template's HTML, rendered once: the body every message carries."""
    import jinja2

    return jinja2.Environment(autoescape=True).from_string(HTML).render(variables())


if __name__ == "__main__":
    asyncio.run(main())
