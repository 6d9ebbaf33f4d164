"""A local Bot API server speaking Telegram's wire format for sendMessage, run by uvicorn on loopback."""

from __future__ import annotations

import asyncio
import re
import socket
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from html.parser import HTMLParser
from typing import Any

import uvicorn
from pydantic import BaseModel
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from chronos.plugin import EventType, Outbox, OutboxMessage, hookimpl

TOKEN = "123456789:AAEhBP0av28gQWk7ONLf2Kp3hUYhd8Rc1_x"
CHAT = "-1001234567890"
#: Tags Telegram's HTML parse mode knows; anything else is "can't parse entities".
HTML_TAGS = {"b", "strong", "i", "em", "u", "ins", "s", "strike", "del", "a", "code", "pre", "tg-spoiler", "blockquote"}
MARKDOWN_V2_SPECIAL = set("_*[]()~`>#+-=|{}.!")


class _Tags(HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.unknown: list[str] = []
        self.text: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag not in HTML_TAGS:
            self.unknown.append(tag)

    def handle_endtag(self, tag: str) -> None:
        if tag not in HTML_TAGS:
            self.unknown.append(tag)

    def handle_data(self, data: str) -> None:
        self.text.append(data)


def html_problem(text: str) -> str | None:
    parser = _Tags()
    parser.feed(text)
    if parser.unknown:
        return f'Bad Request: can\'t parse entities: Unsupported start tag "{parser.unknown[0]}"'
    if re.search(r"&(?!(amp|lt|gt|quot|#\d+);)", text):
        return "Bad Request: can't parse entities: Unsupported entity"
    return None


def markdown_v2_problem(text: str) -> str | None:
    """Telegram's rule: a special character outside markup must be escaped; we accept only escaped
    ones plus the template's ``*bold*`` pairs."""
    i, stars = 0, 0
    while i < len(text):
        ch = text[i]
        if ch == "\\":
            i += 2
            continue
        if ch == "*":
            stars += 1
        elif ch in MARKDOWN_V2_SPECIAL:
            return f"Bad Request: can't parse entities: Character '{ch}' is reserved and must be escaped"
        i += 1
    return None if stars % 2 == 0 else "Bad Request: can't parse entities: Can't find end of Bold entity"


def markdown_v2_plain(text: str) -> str:
    return re.sub(r"\\(.)", r"\1", text.replace("*", ""))


@dataclass
class FakeBotApi:
    """Records sendMessage calls; ``replies`` (status, JSON) are answered first, in order."""

    token: str = TOKEN
    base: str = ""
    calls: list[dict[str, Any]] = field(default_factory=list)
    paths: list[str] = field(default_factory=list)
    replies: list[tuple[int, dict[str, Any]]] = field(default_factory=list)

    def app(self) -> Starlette:
        async def send_message(request: Request) -> JSONResponse:
            self.paths.append(request.url.path)
            if request.path_params["token"] != self.token:
                return JSONResponse({"ok": False, "error_code": 401, "description": "Unauthorized"}, 401)
            body = await request.json()
            self.calls.append(body)
            if self.replies:
                status, answer = self.replies.pop(0)
                return JSONResponse(answer, status)
            mode = body.get("parse_mode")
            problem = html_problem(body["text"]) if mode == "HTML" else None
            if mode == "MarkdownV2":
                problem = markdown_v2_problem(body["text"])
            if problem:
                return JSONResponse({"ok": False, "error_code": 400, "description": problem}, 400)
            message = {"message_id": len(self.calls), "chat": {"id": int(body["chat_id"])}, "text": body["text"]}
            return JSONResponse({"ok": True, "result": message})

        return Starlette(routes=[Route("/bot{token}/sendMessage", send_message, methods=["POST"])])


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@asynccontextmanager
async def serving(fake: FakeBotApi) -> AsyncIterator[FakeBotApi]:
    """Run ``fake`` on a free loopback port inside the test's event loop."""
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


# -- publishing through the outbox (an end-to-end test needs an event type and a producer) ---------


class Alarm(BaseModel):
    title: str
    note: str = ""


class Alarms:
    """A test plugin that declares ``kitchen.alarm``."""

    @hookimpl
    def register_schemas(self):
        return [EventType("kitchen.alarm", Alarm, "The kitchen timer rang")]


async def publish(app: Any, payload: dict[str, Any], event_type: str = "kitchen.alarm") -> None:
    ctx = app.state.chronos
    async with ctx.db.write() as session:
        await ctx.service(Outbox).enqueue(session, event_type, payload)


async def dispatch(app: Any) -> None:
    """Run the outbox's dispatcher job once (after any run in progress)."""
    jobs = app.state.chronos.jobs
    running = jobs.running.get("webhooks.dispatch")
    if running is not None and not running.done():
        await running
    await jobs.run_now("webhooks.dispatch")


def message(payload: dict[str, Any], event_type: str = "kitchen.alarm") -> OutboxMessage:
    return OutboxMessage(
        id=1,
        event_type=event_type,
        payload=payload,
        created_at=datetime(2026, 12, 7, 8, 30, tzinfo=UTC),
        webhook_id="msg_1",
    )
