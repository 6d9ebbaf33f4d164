"""Helpers of the webhooks tests: a scripted HTTP receiver, a publishing test plugin, publish and dispatch."""

from __future__ import annotations

import asyncio
import contextlib
from dataclasses import dataclass, field
from typing import Any

from pydantic import BaseModel

from chronos.plugin import EventType, Outbox, hookimpl


@dataclass
class Received:
    method: str
    path: str
    headers: dict[str, str]
    body: bytes


@dataclass
class Reply:
    status: int = 200
    headers: dict[str, str] = field(default_factory=dict)
    body: bytes = b"ok"
    delay: float = 0.0
    body_size: int = 0  # stream this many extra bytes after ``body``


@dataclass
class Receiver:
    """What the receiver got; ``replies`` are answered in order, then ``default``."""

    port: int = 0
    received: list[Received] = field(default_factory=list)
    replies: list[Reply] = field(default_factory=list)
    default: Reply = field(default_factory=Reply)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/hook"

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                lines = head.decode("latin-1").split("\r\n")
                method, path, _ = lines[0].split(" ", 2)
                headers = {}
                for line in lines[1:]:
                    if ":" in line:
                        k, v = line.split(":", 1)
                        headers[k.strip().lower()] = v.strip()
                body = await reader.readexactly(int(headers.get("content-length", "0")))
                self.received.append(Received(method, path, headers, body))
                reply = self.replies.pop(0) if self.replies else self.default
                if reply.delay:
                    await asyncio.sleep(reply.delay)
                extra = "".join(f"{k}: {v}\r\n" for k, v in reply.headers.items())
                length = len(reply.body) + reply.body_size
                writer.write(
                    f"HTTP/1.1 {reply.status} X\r\nContent-Length: {length}\r\n{extra}\r\n".encode() + reply.body
                )
                sent = 0
                while sent < reply.body_size:
                    chunk = min(65536, reply.body_size - sent)
                    writer.write(b"x" * chunk)
                    await writer.drain()
                    sent += chunk
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()


class Pinged(BaseModel):
    n: int


class Publisher:
    """A test plugin that declares ``test.pinged`` and ``test.other``."""

    @hookimpl
    def register_schemas(self):
        return [EventType("test.pinged", Pinged, "A ping"), EventType("test.other", Pinged, "Another")]


def webhooks_config(**extra: Any) -> dict[str, Any]:
    cfg = {"retry_schedule_seconds": [0, 0, 0], "jitter_ratio": 0, "timeout_seconds": 2}
    cfg.update(extra)
    return {"webhooks": cfg, "network": {"allow": ["127.0.0.1/32"]}}


PLUGINS = ["webhooks", ("publisher", Publisher())]


async def publish(app: Any, event_type: str = "test.pinged", n: int = 1, *, rollback: bool = False, **kw: Any) -> None:
    """Publish one message in a write transaction (rolled back when asked)."""
    ctx = app.state.chronos
    outbox = ctx.service(Outbox)

    class Rollback(Exception):
        pass

    with contextlib.suppress(Rollback):
        async with ctx.db.write() as s:
            await outbox.enqueue(s, event_type, {"n": n}, **kw)
            if rollback:
                raise Rollback


async def dispatch(app: Any) -> dict[str, int]:
    """Let a running dispatcher job finish, then run the dispatcher once more (errors surface) and return its counts."""
    from chronos_webhooks.dispatcher import DISPATCHER

    ctx = app.state.chronos
    while True:
        task = ctx.jobs.running.get("webhooks.dispatch")
        if task is not None and not task.done():
            await task  # a run woken by a publish (or restarted when it ended) finishes first
            continue
        counts = await ctx.resource(DISPATCHER).run()
        task = ctx.jobs.running.get("webhooks.dispatch")
        if task is None or task.done():
            return counts
