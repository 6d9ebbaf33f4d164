"""Outbox and webhook delivery benchmark (issue 12: integrations through one outbox).

1. Deliveries per second to a local receiver (a separate process answering 204)
   with 1, 10 and 100 endpoints, next to the floor: a bare ``httpx`` loop
   posting the same bodies with the same concurrency (``webhooks.max_in_flight``).
   The Chronos side is the dispatcher only (fan-out, claims, signing, POST,
   recording every attempt); the messages are stored beforehand.
2. Outbox overhead on a write transaction (what a command completion pays):
   p50 of a write transaction with one ``Outbox.enqueue`` minus p50 of the same
   transaction without it.
3. A receiver that is down: messages published while nothing listens are
   attempted (connection refused) and kept for their retry (due in 10 minutes);
   the receiver comes back, the outage is compressed (the retries' due time is
   moved to now) and the backlog drains. What is measured is that nothing is
   lost and the drain rate next to the floor.

Prints one table per backend. Not a test: the numbers depend on the machine.

    .venv/bin/python bench/outbox.py                       # SQLite and PostgreSQL
    .venv/bin/python bench/outbox.py --backends sqlite -n 1000
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from typing import Any

import httpx

from _fixtures import make_schema

PG_URL = os.environ.get("CHRONOS_TEST_PG_URL", "postgresql+asyncpg://postgres@127.0.0.1:5432/test")
IN_FLIGHT = 64


# -- the receiver (a subprocess) --------------------------------------------------------------


async def _serve(port: int) -> None:
    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                length = 0
                for line in head.split(b"\r\n"):
                    if line[:15].lower() == b"content-length:":
                        length = int(line[15:])
                await reader.readexactly(length)
                writer.write(b"HTTP/1.1 204 No Content\r\nContent-Length: 0\r\n\r\n")
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", port, backlog=1024)
    async with server:
        await server.serve_forever()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Receiver:
    def __init__(self, port: int) -> None:
        self.port = port
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        self.proc = subprocess.Popen([sys.executable, __file__, "--receive", str(self.port)])
        for _ in range(200):
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.2):
                    return
            except OSError:
                time.sleep(0.05)
        raise RuntimeError("the receiver did not start")

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.terminate()
            self.proc.wait(timeout=10)
            self.proc = None


# -- the floor ---------------------------------------------------------------------------------


async def floor(urls: list[str], bodies: list[bytes]) -> float:
    """Seconds for a bare httpx loop to POST every body (to the URLs in turn) with IN_FLIGHT in flight."""
    limits = httpx.Limits(max_connections=IN_FLIGHT, max_keepalive_connections=IN_FLIGHT)
    sem = asyncio.Semaphore(IN_FLIGHT)
    async with httpx.AsyncClient(limits=limits, timeout=15) as client:

        async def one(i: int, body: bytes) -> None:
            async with sem:
                r = await client.post(urls[i % len(urls)], content=body, headers={"Content-Type": "application/json"})
                r.raise_for_status()

        t = time.perf_counter()
        await asyncio.gather(*(one(i, b) for i, b in enumerate(bodies)))
        return time.perf_counter() - t


# -- Chronos -----------------------------------------------------------------------------------


def settings_for(url: str, schema: str | None, schedule: list[float]) -> Any:
    from chronos.settings import load_settings

    database: dict[str, Any] = {"url": url, "pool_size": 10}
    if schema:
        database["schema"] = schema
    return load_settings(
        path=None,
        env={},
        database=database,
        logging={"level": "error"},
        plugins={"enabled": ["webhooks", "commands"]},
        network={"allow": ["127.0.0.1/32"]},
        webhooks={"retry_schedule_seconds": schedule, "jitter_ratio": 0, "max_in_flight": IN_FLIGHT},
    )


async def add_endpoints(ctx: Any, urls: list[str]) -> None:
    from chronos_webhooks import service
    from chronos_webhooks.schemas import WebhookIn

    for url in urls:
        await service.create_endpoint(ctx, WebhookIn(url=url, event_types=["command.*"]), None)


async def store_messages(ctx: Any, n: int) -> None:
    """``n`` published messages, stored with one bulk insert (setup: no dispatcher is woken)."""
    from sqlalchemy import insert

    from chronos.plugin import utcnow

    from chronos_webhooks.models import OutboxRow
    from chronos_webhooks.outbox import new_webhook_id

    now = utcnow()
    rows = [
        {
            "webhook_id": new_webhook_id(),
            "event_type": "command.completed",
            "payload": {"id": i, "command": "PING", "target_system": "bench", "status": "completed"},
            "fanned_out": False,
            "created_at": now,
        }
        for i in range(n)
    ]
    async with ctx.db.write() as s:
        await s.execute(insert(OutboxRow), rows)


async def counts(ctx: Any) -> dict[str, int]:
    from sqlalchemy import func, select

    from chronos_webhooks.models import DeliveryRow

    async with ctx.db.read() as s:
        return dict((await s.execute(select(DeliveryRow.status, func.count()).group_by(DeliveryRow.status))).all())


async def due_now(ctx: Any) -> None:
    """Move every pending retry's due time to now (time passing, compressed)."""
    from sqlalchemy import update

    from chronos.plugin import utcnow

    from chronos_webhooks.models import DeliveryRow

    async with ctx.db.write() as s:
        await s.execute(update(DeliveryRow).where(DeliveryRow.status == "pending").values(next_attempt_at=utcnow()))


async def drain(ctx: Any) -> float:
    """Seconds for the dispatcher to deliver everything that is due."""
    from chronos_webhooks.dispatcher import DISPATCHER

    t = time.perf_counter()
    await ctx.resource(DISPATCHER).run()
    return time.perf_counter() - t


def sample_bodies(n: int) -> list[bytes]:
    return [
        json.dumps(
            {
                "type": "command.completed",
                "timestamp": "2026-12-07T06:00:00.000000Z",
                "data": {"id": i, "command": "PING", "target_system": "bench", "status": "completed"},
            },
            separators=(",", ":"),
        ).encode()
        for i in range(n)
    ]


async def with_app(backend: str, tmp: str, schedule: list[float], work: Any) -> Any:
    from chronos.app import create_app
    from chronos.testing import running_app

    schema = None
    if backend == "sqlite":
        url = f"sqlite+aiosqlite:///{tmp}/outbox-{uuid.uuid4().hex[:8]}.db"
    else:
        url, schema = PG_URL, f"bench_{uuid.uuid4().hex[:12]}"
        await make_schema(PG_URL, schema)
    try:
        app = create_app(settings_for(url, schema, schedule), run_jobs=False, env={})
        async with running_app(app):
            return await work(app.state.chronos)
    finally:
        if schema:
            await make_schema(PG_URL, schema, drop=True)


async def throughput(backend: str, tmp: str, receiver: Receiver, endpoints: int, n: int) -> dict[str, Any]:
    urls = [f"http://127.0.0.1:{receiver.port}/hook/{i}" for i in range(endpoints)]
    messages = max(1, n // endpoints)
    total = messages * endpoints

    async def work(ctx: Any) -> dict[str, Any]:
        await add_endpoints(ctx, urls)
        await store_messages(ctx, messages)
        seconds = await drain(ctx)
        return {"seconds": seconds, "counts": await counts(ctx)}

    got = await with_app(backend, tmp, [5.0], work)
    floor_seconds = await floor(urls, sample_bodies(total))
    assert got["counts"].get("delivered") == total, got["counts"]
    return {
        "scenario": f"{endpoints} endpoint(s)",
        "deliveries": total,
        "per_s": total / got["seconds"],
        "floor_per_s": total / floor_seconds,
    }


async def overhead(backend: str, tmp: str, rounds: int = 400) -> dict[str, Any]:
    from sqlalchemy import text

    from chronos.plugin import Outbox

    async def work(ctx: Any) -> dict[str, Any]:
        outbox = ctx.service(Outbox)
        await add_endpoints(ctx, ["http://127.0.0.1:9/unused"])
        payload = {"id": 1, "command": "PING", "target_system": "bench", "status": "completed", "attempts": 1}
        change = text("UPDATE webhooks_endpoints SET description = :d WHERE id = 1")  # stands for the completion
        plain: list[float] = []
        published: list[float] = []
        enqueue: list[float] = []
        for i in range(rounds):
            for with_outbox, out in ((False, plain), (True, published)):
                t = time.perf_counter()
                async with ctx.db.write() as s:
                    await s.execute(change, {"d": str(i)})
                    if with_outbox:
                        e = time.perf_counter()
                        await outbox.enqueue(s, "command.completed", {**payload, "id": i})
                        enqueue.append((time.perf_counter() - e) * 1000)
                out.append((time.perf_counter() - t) * 1000)
        return {
            "plain": statistics.median(plain),
            "published": statistics.median(published),
            "enqueue": statistics.median(enqueue),
        }

    got = await with_app(backend, tmp, [5.0], work)
    return {
        "scenario": "enqueue in a write transaction",
        "p50_without_ms": got["plain"],
        "p50_with_ms": got["published"],
        "overhead_ms": got["published"] - got["plain"],
        "enqueue_ms": got["enqueue"],
    }


async def outage(backend: str, tmp: str, n: int) -> dict[str, Any]:
    port = free_port()
    receiver = Receiver(port)
    url = f"http://127.0.0.1:{port}/hook"

    async def work(ctx: Any) -> dict[str, Any]:
        await add_endpoints(ctx, [url])
        await store_messages(ctx, n)
        await drain(ctx)  # nothing listens: every first attempt fails and is kept for its retry
        down = await counts(ctx)
        receiver.start()
        await due_now(ctx)  # the outage is over: the retries come due
        seconds = await drain(ctx)
        return {"down": down, "seconds": seconds, "after": await counts(ctx)}

    try:
        got = await with_app(backend, tmp, [600.0, 600.0], work)
        floor_seconds = await floor([url], sample_bodies(n))
    finally:
        receiver.stop()
    after = got["after"]
    return {
        "scenario": "receiver down, then back",
        "deliveries": n,
        "kept_while_down": got["down"].get("pending", 0),
        "lost": n - after.get("delivered", 0),
        "dead": after.get("dead", 0),
        "per_s": n / got["seconds"],
        "floor_per_s": n / floor_seconds,
    }


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--backends", default="sqlite,postgresql")
    parser.add_argument("-n", type=int, default=2000, help="deliveries per throughput run")
    args = parser.parse_args()
    print(f"# outbox benchmark — {platform.python_implementation()} {platform.python_version()}, "
          f"{os.cpu_count()} CPUs, {IN_FLIGHT} requests in flight")  # fmt: skip
    with tempfile.TemporaryDirectory() as tmp:
        for backend in args.backends.split(","):
            receiver = Receiver(free_port())
            receiver.start()
            try:
                rows = [await throughput(backend, tmp, receiver, e, args.n) for e in (1, 10, 100)]
            finally:
                receiver.stop()
            down = await outage(backend, tmp, args.n)
            cost = await overhead(backend, tmp)
            print(f"\n## {backend}\n")
            print("| scenario | deliveries | Chronos /s | floor /s | ratio |")
            print("|---|---:|---:|---:|---:|")
            for r in [*rows, down]:
                print(
                    f"| {r['scenario']} | {r['deliveries']} | {r['per_s']:.0f} | {r['floor_per_s']:.0f} |"
                    f" {r['per_s'] / r['floor_per_s']:.0%} |"
                )
            print(
                f"\nreceiver down: {down['kept_while_down']} kept pending while down, {down['lost']} lost,"
                f" {down['dead']} dead letters after it came back"
            )
            print(
                f"outbox overhead on a write transaction (an UPDATE, as a completion): p50"
                f" {cost['p50_without_ms']:.3f} ms without, {cost['p50_with_ms']:.3f} ms with one enqueue"
                f" (+{cost['overhead_ms']:.3f} ms); the enqueue call itself p50 {cost['enqueue_ms']:.3f} ms"
            )


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "--receive":
        asyncio.run(_serve(int(sys.argv[2])))
    else:
        asyncio.run(main())
