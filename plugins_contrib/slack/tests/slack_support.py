"""A local Slack speaking the wire formats of incoming webhooks and chat.postMessage, run by uvicorn on loopback."""

from __future__ import annotations

import asyncio
import json
import re
import socket
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import uvicorn
from pydantic import BaseModel
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import Route

from chronos.plugin import EventType, Outbox, OutboxMessage, hookimpl

TOKEN = "xoxb-1234567890-0987654321-AbCdEfGhIjKlMnOpQrStUvWx"
HOOK_PATH = "/services/T0000CHRON/B0000CHRON/s3cretHookPart0123456789"
CHANNEL = "C0123456789"
BLOCK_TYPES = {"header", "section", "context", "divider", "actions", "image", "rich_text", "input", "file", "video"}
#: What may follow "<" in mrkdwn: a link, a user or channel mention, a special mention.
CONTROL = re.compile(r"<(https?://[^>|]+|mailto:[^>|]+|@[UW][A-Z0-9]+|#C[A-Z0-9]+|![a-z]+)(\|[^>]*)?>")


def block_problem(blocks: Any) -> str | None:
    if not isinstance(blocks, list) or len(blocks) > 50:
        return "invalid_blocks"
    for block in blocks:
        if not isinstance(block, dict) or block.get("type") not in BLOCK_TYPES:
            return "invalid_blocks"
        if block["type"] == "header":
            text = block.get("text") or {}
            if text.get("type") != "plain_text" or not 0 < len(text.get("text", "")) <= 150:
                return "invalid_blocks"
        if block["type"] == "section":
            text = (block.get("text") or {}).get("text", "")
            if not 0 < len(text) <= 3000:
                return "invalid_blocks"
    return None


def controls(body: dict[str, Any]) -> list[str]:
    """Every mention or link Slack would act on in the body's texts (``<!channel>`` pings everyone)."""
    found: list[str] = []

    def walk(node: Any) -> None:
        if isinstance(node, str):
            found.extend(m.group(0) for m in CONTROL.finditer(node))
        elif isinstance(node, list):
            for item in node:
                walk(item)
        elif isinstance(node, dict):
            for value in node.values():
                walk(value)

    walk(body)
    return found


@dataclass
class FakeSlack:
    """Records webhook posts and chat.postMessage calls; ``replies`` (status, body, headers) go first."""

    base: str = ""
    calls: list[dict[str, Any]] = field(default_factory=list)
    headers: list[dict[str, str]] = field(default_factory=list)
    replies: list[tuple[int, Any, dict[str, str]]] = field(default_factory=list)

    @property
    def webhook_url(self) -> str:
        return self.base + HOOK_PATH

    def _scripted(self) -> Response | None:
        if not self.replies:
            return None
        status, body, headers = self.replies.pop(0)
        if isinstance(body, dict):
            return JSONResponse(body, status, headers=headers)
        return PlainTextResponse(body, status, headers=headers)

    def app(self) -> Starlette:
        async def webhook(request: Request) -> Response:
            if request.url.path != HOOK_PATH:
                return PlainTextResponse("no_service", 404)
            body = json.loads(await request.body())
            self.calls.append(body)
            self.headers.append(dict(request.headers))
            if (scripted := self._scripted()) is not None:
                return scripted
            if not body.get("text") and not body.get("blocks"):
                return PlainTextResponse("no_text", 400)
            if "blocks" in body and block_problem(body["blocks"]):
                return PlainTextResponse("invalid_blocks", 400)
            return PlainTextResponse("ok")

        async def post_message(request: Request) -> Response:
            self.headers.append(dict(request.headers))
            if request.headers.get("authorization") != f"Bearer {TOKEN}":
                return JSONResponse({"ok": False, "error": "invalid_auth"})
            body = json.loads(await request.body())
            self.calls.append(body)
            if (scripted := self._scripted()) is not None:
                return scripted
            if body.get("channel") not in (CHANNEL, "#general"):
                return JSONResponse({"ok": False, "error": "channel_not_found"})
            if "blocks" in body and (problem := block_problem(body["blocks"])):
                return JSONResponse({"ok": False, "error": problem})
            return JSONResponse({"ok": True, "channel": CHANNEL, "ts": f"1733560000.{len(self.calls):06d}"})

        return Starlette(
            routes=[
                Route("/services/{rest:path}", webhook, methods=["POST"]),
                Route("/api/chat.postMessage", post_message, methods=["POST"]),
            ]
        )


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@asynccontextmanager
async def serving(fake: FakeSlack) -> AsyncIterator[FakeSlack]:
    port = free_port()
    server = uvicorn.Server(
        uvicorn.Config(fake.app(), host="127.0.0.1", port=port, log_level="warning", lifespan="off")
    )
    task = asyncio.create_task(server.serve())
    async with asyncio.timeout(10):
        while not server.started:
            await asyncio.sleep(0.01)
    fake.base = f"http://127.0.0.1:{port}"
    try:
        yield fake
    finally:
        server.should_exit = True
        await asyncio.wait_for(task, 10)


class Build(BaseModel):
    title: str
    status: str = ""


class Builds:
    """A test plugin that declares ``ci.build``."""

    @hookimpl
    def register_schemas(self):
        return [EventType("ci.build", Build, "A build finished")]


def message(payload: dict[str, Any], event_type: str = "ci.build") -> OutboxMessage:
    created = datetime(2026, 12, 7, 8, 30, tzinfo=UTC)
    return OutboxMessage(id=1, event_type=event_type, payload=payload, created_at=created, webhook_id="msg_1")


async def publish(app: Any, payload: dict[str, Any], event_type: str = "ci.build") -> None:
    ctx = app.state.chronos
    async with ctx.db.write() as session:
        await ctx.service(Outbox).enqueue(session, event_type, payload)


async def dispatch(app: Any) -> None:
    jobs = app.state.chronos.jobs
    running = jobs.running.get("webhooks.dispatch")
    if running is not None and not running.done():
        await running
    await jobs.run_now("webhooks.dispatch")
