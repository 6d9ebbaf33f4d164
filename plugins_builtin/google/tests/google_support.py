"""A local Google Calendar v3 server speaking the real wire format, for tests and the bench.

It serves what the ``google`` source and gcsa use: ``events.list`` with
``singleEvents``, ``timeMin``/``timeMax``, ``maxResults``, ``pageToken`` and
``syncToken`` (``nextPageToken``/``nextSyncToken``, 410 ``fullSyncRequired``
for an expired token), ``events.delete``, and the OAuth endpoints: the token
endpoint (JWT bearer grants of service accounts, refresh tokens, authorization
codes) and an authorization endpoint that redirects straight back with a code.
Recurring events are stored as their instances, as ``singleEvents=true``
returns them (``recurringEventId``, ``originalStartTime``, local times across
DST). Faults are queued per test: rate limits with ``Retry-After``, 5xx, an
HTML page, a request that never gets an answer.
"""

from __future__ import annotations

import asyncio
import base64
import itertools
import json
import secrets
import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlencode
from zoneinfo import ZoneInfo

import pytest
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, RedirectResponse, Response
from starlette.routing import Route

from chronos import testing as kit


def _error(status: int, reason: str, message: str, domain: str = "global", headers: dict | None = None) -> Response:
    body = {
        "error": {
            "errors": [{"domain": domain, "reason": reason, "message": message}],
            "code": status,
            "message": message,
        }
    }
    return JSONResponse(body, status_code=status, headers=headers)


def rfc3339(value: datetime) -> str:
    return value.astimezone(UTC).isoformat().replace("+00:00", "Z")


def basic(value: date | datetime) -> str:
    if isinstance(value, datetime):
        v = value.astimezone(UTC)
        return f"{v.year:04d}{v:%m%dT%H%M%S}Z"
    return f"{value.year:04d}{value:%m%d}"


@dataclass
class FakeCalendar:
    id: str
    time_zone: str = "Europe/Berlin"
    events: dict[str, dict[str, Any]] = field(default_factory=dict)


@dataclass
class Fault:
    """The next matching request gets this answer instead."""

    status: int
    reason: str = ""
    retry_after: str | None = None
    html: bool = False
    hang: float = 0.0
    path: str = "events"  # "events" (list), "delete", "token"
    paged: bool = False  # only for a request of a later page (with pageToken)
    event: str = ""  # only for a deletion of this event id


class FakeGoogle:
    """The server's state; tests change it directly (it is shared with the server thread)."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.calendars: dict[str, FakeCalendar] = {}
        self.seq = itertools.count(1)
        self.last_seq = 0
        self.min_sync_seq = 0  # sync tokens older than this are answered with 410
        self.access_tokens: set[str] = set()
        self.refresh_tokens: set[str] = set()
        self.codes: dict[str, str] = {}
        self.service_accounts: set[str] = set()
        self.faults: list[Fault] = []
        self.requests: list[dict[str, Any]] = []
        self.server_seconds: list[float] = []
        self.pages: dict[str, tuple[list[dict[str, Any]], int, str]] = {}
        self.base = ""
        self.release = threading.Event()

    # -- state helpers ----------------------------------------------------------------

    def calendar(self, cal_id: str, time_zone: str = "Europe/Berlin") -> FakeCalendar:
        with self.lock:
            cal = self.calendars.get(cal_id)
            if cal is None:
                cal = self.calendars[cal_id] = FakeCalendar(cal_id, time_zone)
            return cal

    def reset(self) -> None:
        with self.lock:
            self.calendars.clear()
            self.faults.clear()
            self.requests.clear()
            self.server_seconds.clear()
            self.pages.clear()
            self.min_sync_seq = 0

    def _stamp(self, ev: dict[str, Any]) -> None:
        seq = next(self.seq)
        self.last_seq = seq
        ev["_seq"] = seq
        ev["updated"] = rfc3339(datetime.now(UTC))
        ev["etag"] = f'"{seq}"'

    def put(self, cal_id: str, event: dict[str, Any]) -> dict[str, Any]:
        """Insert or replace an event resource (``id`` required)."""
        cal = self.calendar(cal_id)
        with self.lock:
            ev = {"kind": "calendar#event", "status": "confirmed", "eventType": "default", **event}
            ev.setdefault("iCalUID", f"{ev.get('recurringEventId') or ev['id']}@google.com")
            ev.setdefault("htmlLink", f"https://www.google.com/calendar/event?eid={ev['id']}")
            self._stamp(ev)
            cal.events[ev["id"]] = ev
            return ev

    def put_many(self, cal_id: str, events: list[dict[str, Any]]) -> None:
        cal = self.calendar(cal_id)
        with self.lock:
            for event in events:
                ev = {"kind": "calendar#event", "status": "confirmed", **event}
                self._stamp(ev)
                cal.events[ev["id"]] = ev

    def cancel(self, cal_id: str, event_id: str) -> None:
        """Delete an event the way Google shows it to sync tokens: a cancelled stub."""
        cal = self.calendar(cal_id)
        with self.lock:
            old = cal.events[event_id]
            stub = {"kind": "calendar#event", "id": event_id, "status": "cancelled"}
            for k in ("recurringEventId", "originalStartTime"):
                if k in old:
                    stub[k] = old[k]
            self._stamp(stub)
            cal.events[event_id] = stub

    def expire_sync_tokens(self) -> None:
        with self.lock:
            self.last_seq = self.min_sync_seq = next(self.seq)

    def fail_next(self, *faults: Fault) -> None:
        with self.lock:
            self.faults.extend(faults)

    def list_requests(self) -> list[dict[str, Any]]:
        return [r for r in self.requests if r["what"] == "list"]

    # -- service-account and OAuth files ----------------------------------------------

    def service_account_file(self, directory: Path, email: str = "sync@chronos-test.iam.gserviceaccount.com") -> Path:
        from cryptography.hazmat.primitives import serialization
        from cryptography.hazmat.primitives.asymmetric import rsa

        key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        pem = key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        ).decode()
        self.service_accounts.add(email)
        info = {
            "type": "service_account",
            "project_id": "chronos-test",
            "private_key_id": secrets.token_hex(8),
            "private_key": pem,
            "client_email": email,
            "client_id": "1234567890",
            "auth_uri": f"{self.base}/o/oauth2/auth",
            "token_uri": f"{self.base}/token",
        }
        path = directory / "service-account.json"
        path.write_text(json.dumps(info))
        return path

    def client_file(self, directory: Path) -> Path:
        info = {
            "installed": {
                "client_id": "chronos-test.apps.googleusercontent.com",
                "client_secret": "client-secret-do-not-log",
                "auth_uri": f"{self.base}/o/oauth2/auth",
                "token_uri": f"{self.base}/token",
                "redirect_uris": ["http://localhost"],
            }
        }
        path = directory / "client.json"
        path.write_text(json.dumps(info))
        return path

    def token_file(self, directory: Path, refresh_token: str | None = None) -> Path:
        token = refresh_token or "1//refresh-" + secrets.token_hex(8)
        self.refresh_tokens.add(token)
        info = {
            "refresh_token": token,
            "client_id": "chronos-test.apps.googleusercontent.com",
            "client_secret": "client-secret-do-not-log",
            "token_uri": f"{self.base}/token",
            "type": "authorized_user",
        }
        path = directory / "token.json"
        path.write_text(json.dumps(info))
        return path


# -- test helpers -----------------------------------------------------------------------


def config(fake: FakeGoogle, tmp_path, *calendars: dict, **extra) -> dict:
    creds = {"service_account_file": str(fake.service_account_file(tmp_path))}
    cals = [{"calendar_id": c["id"] + "@group.calendar.google.com", **c} for c in calendars]
    section = {
        "credentials": creds,
        "api_base_url": fake.base,
        "calendars": cals,
        "backoff_base_seconds": 0.01,
        "timeout_seconds": 5,
        **extra,
    }
    return {"google": section, "network": {"allow": ["127.0.0.1/32"]}}


def soon(days: int, hour: int = 9) -> datetime:
    return datetime.combine(datetime.now(UTC).date() + timedelta(days=days), datetime.min.time(), UTC).replace(
        hour=hour
    )


async def sync(app: Any, calendar_id: str, **kw: Any) -> Any:
    return await kit.sync_now(app, "google", calendar_id, **kw)


async def events_of(client, calendar_id: str) -> dict[tuple[str, str], dict]:
    lo = (datetime.now(UTC) - timedelta(days=4000)).strftime("%Y-%m-%dT00:00:00Z")
    hi = (datetime.now(UTC) + timedelta(days=4000)).strftime("%Y-%m-%dT00:00:00Z")
    out: dict[tuple[str, str], dict] = {}
    cursor = None
    while True:
        params = {"calendar_id": calendar_id, "from": lo, "to": hi, "limit": 500}
        if cursor:
            params["cursor"] = cursor
        r = await client.get("/api/v1/events", params=params)
        assert r.status_code == 200, r.text
        body = r.json()
        for e in body["items"]:
            out[(e["uid"], e["recurrence_id"])] = e
        cursor = body.get("next_cursor")
        if not cursor:
            return out


def utc(value: str) -> datetime:
    return datetime.fromisoformat(value.replace("Z", "+00:00"))


# -- event builders ------------------------------------------------------------------


def timed(
    event_id: str, start: datetime, minutes: int = 60, summary: str = "", tz: str | None = None, **extra: Any
) -> dict:
    """A timed event; with ``tz`` the times are written in that zone with its offset, as Google does."""
    zone = ZoneInfo(tz) if tz else UTC
    s, e = start.astimezone(zone), (start + timedelta(minutes=minutes)).astimezone(zone)
    start_obj: dict[str, Any] = {"dateTime": s.isoformat()}
    end_obj: dict[str, Any] = {"dateTime": e.isoformat()}
    if tz:
        start_obj["timeZone"] = end_obj["timeZone"] = tz
    return {"id": event_id, "summary": summary or event_id, "start": start_obj, "end": end_obj, **extra}


def all_day(event_id: str, first: date, days: int = 1, summary: str = "", **extra: Any) -> dict:
    return {
        "id": event_id,
        "summary": summary or event_id,
        "start": {"date": first.isoformat()},
        "end": {"date": (first + timedelta(days=days)).isoformat()},
        "transparency": "transparent",
        **extra,
    }


def weekly_instances(
    series: str, first_local: datetime, count: int, tz: str, minutes: int = 60, summary: str = ""
) -> list[dict]:
    """Instances of a weekly series at the same local time (``first_local`` is naive, in ``tz``)."""
    zone = ZoneInfo(tz)
    out = []
    for i in range(count):
        local = (first_local + timedelta(weeks=i)).replace(tzinfo=zone)
        start = local.isoformat()
        out.append(
            {
                "id": f"{series}_{basic(local)}",
                "summary": summary or series,
                "recurringEventId": series,
                "originalStartTime": {"dateTime": start, "timeZone": tz},
                "start": {"dateTime": start, "timeZone": tz},
                "end": {"dateTime": (local + timedelta(minutes=minutes)).isoformat(), "timeZone": tz},
            }
        )
    return out


# -- the HTTP application --------------------------------------------------------------


def _overlaps(ev: dict[str, Any], tmin: datetime | None, tmax: datetime | None) -> bool:
    def point(obj: dict[str, Any]) -> datetime:
        if "date" in obj:
            return datetime.combine(date.fromisoformat(obj["date"]), datetime.min.time(), UTC)
        return datetime.fromisoformat(obj["dateTime"])

    try:
        start, end = point(ev["start"]), point(ev["end"])
    except (KeyError, ValueError):
        return True
    return (tmin is None or end > tmin) and (tmax is None or start < tmax)


def _public(ev: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in ev.items() if not k.startswith("_")}


def _token(seq: int) -> str:
    return base64.urlsafe_b64encode(f"sync:{seq}".encode()).decode().rstrip("=")


def _untoken(value: str) -> int | None:
    try:
        raw = base64.urlsafe_b64decode(value + "=" * (-len(value) % 4)).decode()
        kind, _, seq = raw.partition(":")
        return int(seq) if kind == "sync" else None
    except (ValueError, UnicodeDecodeError):
        return None


def build_app(g: FakeGoogle) -> Starlette:
    def take_fault(path: str, paged: bool = False, event: str = "") -> Fault | None:
        with g.lock:
            for i, f in enumerate(g.faults):
                if f.path == path and (paged or not f.paged) and f.event in ("", event):
                    return g.faults.pop(i)
        return None

    async def fault_answer(f: Fault) -> Response:
        if f.hang:
            await asyncio.get_running_loop().run_in_executor(None, g.release.wait, f.hang)
        if f.html:
            return HTMLResponse("<html><body><h1>Sign in</h1></body></html>", status_code=f.status)
        headers = {"Retry-After": f.retry_after} if f.retry_after is not None else None
        if f.status == 403 and f.reason:
            return _error(403, f.reason, "Rate Limit Exceeded", domain="usageLimits", headers=headers)
        return _error(f.status, f.reason or "backendError", "fault", headers=headers)

    def authorized(request: Request) -> bool:
        auth = request.headers.get("authorization", "")
        return auth.startswith("Bearer ") and auth[7:] in g.access_tokens

    async def list_events(request: Request) -> Response:
        began = time.perf_counter()
        q = request.query_params
        g.requests.append({"what": "list", "params": dict(q), "calendar": request.path_params["cal"]})
        if not authorized(request):
            return _error(401, "authError", "Invalid Credentials")
        f = take_fault("events", paged=bool(q.get("pageToken")))
        if f is not None:
            return await fault_answer(f)
        cal = g.calendars.get(request.path_params["cal"])
        if cal is None:
            return _error(404, "notFound", "Not Found")
        try:
            size = min(int(q.get("maxResults", "250")), 2500)
        except ValueError:
            return _error(400, "invalid", "Invalid maxResults")
        if q.get("pageToken"):
            with g.lock:
                page = g.pages.pop(q["pageToken"], None)
            if page is None:
                return _error(400, "invalid", "Invalid page token")
            rest, upto, zone = page
        else:
            with g.lock:
                upto = g.last_seq
                if q.get("syncToken"):
                    if any(q.get(p) for p in ("timeMin", "timeMax", "orderBy", "q", "updatedMin", "iCalUID")):
                        return _error(400, "invalid", "syncToken cannot be combined with these parameters")
                    since = _untoken(q["syncToken"])
                    if since is None:
                        return _error(400, "invalid", "Invalid sync token value.")
                    if since < g.min_sync_seq:
                        return _error(
                            410, "fullSyncRequired", "Sync token is no longer valid, a full sync is required."
                        )
                    rest = [ev for ev in cal.events.values() if since < ev["_seq"] <= upto]
                else:
                    tmin = datetime.fromisoformat(q["timeMin"]) if q.get("timeMin") else None
                    tmax = datetime.fromisoformat(q["timeMax"]) if q.get("timeMax") else None
                    show_deleted = q.get("showDeleted") == "true"
                    rest = [
                        ev
                        for ev in cal.events.values()
                        if (show_deleted or ev.get("status") != "cancelled") and _overlaps(ev, tmin, tmax)
                    ]
                zone = cal.time_zone
        items, rest = rest[:size], rest[size:]
        body: dict[str, Any] = {
            "kind": "calendar#events",
            "etag": f'"{upto}"',
            "summary": cal.id,
            "updated": rfc3339(datetime.now(UTC)),
            "timeZone": zone,
            "accessRole": "owner",
            "defaultReminders": [],
            "items": [_public(ev) for ev in items],
        }
        if rest:
            token = secrets.token_urlsafe(12)
            with g.lock:
                g.pages[token] = (rest, upto, zone)
            body["nextPageToken"] = token
        else:
            body["nextSyncToken"] = _token(upto)
        response = JSONResponse(body)
        g.server_seconds.append(time.perf_counter() - began)
        return response

    async def delete_event(request: Request) -> Response:
        cal_id, event_id = request.path_params["cal"], request.path_params["event"]
        g.requests.append({"what": "delete", "calendar": cal_id, "event": event_id})
        if not authorized(request):
            return _error(401, "authError", "Invalid Credentials")
        f = take_fault("delete", event=event_id)
        if f is not None:
            return await fault_answer(f)
        cal = g.calendars.get(cal_id)
        if cal is None or event_id not in cal.events:
            return _error(404, "notFound", "Not Found")
        if cal.events[event_id].get("status") == "cancelled":
            return _error(410, "deleted", "Resource has been deleted")
        g.cancel(cal_id, event_id)
        return Response(status_code=204)

    async def token(request: Request) -> Response:
        # The OAuth token endpoint takes a form body (parsed here without python-multipart).
        form = {k: v[0] for k, v in parse_qs((await request.body()).decode()).items()}
        g.requests.append({"what": "token", "grant_type": form.get("grant_type")})
        f = take_fault("token")
        if f is not None:
            return await fault_answer(f)
        grant = form.get("grant_type")
        if grant == "urn:ietf:params:oauth:grant-type:jwt-bearer":
            try:
                payload = str(form.get("assertion", "")).split(".")[1]
                claims = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
            except (IndexError, ValueError):
                return JSONResponse({"error": "invalid_grant", "error_description": "Invalid JWT"}, status_code=400)
            if claims.get("iss") not in g.service_accounts or not claims.get("scope"):
                return JSONResponse(
                    {"error": "invalid_grant", "error_description": "Invalid JWT Signature."}, status_code=400
                )
        elif grant == "refresh_token":
            if form.get("refresh_token") not in g.refresh_tokens:
                return JSONResponse(
                    {"error": "invalid_grant", "error_description": "Token has been expired or revoked."},
                    status_code=400,
                )
        elif grant == "authorization_code":
            if form.get("code") not in g.codes:
                return JSONResponse({"error": "invalid_grant", "error_description": "Bad code"}, status_code=400)
            refresh = "1//refresh-" + secrets.token_hex(8)
            g.refresh_tokens.add(refresh)
            access = "ya29." + secrets.token_urlsafe(16)
            g.access_tokens.add(access)
            return JSONResponse(
                {
                    "access_token": access,
                    "expires_in": 3599,
                    "refresh_token": refresh,
                    "scope": g.codes.pop(str(form.get("code"))),
                    "token_type": "Bearer",
                }
            )
        else:
            return JSONResponse({"error": "unsupported_grant_type"}, status_code=400)
        access = "ya29." + secrets.token_urlsafe(16)
        g.access_tokens.add(access)
        return JSONResponse({"access_token": access, "expires_in": 3599, "token_type": "Bearer"})

    async def authorize(request: Request) -> Response:
        q = request.query_params
        code = "4/code-" + secrets.token_hex(6)
        g.codes[code] = q.get("scope", "")
        target = (
            q["redirect_uri"]
            + "?"
            + urlencode({"state": q.get("state", ""), "code": code, "scope": q.get("scope", "")})
        )
        return RedirectResponse(target, status_code=302)

    return Starlette(
        routes=[
            Route("/calendar/v3/calendars/{cal}/events", list_events, methods=["GET"]),
            Route("/calendar/v3/calendars/{cal}/events/{event}", delete_event, methods=["DELETE"]),
            Route("/token", token, methods=["POST"]),
            Route("/o/oauth2/auth", authorize, methods=["GET"]),
        ]
    )


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class running_fake:  # noqa: N801 - used like a function: ``with running_fake() as g``
    """A real uvicorn on a free loopback port serving :func:`build_app`."""

    def __init__(self) -> None:
        self.fake = FakeGoogle()

    def __enter__(self) -> FakeGoogle:
        port = free_port()
        config = uvicorn.Config(
            build_app(self.fake), host="127.0.0.1", port=port, log_level="warning", lifespan="off", access_log=False
        )
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, daemon=True)
        self.thread.start()
        deadline = time.monotonic() + 10
        while not self.server.started:
            if time.monotonic() > deadline:
                raise RuntimeError("the fake Google server did not start")
            time.sleep(0.02)
        self.fake.base = f"http://127.0.0.1:{port}"
        return self.fake

    def __exit__(self, *exc: Any) -> None:
        self.fake.release.set()
        self.server.should_exit = True
        self.thread.join(5)


@pytest.fixture(scope="module")
def google_server() -> Iterator[FakeGoogle]:
    with running_fake() as fake:
        yield fake


@pytest.fixture
def fake_google(google_server: FakeGoogle) -> Iterator[FakeGoogle]:
    """The module's fake server, emptied for each test."""
    google_server.reset()
    google_server.release.clear()
    yield google_server
    google_server.release.set()
