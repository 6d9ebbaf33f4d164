"""Helpers for the caldav tests: a Radicale process, a switchable proxy, iCalendar text, the plugin config."""

from __future__ import annotations

import asyncio
import hashlib
import re
import socket
import subprocess
import sys
import threading
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

import caldav
import httpx
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from chronos import testing as kit

USER, PASSWORD = "ann", "s3cret-pw"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Radicale:
    """One Radicale process; ``calendar()`` makes a fresh calendar collection for a test."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        users = root / "users"
        users.write_text(f"{USER}:{PASSWORD}\nbob:bobs-pw\n")
        self.storage = root / "collections"
        config = root / "config"
        config.write_text(
            f"[server]\nhosts = 127.0.0.1:{self.port}\n"
            f"[auth]\ntype = htpasswd\nhtpasswd_filename = {users}\nhtpasswd_encryption = plain\n"
            "[rights]\ntype = owner_only\n"
            f"[storage]\nfilesystem_folder = {self.storage}\n"
            "[web]\ntype = none\n[logging]\nlevel = warning\n"
        )
        self.log = (root / "radicale.log").open("wb")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "radicale", "--config", str(config)], stdout=self.log, stderr=self.log
        )
        deadline = time.monotonic() + 20
        while True:
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.2):
                    break
            except OSError:
                if self.proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"Radicale did not start: {(root / 'radicale.log').read_text()}") from None
                time.sleep(0.05)
        self.client = caldav.DAVClient(url=self.base + "/", username=USER, password=PASSWORD, enable_rfc6764=False)

    def stop(self) -> None:
        self.client.close()
        self.proc.terminate()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(10)
        self.log.close()

    def calendar(self, name: str | None = None) -> caldav.Calendar:
        cal_id = name or f"cal-{uuid.uuid4().hex[:10]}"
        return self.client.principal().make_calendar(name=cal_id, cal_id=cal_id)


# -- a proxy a test can switch --------------------------------------------------------------------


class Proxy:
    """Forwards to Radicale unless ``mode`` says otherwise:

    * ``no-sync``: sync-collection REPORTs are answered 501 and PROPFIND answers lose the sync token
      and the report from their supported-report-set (a server without RFC 6578);
    * ``refuse-report``: sync-collection REPORTs are answered 501, PROPFIND still names a sync token;
    * ``cap-report``: calendar-query REPORTs are answered 400 (as Radicale does past 10,000 events);
    * ``html``: every request gets a 200 HTML page (a login portal, a misconfigured URL);
    * ``redirect``: every request is redirected to Radicale itself;
    * ``hang``: requests are never answered (until the test ends);
    * ``digest``: the proxy wants HTTP Digest auth and forwards with Basic.
    """

    def __init__(self, target: str) -> None:
        self.target = target
        self.mode = "pass"
        self.requests: list[tuple[str, str]] = []
        self.release = threading.Event()
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        self._http = httpx.AsyncClient(base_url=target, timeout=60)
        self._server = uvicorn.Server(
            uvicorn.Config(
                Starlette(routes=[Route("/{path:path}", self.handle, methods=METHODS)]),
                host="127.0.0.1",
                port=self.port,
                log_level="warning",
                lifespan="off",
            )
        )
        self._thread = threading.Thread(target=self._server.run, daemon=True)

    async def handle(self, request: Request) -> Response:
        body = await request.body()
        self.requests.append((request.method, request.url.path))
        if self.mode == "hang":
            while not self.release.is_set():
                await asyncio.sleep(0.05)
            return Response("late", status_code=503)
        if self.mode == "redirect":  # e.g. towards an internal address the outbound guard never checked
            return Response(status_code=301, headers={"Location": self.target + request.url.path})
        if self.mode == "html":
            return Response("<html><body><h1>Welcome</h1><p>Please log in.</p></body></html>", media_type="text/html")
        if self.mode == "cap-report" and request.method == "REPORT" and b"calendar-query" in body:
            return Response("REPORT occurrences limit hit", status_code=400, media_type="text/plain")
        refusing = self.mode in ("no-sync", "refuse-report")
        if refusing and request.method == "REPORT" and b"sync-collection" in body:
            return Response("sync-collection is not supported here", status_code=501, media_type="text/plain")
        headers = {k: v for k, v in request.headers.items() if k.lower() not in ("host", "content-length")}
        if self.mode == "digest":
            if not digest_ok(request.method, request.headers.get("authorization", "")):
                return Response(
                    "login needed",
                    status_code=401,
                    headers={"WWW-Authenticate": 'Digest realm="proxy", nonce="n0nce", qop="auth", algorithm=MD5'},
                )
            headers["authorization"] = httpx.BasicAuth(USER, PASSWORD)._auth_header
        resp = await self._http.request(
            request.method, request.url.path, content=body, headers=headers, params=request.query_params
        )
        out = {k: v for k, v in resp.headers.items() if k.lower() in ("content-type", "etag", "www-authenticate")}
        content = resp.content
        if self.mode == "no-sync" and request.method == "PROPFIND":  # nor does it advertise RFC 6578
            content = re.sub(rb"<sync-token>[^<]*</sync-token>|<sync-token\s*/>", b"", content)
            content = re.sub(
                rb"<supported-report><report><sync-collection\s*/></report></supported-report>", b"", content
            )
        return Response(content, status_code=resp.status_code, headers=out)

    def start(self) -> Proxy:
        self._thread.start()
        deadline = time.monotonic() + 10
        while not self._server.started:
            if time.monotonic() > deadline:
                raise RuntimeError("the proxy did not start")
            time.sleep(0.02)
        return self

    def stop(self) -> None:
        self.release.set()
        self._server.should_exit = True
        self._thread.join(10)


def digest_ok(method: str, header: str) -> bool:
    """RFC 7616 (MD5, qop=auth) for the test user."""
    if not header.startswith("Digest "):
        return False
    fields = {}
    for part in header[7:].split(","):
        key, _, value = part.strip().partition("=")
        fields[key] = value.strip('"')

    def md5(text: str) -> str:
        return hashlib.md5(text.encode()).hexdigest()  # noqa: S324 - what Digest MD5 is

    if fields.get("username") != USER or fields.get("nonce") != "n0nce":
        return False
    ha1 = md5(f"{USER}:proxy:{PASSWORD}")
    ha2 = md5(f"{method}:{fields.get('uri', '')}")
    expected = md5(f"{ha1}:n0nce:{fields.get('nc', '')}:{fields.get('cnonce', '')}:{fields.get('qop', '')}:{ha2}")
    return fields.get("response") == expected


METHODS = ["GET", "PUT", "DELETE", "PROPFIND", "REPORT", "OPTIONS", "MKCALENDAR", "PROPPATCH", "HEAD", "POST"]


PLUGINS = ["events", "normalize", "caldav"]
TODAY = datetime.now(UTC).date()
#: The test servers listen on loopback, which the outbound guard refuses unless allowed.
LOOPBACK = {"network": {"allow": ["127.0.0.1/32"]}}


def stamp(days: int, hour: int = 9) -> str:
    return (datetime.combine(TODAY, datetime.min.time(), UTC) + timedelta(days=days, hours=hour)).strftime(
        "%Y%m%dT%H%M%SZ"
    )


def vevent(uid: str, title: str, days: int = 1, extra: str = "") -> str:
    lines = [
        "BEGIN:VCALENDAR",
        "VERSION:2.0",
        "PRODID:-//chronos tests//EN",
        "BEGIN:VEVENT",
        f"UID:{uid}",
        "DTSTAMP:20260101T000000Z",
        f"DTSTART:{stamp(days)}",
        f"DTEND:{stamp(days, 10)}",
        f"SUMMARY:{title}",
        *([extra] if extra else []),
        "END:VEVENT",
        "END:VCALENDAR",
    ]
    return "\r\n".join(lines) + "\r\n"


def weekly(uid: str, title: str, count: int, exdate_week: int | None = None) -> str:
    extra = f"RRULE:FREQ=WEEKLY;COUNT={count}"
    if exdate_week is not None:
        extra += f"\r\nEXDATE:{stamp(1 + 7 * exdate_week)}"
    return vevent(uid, title, 1, extra)


def calendar_config(cal, password_env: str, **extra) -> dict:
    entry = {
        "id": "work",
        "url": str(cal.url),
        "username": "ann",
        "password_env": password_env,
        "interval_seconds": 0,
        **extra,
    }
    return {"caldav": {"calendars": [entry]}, **LOOPBACK}


async def titles(client, calendar_id: str = "work") -> list[str]:
    lo = (datetime.now(UTC) - timedelta(days=30)).strftime("%Y-%m-%dT00:00:00Z")
    hi = (datetime.now(UTC) + timedelta(days=400)).strftime("%Y-%m-%dT00:00:00Z")
    r = await client.get("/api/v1/events", params={"calendar_id": calendar_id, "from": lo, "to": hi, "limit": 500})
    assert r.status_code == 200, r.text
    return sorted(e["title"] for e in r.json()["items"])


def source_of(app):
    return kit.runtime_of(app).pipeline.calendar("caldav", "work").source
