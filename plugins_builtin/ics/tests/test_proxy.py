"""Feed downloads ignore the proxy environment; ``ics.proxy`` is the one way through a proxy."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

import pytest

from chronos import testing as kit
from chronos.plugin import OutboundPolicy
from ics_support import LOOPBACK_ALLOWED, ics, single

from chronos_ics.fetch import download

LOOPBACK = LOOPBACK_ALLOWED["allow"]
LIMITS = {"max_bytes": 100_000, "timeout": 5, "max_redirects": 3, "outbound": OutboundPolicy.from_entries(LOOPBACK)}
PROXY_VARS = ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "NO_PROXY")
VIA_PROXY = ics(single("p1", "Through the proxy")).encode()


@dataclass
class RecordingProxy:
    """A tiny HTTP proxy: records each connection's request line and answers every GET itself."""

    url: str = ""
    request_lines: list[str] = field(default_factory=list)

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        head = await reader.readuntil(b"\r\n\r\n")
        self.request_lines.append(head.split(b"\r\n", 1)[0].decode())
        writer.write(
            b"HTTP/1.1 200 OK\r\nContent-Type: text/calendar\r\nConnection: close\r\n"
            + f"Content-Length: {len(VIA_PROXY)}\r\n\r\n".encode()
            + VIA_PROXY
        )
        await writer.drain()
        writer.close()


@pytest.fixture
async def proxy() -> AsyncIterator[RecordingProxy]:
    recorder = RecordingProxy()
    server = await asyncio.start_server(recorder.handle, "127.0.0.1", 0)
    recorder.url = f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}"
    async with server:
        yield recorder


@pytest.fixture
def proxy_env(monkeypatch, proxy):
    """Every proxy variable (both spellings) points at the recording proxy; nothing is exempt."""
    for name in PROXY_VARS:
        monkeypatch.delenv(name, raising=False)
        monkeypatch.delenv(name.lower(), raising=False)
    for name in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY"):
        monkeypatch.setenv(name, proxy.url)
        monkeypatch.setenv(name.lower(), proxy.url)
    return proxy


async def test_proxy_environment_variables_are_ignored(feed_server, proxy_env):
    feed_server.feed.body = ics(single("d1", "Direct")).encode()
    data, _ = await download(feed_server.url("/cal.ics"), **LIMITS)
    assert data == feed_server.feed.body
    assert proxy_env.request_lines == []


async def test_a_configured_proxy_is_used(feed_server, proxy):
    url = feed_server.url("/cal.ics?token=s3cret")
    data, _ = await download(url, proxy=proxy.url, **LIMITS)
    assert data == VIA_PROXY
    assert proxy.request_lines == [f"GET {url} HTTP/1.1"]


async def test_ics_proxy_setting_reaches_the_sync(chronos_app, feed_server, proxy_env):
    feed_server.feed.body = ics(single("d1", "Direct")).encode()
    cal = {"id": "web", "url": feed_server.url("/cal.ics")}
    direct = {"ics": {"calendars": [cal]}, "network": LOOPBACK_ALLOWED}
    async with chronos_app(plugins=["events", "normalize", "ics"], config=direct) as app:
        run = await kit.sync_now(app, "ics", "web")
        assert (run.status, run.added) == ("ok", 1) and proxy_env.request_lines == []
    config = {"ics": {"calendars": [cal], "proxy": proxy_env.url}, "network": LOOPBACK_ALLOWED}
    async with chronos_app(plugins=["events", "normalize", "ics"], config=config) as app:
        run = await kit.sync_now(app, "ics", "web", full=True)
        assert (run.status, run.added) == ("ok", 1), run.error
        assert proxy_env.request_lines == [f"GET {cal['url']} HTTP/1.1"]


def test_the_proxy_setting_takes_only_http_urls(database):
    with pytest.raises(kit.ConfigError, match=r"ics\.proxy.*http:// or https:// URL"):
        kit.make_test_app(database, ["ics"], {"ics": {"proxy": "socks5://127.0.0.1:1080"}})
