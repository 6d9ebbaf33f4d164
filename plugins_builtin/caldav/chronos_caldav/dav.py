"""The CalDAV requests the source makes, on the caldav library's client.

Synchronous (the caldav client is): the source runs every call in a thread.
Each method is one HTTP request, so the number of requests a sync makes is
plain to see: a sync-collection REPORT (RFC 6578) asks for ``getetag`` and
``calendar-data`` together, so an incremental sync is one request; without
sync-collection, a ``getctag`` PROPFIND, then a Depth 1 PROPFIND of the
etags and a ``calendar-multiget`` of only the changed hrefs.

Every failure is a :class:`~chronos.plugin.SourceError` whose message names
the server by scheme and host only (never user info, path or password).
"""

from __future__ import annotations

import asyncio
import socket
import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any
from urllib.parse import unquote, urljoin, urlsplit, urlunsplit
from xml.sax.saxutils import escape

import caldav
import niquests
from caldav.lib import error as dav_error
from lxml import etree
from urllib3_future.contrib.resolver import BaseResolver, ProtocolResolver

from chronos.plugin import OutboundPolicy, OutboundRefused, SourceError

DAV = "DAV:"
CALDAV = "urn:ietf:params:xml:ns:caldav"
CS = "http://calendarserver.org/ns/"
NS = {"d": DAV, "c": CALDAV, "cs": CS}
USER_AGENT = "chronos-engine-caldav/0.1"
_XML_HEADERS = {"Content-Type": "application/xml; charset=utf-8"}
#: hrefs per calendar-multiget request (servers limit request sizes).
MULTIGET_CHUNK = 1000


def redact(url: str) -> str:
    """``scheme://host[:port]``: what is safe to show in runs, logs and errors."""
    try:
        parts = urlsplit(url)
        host = parts.hostname or ""
        if parts.port:
            host = f"{host}:{parts.port}"
        return urlunsplit((parts.scheme, host, "", "", ""))
    except ValueError:
        return "<invalid URL>"


class InvalidSyncToken(Exception):
    """The server refused the sync token (DAV:valid-sync-token): list everything again."""


class NoSyncCollection(Exception):
    """The server does not answer sync-collection REPORTs."""


class ListingRefused(Exception):
    """The server refused to list the whole calendar in one REPORT (Radicale caps a REPORT at
    ``reporting.max_expand_occurrence`` events, 10,000 by default): list it by etags and multigets."""


class GuardedResolver(BaseResolver):
    """The HTTP session's resolver: every new connection resolves the host through the outbound guard
    and connects to an address it checked, so the name is never resolved again between check and
    connect (a DNS answer that changes in between cannot reach a refused address)."""

    implementation = "chronos-outbound-guard"
    protocol = ProtocolResolver.CUSTOM

    def __init__(self, policy: OutboundPolicy, timeout: float) -> None:
        super().__init__(None, None)
        self.policy = policy
        self.timeout = timeout

    def recycle(self) -> BaseResolver:
        return self

    def close(self) -> None:
        pass

    def is_available(self) -> bool:
        return True

    def getaddrinfo(  # type: ignore[override]
        self,
        host: bytes | str | None,
        port: str | int | None,
        family: socket.AddressFamily,
        type: socket.SocketKind,
        proto: int = 0,
        flags: int = 0,
        *,
        quic_upgrade_via_dns_rr: bool = False,
    ) -> list[tuple[socket.AddressFamily, socket.SocketKind, int, str, tuple[Any, ...]]]:
        name = host.decode("ascii") if isinstance(host, bytes) else (host or "localhost")
        number = int(port or 0)
        # The session runs in a worker thread (never on the service's event loop).
        addresses = asyncio.run(asyncio.wait_for(self.policy.checked_addresses(name, number), self.timeout))
        out = []
        for address in addresses:
            af = socket.AF_INET if address.version == 4 else socket.AF_INET6
            if family not in (socket.AF_UNSPEC, af):
                continue
            sockaddr: tuple[Any, ...] = (str(address), number) if af == socket.AF_INET else (str(address), number, 0, 0)
            out.append((af, type or socket.SOCK_STREAM, proto, "", sockaddr))
        if not out:
            raise socket.gaierror(socket.EAI_ADDRFAMILY, f"{name} has no address of the wanted family")
        return out


@dataclass
class Resource:
    """One calendar object: ``data`` is None when it was deleted."""

    href: str
    etag: str | None
    data: str | None


@dataclass
class CollectionInfo:
    ctag: str | None
    sync_token: str | None
    supports_sync: bool


class DavCalendar:
    """One calendar collection on one server, with its own HTTP session."""

    def __init__(
        self,
        url: str,
        *,
        username: str | None,
        password: str | None,
        auth: str,
        timeout: float,
        verify_tls: bool = True,
        policy: OutboundPolicy | None = None,
    ) -> None:
        self.url = url if url.endswith("/") else url + "/"
        self.shown = redact(url)
        self._lock = threading.Lock()  # one request at a time per session
        self.client = caldav.DAVClient(
            url=self.url,
            username=username,
            password=password,
            auth_type=None if auth == "auto" else auth,
            timeout=timeout,  # type: ignore[arg-type]  # niquests takes float seconds too
            ssl_verify_cert=verify_tls,
            headers={"User-Agent": USER_AGENT},
            enable_rfc6764=False,
            rate_limit_handle=False,
        )
        if policy is not None:
            # The library's session resolves names itself; this one connects only where the guard checked.
            self.client.session.close()
            self.client.session = niquests.Session(resolver=GuardedResolver(policy, timeout))
        # Like every outbound request of the service: no proxy from the environment, and no
        # redirects (a redirect could lead past the outbound guard's check of the calendar URL).
        self.client.session.trust_env = False
        self.client.session.max_redirects = 0
        self.requests = 0  # HTTP requests made (the bench counts them)
        self.seconds = 0.0  # time spent waiting for answers

    def close(self) -> None:
        self.client.close()

    # -- requests -------------------------------------------------------------------------

    def _request(self, method: str, url: str, body: str = "", headers: dict[str, str] | None = None) -> Any:
        with self._lock:
            self.requests += 1
            started = time.perf_counter()
            try:
                return self.client.request(url, method, body, headers or {})
            except dav_error.AuthorizationError as exc:
                if getattr(exc, "preconditions", None) and f"{{{DAV}}}valid-sync-token" in exc.preconditions:
                    raise InvalidSyncToken from None
                status = getattr(exc, "status", None)
                if status == 403:
                    raise SourceError(
                        f"HTTP 403 Forbidden from {self.shown}: the account may not read this calendar"
                    ) from None
                raise SourceError(
                    f"HTTP 401 Unauthorized from {self.shown}: the server refused the username or password"
                ) from None
            except dav_error.RateLimitError:
                raise SourceError(
                    f"{self.shown} asks to slow down (HTTP 429/503); trying again on the next run"
                ) from None
            except etree.XMLSyntaxError:
                raise SourceError(f"{self.shown} sent malformed XML (is the URL a CalDAV calendar?)") from None
            except OutboundRefused as exc:
                raise SourceError(f"refused to connect to {self.shown}: {exc}") from None
            except niquests.exceptions.TooManyRedirects:
                raise SourceError(
                    f"{self.shown} redirects elsewhere; configure the calendar's final URL (redirects are not followed)"
                ) from None
            except niquests.exceptions.Timeout:
                raise SourceError(f"{self.shown} did not answer in time (caldav.timeout_seconds)") from None
            except niquests.exceptions.SSLError:
                raise SourceError(f"TLS error talking to {self.shown}") from None
            except niquests.exceptions.ConnectionError:
                raise SourceError(f"cannot connect to {self.shown}") from None
            except niquests.exceptions.RequestException as exc:
                raise SourceError(f"request to {self.shown} failed: {type(exc).__name__}") from None
            except dav_error.DAVError as exc:
                raise SourceError(f"{type(exc).__name__} from {self.shown}") from None
            except (ValueError, UnicodeError, TypeError) as exc:
                # e.g. credentials that cannot be encoded; the message could quote them, so only the type is shown.
                raise SourceError(f"request to {self.shown} failed: {type(exc).__name__}") from None
            finally:
                self.seconds += time.perf_counter() - started

    def _multistatus(self, resp: Any, what: str) -> Any:
        status = resp.status
        tree = resp.tree
        is_multistatus = tree is not None and etree.QName(tree).text == f"{{{DAV}}}multistatus"
        if 200 <= status < 300 and not is_multistatus:
            kind = (resp.headers.get("Content-Type") or "no content type").split(";")[0]
            raise SourceError(f"{self.shown} answered {kind} instead of a WebDAV multistatus (XML) for {what}")
        if status == 404:
            raise SourceError(f"HTTP 404 Not Found from {self.shown}: there is no calendar at the configured URL")
        if status != 207:
            reason = getattr(resp, "reason", "") or ""
            raise SourceError(f"HTTP {status} {reason} from {self.shown} for {what}".replace("  ", " "))
        return tree

    # -- what the source calls ----------------------------------------------------------------

    def info(self, *, ctag: bool = False, token: bool = False) -> CollectionInfo:
        """PROPFIND Depth 0: checks the URL is a calendar; the ``getctag`` and ``DAV:sync-token`` asked for,
        and whether the collection lists the sync-collection report.

        Ask only for what is needed: servers may compute both values from the
        whole collection's state (Radicale does, a second or more per 10k events).
        """
        wanted = ("<cs:getctag/>" if ctag else "") + ("<d:sync-token/>" if token else "")
        body = (
            '<?xml version="1.0" encoding="utf-8"?>'
            f'<d:propfind xmlns:d="{DAV}" xmlns:c="{CALDAV}" xmlns:cs="{CS}"><d:prop>'
            f"<d:resourcetype/>{wanted}<d:supported-report-set/>"
            "</d:prop></d:propfind>"
        )
        tree = self._multistatus(
            self._request("PROPFIND", self.url, body, {**_XML_HEADERS, "Depth": "0"}), "the calendar's properties"
        )
        prop = _first_ok_prop(tree)
        if prop is None or prop.find("d:resourcetype/c:calendar", NS) is None:
            raise SourceError(f"the configured URL on {self.shown} is not a CalDAV calendar collection")
        reports = prop.find("d:supported-report-set", NS)
        # A server that lists no reports at all may still answer sync-collection: try it.
        listed = reports is None or reports.find(".//d:sync-collection", NS) is not None
        return CollectionInfo(_text(prop.find("cs:getctag", NS)), _text(prop.find("d:sync-token", NS)), listed)

    def sync_collection(self, token: str | None) -> tuple[list[Resource], str | None]:
        """RFC 6578: what changed since ``token`` (everything without one), and the new token.

        A truncated answer (507 on the collection) is followed with its token.
        """
        out: dict[str, Resource] = {}
        for _page in range(100):
            body = (
                '<?xml version="1.0" encoding="utf-8"?>'
                f'<d:sync-collection xmlns:d="{DAV}" xmlns:c="{CALDAV}">'
                f"<d:sync-token>{escape(token or '')}</d:sync-token><d:sync-level>1</d:sync-level>"
                "<d:prop><d:getetag/><c:calendar-data/></d:prop></d:sync-collection>"
            )
            resp = self._request("REPORT", self.url, body, {**_XML_HEADERS, "Depth": "1"})
            if resp.status == 409 and resp.tree is not None and _has_precondition(resp.tree, "valid-sync-token"):
                raise InvalidSyncToken
            refused = resp.status in (400, 403, 412) and token and resp.tree is not None
            if refused and _has_precondition(resp.tree, "valid-sync-token"):
                raise InvalidSyncToken
            if resp.status in (405, 415, 501) or (resp.status in (400, 403) and not token):
                raise NoSyncCollection
            tree = self._multistatus(resp, "the sync-collection REPORT")
            truncated = False
            for r in tree.findall("d:response", NS):
                href = _href(self.url, r)
                status = _text(r.find("d:status", NS)) or ""
                if href is None:
                    continue
                if href == _path(self.url):
                    truncated = truncated or " 507" in status
                    continue
                if " 404" in status:
                    out[href] = Resource(href, None, None)
                    continue
                res = _resource(href, r)
                if res is not None:
                    out[href] = res
            new_token = _text(tree.find("d:sync-token", NS))
            if not truncated or not new_token or new_token == token:
                return list(out.values()), new_token
            token = new_token
        raise SourceError(f"{self.shown} kept truncating the sync-collection answer (over 100 pages)")

    def list_all(self) -> list[Resource]:
        """Every event with its data (a calendar-query REPORT)."""
        body = (
            '<?xml version="1.0" encoding="utf-8"?>'
            f'<c:calendar-query xmlns:d="{DAV}" xmlns:c="{CALDAV}">'
            "<d:prop><d:getetag/><c:calendar-data/></d:prop>"
            '<c:filter><c:comp-filter name="VCALENDAR"><c:comp-filter name="VEVENT"/></c:comp-filter></c:filter>'
            "</c:calendar-query>"
        )
        resp = self._request("REPORT", self.url, body, {**_XML_HEADERS, "Depth": "1"})
        if resp.status in (400, 403, 413, 500, 507):
            raise ListingRefused
        tree = self._multistatus(resp, "the calendar-query REPORT")
        return [res for r in tree.iterchildren(_RESPONSE) if (res := _resource(_href(self.url, r), r)) is not None]

    def etags(self) -> dict[str, str]:
        """href -> etag of every object (PROPFIND Depth 1)."""
        body = (
            f'<?xml version="1.0" encoding="utf-8"?><d:propfind xmlns:d="{DAV}"><d:prop>'
            "<d:getetag/><d:resourcetype/></d:prop></d:propfind>"
        )
        tree = self._multistatus(
            self._request("PROPFIND", self.url, body, {**_XML_HEADERS, "Depth": "1"}), "the list of etags"
        )
        out: dict[str, str] = {}
        own = _path(self.url)
        for r in tree.findall("d:response", NS):
            href = _href(self.url, r)
            if href is None or href == own:
                continue
            prop = _first_ok_prop(r)
            if prop is None or prop.find("d:resourcetype/d:collection", NS) is not None:
                continue
            out[href] = _text(prop.find("d:getetag", NS)) or ""
        return out

    def multiget(self, hrefs: Iterable[str]) -> list[Resource]:
        """The data of ``hrefs`` (calendar-multiget, in chunks); hrefs gone meanwhile come back deleted."""
        wanted = list(hrefs)
        out: list[Resource] = []
        for i in range(0, len(wanted), MULTIGET_CHUNK):
            chunk = wanted[i : i + MULTIGET_CHUNK]
            refs = "".join(f"<d:href>{escape(h)}</d:href>" for h in chunk)
            body = (
                '<?xml version="1.0" encoding="utf-8"?>'
                f'<c:calendar-multiget xmlns:d="{DAV}" xmlns:c="{CALDAV}">'
                f"<d:prop><d:getetag/><c:calendar-data/></d:prop>{refs}</c:calendar-multiget>"
            )
            tree = self._multistatus(
                self._request("REPORT", self.url, body, {**_XML_HEADERS, "Depth": "1"}), "a calendar-multiget REPORT"
            )
            got: dict[str, Resource] = {}
            for r in tree.findall("d:response", NS):
                href = _href(self.url, r)
                if href is None:
                    continue
                res = _resource(href, r)
                if res is not None:
                    got[href] = res
            out += [got.get(h) or Resource(h, None, None) for h in chunk]
        return out

    def delete(self, href: str, etag: str | None) -> int:
        """DELETE with ``If-Match`` on ``etag``; the HTTP status (204/200 deleted, 404 gone, 412 changed)."""
        headers = {"If-Match": etag} if etag else {}
        resp = self._request("DELETE", urljoin(self.url, href), "", headers)
        return int(resp.status)


# -- XML helpers ---------------------------------------------------------------------------------


def _text(el: Any) -> str | None:
    if el is None or el.text is None:
        return None
    return str(el.text).strip() or None


def _path(url: str) -> str:
    return unquote(urlsplit(url).path)


_RESPONSE, _HREF, _PROPSTAT, _STATUS, _PROP = (
    f"{{{DAV}}}response",
    f"{{{DAV}}}href",
    f"{{{DAV}}}propstat",
    f"{{{DAV}}}status",
    f"{{{DAV}}}prop",
)
_GETETAG, _CALENDAR_DATA = f"{{{DAV}}}getetag", f"{{{CALDAV}}}calendar-data"


def _href(base: str, response: Any) -> str | None:
    """The response's href as an absolute path (percent-decoded)."""
    text = _text(response.find(_HREF))
    if text is None:
        return None
    if text[:1] == "/" and text[1:2] != "/" and "/." not in text and "?" not in text and "#" not in text:
        return unquote(text)  # an absolute path already (what servers send): no joining needed
    return _path(urljoin(base, text))


def _first_ok_prop(el: Any) -> Any:
    # Tags in Clark notation: a listing calls this once per object, tens of thousands of times.
    for propstat in el.iter(_PROPSTAT):
        status = _text(propstat.find(_STATUS)) or "200"
        if " 200" in status or status == "200":
            return propstat.find(_PROP)
    return None


def _resource(href: str | None, response: Any) -> Resource | None:
    if href is None:
        return None
    prop = _first_ok_prop(response)
    if prop is None:
        return None
    data_el = prop.find(_CALENDAR_DATA)
    data = data_el.text if data_el is not None and data_el.text else None
    if data is None:
        return None
    return Resource(href, _text(prop.find(_GETETAG)), data)


def _has_precondition(tree: Any, name: str) -> bool:
    return tree.find(f".//{{{DAV}}}{name}") is not None
