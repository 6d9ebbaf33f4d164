"""Talking to Google Calendar v3 through gcsa, off the event loop.

gcsa and googleapiclient are synchronous (httplib2): every request runs in a
worker thread of the source's own pool (a hanging server cannot starve the
service's default pool), bounded by a timeout, and the waits between retries are
``asyncio.sleep`` so the event loop is never blocked.

Errors become :class:`SourceError` messages an operator can act on. They
never carry a token, a client secret or a response body that could echo one:
only the HTTP status, Google's error reason and the calendar id.

With ``api_base_url`` set, every connection of the client (the API, the token
endpoint, a redirect) resolves its host through the kernel's outbound guard and
connects to an address the guard checked: httplib2 would otherwise resolve the
name again itself, and a DNS answer that changed after the check could lead it
to a refused address.
"""

from __future__ import annotations

import asyncio
import json
import random
import socket
import threading
from collections.abc import Callable
from concurrent.futures import Executor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpcore
import httplib2
from gcsa.google_calendar import GoogleCalendar
from google.auth import exceptions as auth_errors
from google.oauth2 import credentials as user_credentials, service_account
from google_auth_httplib2 import AuthorizedHttp
from googleapiclient import discovery
from googleapiclient.errors import HttpError

from chronos.plugin import OutboundPolicy, OutboundRefused, SourceError

from chronos_google.settings import SCOPE_READ, SCOPE_WRITE, GoogleCredentials

#: Reasons Google gives with a 403 when the caller should slow down.
RATE_LIMIT_REASONS = {"rateLimitExceeded", "userRateLimitExceeded", "quotaExceeded"}


_RAISE = object()


class SyncTokenGone(Exception):
    """The server no longer accepts the sync token (410 Gone): list everything again."""


@dataclass
class Retry:
    """How requests are retried after a rate limit or a server error."""

    max_retries: int = 5
    base_seconds: float = 1.0
    max_seconds: float = 60.0

    def delay(self, attempt: int, retry_after: float | None) -> float:
        """Exponential backoff with full jitter; ``Retry-After`` when the server gave one."""
        if retry_after is not None:
            return retry_after
        return min(self.max_seconds, self.base_seconds * 2**attempt) * (0.5 + random.random() / 2)  # noqa: S311


def load_credentials(creds: GoogleCredentials, scopes: list[str]) -> Any:
    """google-auth credentials from the configured files (read now: files may be rotated)."""
    if creds.service_account_file:
        info = _read_json(creds.service_account_file, "service-account key")
        if info.get("type") != "service_account":
            raise SourceError(
                f"{creds.service_account_file} is not a service-account key (its type is not service_account)"
            )
        try:
            sa = service_account.Credentials.from_service_account_info(info, scopes=scopes)
        except (ValueError, KeyError) as exc:
            raise SourceError(
                f"{creds.service_account_file} is not a usable service-account key: {_key_problem(exc)}"
            ) from None
        return sa.with_subject(creds.subject) if creds.subject else sa
    if creds.token_file:
        info = _read_json(creds.token_file, "token file")
        try:
            # Without the stored access token: gcsa would renew an expired one at once through a
            # client without timeout; AuthorizedHttp renews it on the first request, with ours.
            stored = {k: v for k, v in info.items() if k not in ("token", "expiry")}
            user = user_credentials.Credentials.from_authorized_user_info(stored, scopes=None)
        except (ValueError, KeyError) as exc:
            raise SourceError(
                f"{creds.token_file} is not a usable token file ({_key_problem(exc)}); run `chronos google auth` again"
            ) from None
        # google-auth always sets Google's token endpoint here; the file says which one issued the token.
        uri = info.get("token_uri")
        return user.with_token_uri(uri) if isinstance(uri, str) and uri.startswith(("https://", "http://")) else user
    raise SourceError("no credentials configured (google.credentials)")


def _key_problem(exc: Exception) -> str:
    # Messages of google-auth name the missing field; never include the file's content.
    text = str(exc)
    if isinstance(exc, KeyError):
        return f"the field {text} is missing"
    return text.split("\n", 1)[0][:200] if "PRIVATE KEY" not in text else "the private key cannot be read"


def _read_json(path: str, what: str) -> dict[str, Any]:
    p = Path(path).expanduser()
    try:
        data = json.loads(p.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise SourceError(f"the {what} {p} does not exist") from None
    except OSError as exc:
        raise SourceError(f"cannot read the {what} {p}: {exc.strerror or type(exc).__name__}") from None
    except (UnicodeDecodeError, json.JSONDecodeError):
        raise SourceError(f"the {what} {p} is not JSON") from None
    if not isinstance(data, dict):
        raise SourceError(f"the {what} {p} is not a JSON object")
    return data


def _reason(exc: HttpError) -> str:
    """Google's error reason (``rateLimitExceeded``, ``fullSyncRequired``, ``notFound``…), or ""."""
    try:
        body = json.loads(exc.content.decode("utf-8"))
        errors = body["error"].get("errors") or []
        return str(errors[0].get("reason", "")) if errors else str(body["error"].get("status", ""))
    except (ValueError, KeyError, TypeError, AttributeError, IndexError):
        return ""


def _retry_after(exc: HttpError) -> float | None:
    value = exc.resp.get("retry-after") if exc.resp is not None else None
    if value is None:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        return None  # an HTTP date: use our own backoff


def _auth_error(exc: auth_errors.GoogleAuthError) -> str:
    """The OAuth error code only (``invalid_grant``…): the rest may echo request data."""
    args = getattr(exc, "args", ())
    first = str(args[0]) if args else ""
    code = first.split(":", 1)[0].strip() if ":" in first else ""
    if code and code.replace("_", "").isalnum() and len(code) < 60:
        return code
    return type(exc).__name__


class _Pinned:
    """A connection that resolves its host through the outbound guard and connects to a checked address."""

    host: str
    port: int
    timeout: float | None
    policy: OutboundPolicy  # set on the subclasses :class:`GuardedHttp` makes

    def _checked_socket(self) -> socket.socket:
        # httplib2 runs in a worker thread of the source's pool, never on the service's event loop.
        try:
            addresses = asyncio.run(asyncio.wait_for(self.policy.checked_addresses(self.host, self.port), self.timeout))
        except httpcore.ConnectError as exc:  # the name does not resolve: httplib2's "server not found"
            raise socket.gaierror(socket.EAI_NONAME, str(exc)) from None
        error = OSError(f"no address of {self.host} to connect to")
        for address in addresses:
            try:
                sock = socket.create_connection((str(address), self.port), timeout=self.timeout)
            except TimeoutError:
                raise
            except OSError as exc:  # refused or unreachable: the next checked address
                error = exc
                continue
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            return sock
        raise error


class _PinnedHTTPConnection(_Pinned, httplib2.HTTPConnectionWithTimeout):
    def connect(self) -> None:
        self.sock = self._checked_socket()


class _PinnedHTTPSConnection(_Pinned, httplib2.HTTPSConnectionWithTimeout):
    def connect(self) -> None:
        sock = self._checked_socket()
        try:
            # The certificate is checked against the host name, as without the guard.
            self.sock = self._context.wrap_socket(sock, server_hostname=self.host)
        except BaseException:
            sock.close()
            raise


class GuardedHttp(httplib2.Http):
    """``httplib2.Http`` whose connections go only to addresses the outbound guard checked when connecting,
    each hop of a redirect included, and never through a proxy from the environment."""

    def __init__(self, policy: OutboundPolicy, timeout: float) -> None:
        super().__init__(timeout=timeout, proxy_info=None)
        self._connection_types = {
            "http": type("GuardedHTTPConnection", (_PinnedHTTPConnection,), {"policy": policy}),
            "https": type("GuardedHTTPSConnection", (_PinnedHTTPSConnection,), {"policy": policy}),
        }

    def request(
        self,
        uri: str,
        method: str = "GET",
        body: Any = None,
        headers: dict[str, str] | None = None,
        redirections: int = httplib2.DEFAULT_MAX_REDIRECTS,
        connection_type: Any = None,
    ) -> Any:
        scheme = uri.split(":", 1)[0].lower()
        if scheme not in self._connection_types:
            raise OutboundRefused(f"refused: only http and https URLs are fetched, not {scheme or 'no'} scheme")
        return super().request(uri, method, body, headers, redirections, self._connection_types[scheme])


class CalendarClient:
    """One Google calendar's API client: a gcsa ``GoogleCalendar`` whose service
    object points at ``api_base_url`` (when set) and uses a timeout."""

    def __init__(
        self,
        creds: GoogleCredentials,
        calendar_id: str,
        *,
        base_url: str | None,
        timeout: float,
        retry: Retry,
        write: bool,
        sleep: Callable[[float], Any] = asyncio.sleep,
        executor: Executor | None = None,
        policy: OutboundPolicy | None = None,
    ) -> None:
        self.creds = creds
        self.calendar_id = calendar_id
        self.base_url = base_url
        self.timeout = timeout
        self.retry = retry
        self.scopes = [SCOPE_WRITE if write else SCOPE_READ]
        self.sleep = sleep
        self.executor = executor
        self.policy = policy
        self._gc: GoogleCalendar | None = None
        # httplib2 connections are not thread-safe: one request at a time per client.
        self._lock = threading.Lock()
        self.requests = 0

    def _calendar(self) -> GoogleCalendar:
        if self._gc is None:
            credentials = load_credentials(self.creds, self.scopes)
            gc = GoogleCalendar(default_calendar=self.calendar_id, credentials=credentials)
            # gcsa builds its service without a timeout or endpoint override: replace it
            # with one that has both (the bundled discovery document, no network).
            plain = (
                httplib2.Http(timeout=self.timeout) if self.policy is None else GuardedHttp(self.policy, self.timeout)
            )
            http = AuthorizedHttp(credentials, http=plain)
            options = {"api_endpoint": f"{self.base_url}/calendar/v3/"} if self.base_url else None
            gc.service = discovery.build(
                "calendar", "v3", http=http, static_discovery=True, cache_discovery=False, client_options=options
            )
            self._gc = gc
        return self._gc

    def _execute(self, build: Callable[[GoogleCalendar], Any]) -> Any:
        with self._lock:
            gc = self._calendar()
            self.requests += 1
            return build(gc)

    async def call(
        self, build: Callable[[GoogleCalendar], Any], *, what: str, gone: Any = _RAISE, sync_token: bool = False
    ) -> Any:
        """Run ``build(gc)`` (which performs one request) in a thread, retrying rate limits and 5xx.

        ``gone``, when given, is returned for a 404 or 410 instead of raising. With
        ``sync_token`` (the request sends one) a 400 means the token was refused too."""
        attempt = 0
        while True:
            try:
                # The socket timeout bounds each read; this bounds the whole call (a trickling server).
                async with asyncio.timeout(self.timeout * 2 + 5):
                    return await asyncio.get_running_loop().run_in_executor(self.executor, self._execute, build)
            except HttpError as exc:
                status, reason = exc.resp.status, _reason(exc)
                retryable = status == 429 or status >= 500 or (status == 403 and reason in RATE_LIMIT_REASONS)
                if status in (404, 410) and gone is not _RAISE:
                    return gone
                if not retryable:
                    raise self._http_error(status, reason, what, sync_token) from None
                wait = self.retry.delay(attempt, _retry_after(exc))
                if attempt >= self.retry.max_retries or wait > self.retry.max_seconds:
                    hint = f"; the server asked to wait {wait:g}s" if wait > self.retry.max_seconds else ""
                    raise SourceError(
                        f"{what}: HTTP {status}{' ' + reason if reason else ''} after {attempt + 1} attempt(s){hint};"
                        " keeping the last good data"
                    ) from None
                attempt += 1
                await self.sleep(wait)
            except OutboundRefused as exc:  # a connection's destination, checked when connecting
                raise SourceError(f"{what}: refused by the outbound network policy: {exc}") from None
            except TimeoutError:  # socket.timeout from httplib2, or the guard above
                raise SourceError(
                    f"{what}: no answer from {self._host()} within {self.timeout:g}s (google.timeout_seconds)"
                ) from None
            except auth_errors.RefreshError as exc:
                raise SourceError(
                    f"{what}: Google refused the credentials ({_auth_error(exc)}): revoked, expired or malformed;"
                    " for a token file run `chronos google auth --calendar <id>` again"
                ) from None
            except auth_errors.TransportError:
                raise SourceError(f"{what}: cannot reach the OAuth token endpoint to renew the access token") from None
            except auth_errors.GoogleAuthError as exc:
                raise SourceError(f"{what}: the credentials cannot be used ({_auth_error(exc)})") from None
            except json.JSONDecodeError:
                raise SourceError(
                    f"{what}: {self._host()} answered with something other than JSON (an HTML page?)"
                ) from None
            except (httplib2.HttpLib2Error, OSError) as exc:
                raise SourceError(f"{what}: cannot reach {self._host()}: {type(exc).__name__}") from None

    def _host(self) -> str:
        return self.base_url or "www.googleapis.com"

    def _http_error(self, status: int, reason: str, what: str, sync_token: bool) -> Exception:
        if status == 410 or (status == 400 and sync_token):
            return SyncTokenGone(f"HTTP {status}{' ' + reason if reason else ''}")
        if status == 404:
            return SourceError(
                f"{what}: Google calendar {self.calendar_id!r} does not exist or is not shared with these"
                " credentials (HTTP 404)"
            )
        if status == 401:
            return SourceError(f"{what}: the credentials were refused (HTTP 401); check or renew them")
        if status == 403:
            return SourceError(f"{what}: access denied (HTTP 403{' ' + reason if reason else ''})")
        return SourceError(f"{what}: HTTP {status}{' ' + reason if reason else ''}")

    # -- the requests the source makes -------------------------------------------------

    async def list_page(self, params: dict[str, Any]) -> dict[str, Any]:
        """One page of ``events.list``.

        gcsa's ``get_events`` follows pages itself and drops ``nextSyncToken``, so
        this calls the events list endpoint through gcsa's ``service`` object.
        """
        result = await self.call(
            lambda gc: gc.service.events().list(calendarId=self.calendar_id, **params).execute(),
            what=f"listing events of {self.calendar_id!r}",
            sync_token="syncToken" in params,
        )
        if not isinstance(result, dict):
            raise SourceError(
                f"listing events of {self.calendar_id!r}: {self._host()} answered with something other than JSON"
                " (an HTML page?)"
            )
        return result

    async def delete(self, event_id: str) -> bool:
        """``events.delete`` through gcsa; False when the event was already gone (404, 410)."""
        done = await self.call(
            lambda gc: gc.delete_event(event_id, calendar_id=self.calendar_id),
            what=f"deleting event {event_id!r} of {self.calendar_id!r}",
            gone=False,
        )
        return done is not False
