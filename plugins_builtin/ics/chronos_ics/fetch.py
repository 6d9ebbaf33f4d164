"""Reading calendars: local files and http(s) feeds, with limits.

Both return ``(data, validators)``; ``data is None`` means "not modified"
(same mtime and size, or HTTP 304). Every failure is a ``SourceError`` with a
message an operator can act on; URLs in messages are redacted to scheme and
host (no user info, path or query string: private feed URLs carry their
secret there; the run names the calendar).
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import httpx

from chronos.plugin import OutboundPolicy, OutboundRefused, ResponseTooLarge, SourceError, outbound_client

USER_AGENT = "chronos-engine-ics/0.1"


def redact(url: str) -> str:
    """``scheme://host[:port]`` — what is safe to show in runs and logs."""
    try:
        parts = urlsplit(url)
        host = parts.hostname or ""
        if parts.port:
            host = f"{host}:{parts.port}"
        return urlunsplit((parts.scheme, host, "", "", ""))
    except ValueError:
        return "<invalid URL>"


def _mb(n: int) -> str:
    """A size a reader can compare: exact below a megabyte, with the bytes above."""
    if n < 1024 * 1024:
        return f"{n:,} B"
    return f"{n / (1024 * 1024):.1f} MB ({n:,} B)"


async def read_file(path: Path, *, max_bytes: int, known: dict[str, Any] | None) -> tuple[bytes | None, dict[str, Any]]:
    """The file's bytes, or ``None`` when mtime and size equal ``known``'s."""
    try:
        st = await asyncio.to_thread(path.stat)
    except FileNotFoundError:
        raise SourceError(f"file not found: {path}") from None
    except OSError as exc:
        raise SourceError(f"cannot read {path}: {exc.strerror or exc}") from None
    if not path.is_file():
        raise SourceError(f"not a regular file: {path}")
    validators = {"mtime_ns": st.st_mtime_ns, "size": st.st_size}
    if st.st_size > max_bytes:
        raise SourceError(f"{path} is {_mb(st.st_size)}, larger than the limit of {_mb(max_bytes)} (ics.max_bytes)")
    if known and known.get("mtime_ns") == st.st_mtime_ns and known.get("size") == st.st_size:
        return None, validators
    try:
        data = await asyncio.to_thread(path.read_bytes)
    except OSError as exc:
        raise SourceError(f"cannot read {path}: {exc.strerror or exc}") from None
    if len(data) > max_bytes:  # grew between stat and read
        raise SourceError(f"{path} is larger than the limit of {_mb(max_bytes)} (ics.max_bytes)")
    return data, validators


def _request_headers(etag: str | None, last_modified: str | None) -> dict[str, str]:
    headers = {"User-Agent": USER_AGENT, "Accept": "text/calendar, */*;q=0.5"}
    if etag:
        headers["If-None-Match"] = etag
    if last_modified:
        headers["If-Modified-Since"] = last_modified
    return headers


async def _read_body(resp: httpx.Response, shown: str, max_bytes: int) -> tuple[bytes, dict[str, Any]]:
    """The body of a successful answer (at most ``max_bytes``) and its cache validators."""
    if resp.status_code >= 400 or resp.status_code < 200 or resp.status_code == 204:
        reason = resp.reason_phrase or ""
        raise SourceError(f"HTTP {resp.status_code} {reason} from {redact(str(resp.url))}".rstrip())
    declared = resp.headers.get("content-length")
    if declared and declared.isdigit() and int(declared) > max_bytes:
        raise SourceError(
            f"{shown} announces {_mb(int(declared))}, more than the limit of {_mb(max_bytes)} (ics.max_bytes)"
        )
    body = bytearray()
    async for chunk in resp.aiter_bytes():
        body += chunk
        if len(body) > max_bytes:
            raise SourceError(f"{shown} sent more than the limit of {_mb(max_bytes)} (ics.max_bytes)")
    validators = {
        "etag": resp.headers.get("etag"),
        "last_modified": resp.headers.get("last-modified"),
        "content_type": resp.headers.get("content-type"),
    }
    return bytes(body), validators


def _failure(exc: Exception, shown: str, timeout: float, max_redirects: int, max_bytes: int) -> SourceError:
    """What a failed download reports (the URL redacted)."""
    if isinstance(exc, OutboundRefused):  # names the host and address only, never the path or query
        return SourceError(f"download from {shown} {exc}")
    if isinstance(exc, ResponseTooLarge):
        return SourceError(f"{shown} sent more than the limit of {_mb(max_bytes)} (ics.max_bytes)")
    if isinstance(exc, (TimeoutError, httpx.TimeoutException)):
        return SourceError(f"no complete answer from {shown} within {timeout:g}s (ics.timeout_seconds)")
    if isinstance(exc, httpx.TooManyRedirects):
        return SourceError(f"more than {max_redirects} redirects from {shown} (a redirect loop?)")
    if isinstance(exc, httpx.UnsupportedProtocol):
        return SourceError(f"{shown} redirected to a scheme other than http or https")
    if isinstance(exc, httpx.ConnectError):
        return SourceError(f"cannot connect to {shown}: {exc or type(exc).__name__}")
    return SourceError(f"download from {shown} failed: {type(exc).__name__}: {exc}")


async def download(
    url: str,
    *,
    max_bytes: int,
    timeout: float,
    max_redirects: int,
    etag: str | None = None,
    last_modified: str | None = None,
    proxy: str | None = None,
    outbound: OutboundPolicy | None = None,
) -> tuple[bytes | None, dict[str, Any]]:
    """GET ``url`` with a conditional request; ``None`` on 304.

    The request goes through the kernel's outbound guard (``outbound``: the
    policy from ``network.allow``; none allows only public addresses): a feed
    or a redirect to a loopback, private or metadata address is refused. The
    body is streamed and abandoned as soon as it passes ``max_bytes``;
    ``timeout`` bounds the whole download (a server trickling bytes cannot
    hold a sync forever); only http and https are followed. The environment
    is ignored (``HTTP_PROXY``, ``HTTPS_PROXY``, ``ALL_PROXY``, ``NO_PROXY``,
    netrc): only ``proxy`` (``ics.proxy``) sends requests through a proxy.
    """
    shown = redact(url)
    client = outbound_client(
        outbound or OutboundPolicy(),
        timeout=timeout,
        max_response_bytes=max_bytes,
        follow_redirects=True,
        max_redirects=max_redirects,
        proxy=proxy,
    )
    try:
        async with asyncio.timeout(timeout):
            async with client.stream("GET", url, headers=_request_headers(etag, last_modified)) as resp:
                if resp.status_code == 304:
                    return None, {"etag": etag, "last_modified": last_modified}
                return await _read_body(resp, shown, max_bytes)
    except SourceError:
        raise
    except (TimeoutError, httpx.HTTPError) as exc:
        raise _failure(exc, shown, timeout, max_redirects, max_bytes) from None
    finally:
        await client.aclose()
