"""A real HTTP server for feed tests and helpers to write calendars relative to today."""

from __future__ import annotations

import asyncio
import hashlib
import socket
import threading
import time
from collections.abc import Iterator
from datetime import UTC, date, datetime, timedelta
from typing import Any

import pytest
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import HTMLResponse, RedirectResponse, Response, StreamingResponse
from starlette.routing import Route


class Feed:
    """What the server answers on /cal.ics, and what it was asked."""

    def __init__(self) -> None:
        self.body = b""
        self.requests: list[dict[str, str]] = []

    @property
    def etag(self) -> str:
        return '"' + hashlib.sha1(self.body).hexdigest()[:16] + '"'


def build_app(feed: Feed) -> Starlette:
    async def calendar(request: Request) -> Response:
        feed.requests.append(dict(request.headers))
        if request.headers.get("if-none-match") == feed.etag:
            return Response(status_code=304, headers={"ETag": feed.etag})
        return Response(
            feed.body,
            media_type="text/calendar",
            headers={"ETag": feed.etag, "Last-Modified": "Sat, 28 Nov 2026 10:00:00 GMT"},
        )

    async def missing(request: Request) -> Response:
        return Response("no such calendar", status_code=404)

    async def loop(request: Request) -> Response:
        return RedirectResponse("/loop", status_code=302)

    async def hop(request: Request) -> Response:
        return RedirectResponse("/cal.ics?token=secret", status_code=301)

    async def to_ftp(request: Request) -> Response:
        return RedirectResponse("ftp://example.org/cal.ics", status_code=302)

    async def to_metadata(request: Request) -> Response:
        return RedirectResponse("http://169.254.169.254/latest/meta-data/", status_code=302)

    async def big(request: Request) -> Response:
        return Response(b"BEGIN:VCALENDAR\r\n" + b"X" * 200_000, media_type="text/calendar")

    async def big_stream(request: Request) -> Response:
        async def chunks():
            yield b"BEGIN:VCALENDAR\r\n"
            for _ in range(50):
                yield b"X" * 10_000

        return StreamingResponse(chunks(), media_type="text/calendar")

    async def slow(request: Request) -> Response:
        async def drip():
            yield b"BEGIN:VCALENDAR\r\n"
            await asyncio.sleep(30)
            yield b"END:VCALENDAR\r\n"

        return StreamingResponse(drip(), media_type="text/calendar")

    async def html(request: Request) -> Response:
        return HTMLResponse("<html><body>Please sign in</body></html>")

    return Starlette(
        routes=[
            Route("/cal.ics", calendar),
            Route("/missing.ics", missing),
            Route("/loop", loop),
            Route("/hop", hop),
            Route("/ftp", to_ftp),
            Route("/to-metadata", to_metadata),
            Route("/big", big),
            Route("/big-stream", big_stream),
            Route("/slow", slow),
            Route("/html", html),
        ]
    )


#: ``network.allow`` for tests whose feeds are served on loopback (the outbound guard refuses it otherwise).
LOOPBACK_ALLOWED = {"allow": ["127.0.0.1/32"]}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class FeedServer:
    def __init__(self, feed: Feed, base: str) -> None:
        self.feed, self.base = feed, base

    def url(self, path: str) -> str:
        return self.base + path


@pytest.fixture(scope="module")
def feed_server() -> Iterator[FeedServer]:
    """A real uvicorn on a free port serving :func:`build_app`."""
    feed = Feed()
    port = free_port()
    server = uvicorn.Server(
        uvicorn.Config(build_app(feed), host="127.0.0.1", port=port, log_level="warning", lifespan="off")
    )
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started:
        if time.monotonic() > deadline:
            raise RuntimeError("the feed server did not start")
        time.sleep(0.02)
    try:
        yield FeedServer(feed, f"http://127.0.0.1:{port}")
    finally:
        server.should_exit = True
        thread.join(5)


def ics(*events: str, header: str = "") -> str:
    body = "".join("BEGIN:VEVENT\r\n" + e.strip().replace("\n", "\r\n") + "\r\nEND:VEVENT\r\n" for e in events)
    return f"BEGIN:VCALENDAR\r\nVERSION:2.0\r\nPRODID:-//test//EN\r\n{header}{body}END:VCALENDAR\r\n"


def stamp(value: datetime | date) -> str:
    if isinstance(value, datetime):
        return value.astimezone(UTC).strftime("%Y%m%dT%H%M%SZ")
    return value.strftime("%Y%m%d")


def today() -> date:
    return datetime.now(UTC).date()


def single(uid: str, title: str, days: int = 1, hour: int = 9, minutes: int = 60, extra: str = "") -> str:
    """A timed single event ``days`` from today at ``hour`` UTC."""
    start = datetime.combine(today() + timedelta(days=days), datetime.min.time(), UTC).replace(hour=hour)
    end = start + timedelta(minutes=minutes)
    return f"UID:{uid}\nDTSTART:{stamp(start)}\nDTEND:{stamp(end)}\nSUMMARY:{title}\n{extra}".strip()


def event_summary(event: Any) -> tuple[str, str, str]:
    return (event["uid"], event["recurrence_id"], event["title"])
