"""Downloading feeds and reading files, against a real HTTP server and real files."""

from __future__ import annotations

import os

import pytest

from chronos.plugin import OutboundPolicy, SourceError
from ics_support import LOOPBACK_ALLOWED, ics, single

from chronos_ics.fetch import download, read_file, redact

LOOPBACK = OutboundPolicy.from_entries(LOOPBACK_ALLOWED["allow"])
LIMITS = {"max_bytes": 100_000, "timeout": 5, "max_redirects": 3, "outbound": LOOPBACK}


async def test_conditional_get_answers_not_modified(feed_server):
    feed_server.feed.body = ics(single("a", "Standup")).encode()
    data, validators = await download(feed_server.url("/cal.ics"), **LIMITS)
    assert data == feed_server.feed.body and validators["etag"] == feed_server.feed.etag
    assert validators["last_modified"] == "Sat, 28 Nov 2026 10:00:00 GMT"
    data, _ = await download(
        feed_server.url("/cal.ics"), etag=validators["etag"], last_modified=validators["last_modified"], **LIMITS
    )
    assert data is None
    sent = feed_server.feed.requests[-1]
    assert sent["if-none-match"] == validators["etag"] and sent["if-modified-since"] == validators["last_modified"]
    feed_server.feed.body += b"\r\n"  # changed content -> a new ETag -> the body again
    data, _ = await download(feed_server.url("/cal.ics"), etag=validators["etag"], **LIMITS)
    assert data == feed_server.feed.body


async def test_redirects_are_followed_up_to_the_limit(feed_server):
    feed_server.feed.body = ics(single("a", "x")).encode()
    data, _ = await download(feed_server.url("/hop"), **LIMITS)
    assert data == feed_server.feed.body
    with pytest.raises(SourceError, match=r"more than 3 redirects .*redirect loop"):
        await download(feed_server.url("/loop"), **LIMITS)
    with pytest.raises(SourceError, match="refused: only http and https URLs are fetched, not ftp"):
        await download(feed_server.url("/ftp"), **LIMITS)


@pytest.mark.parametrize(
    ("path", "message"),
    [
        ("/missing.ics", r"HTTP 404 Not Found from http://127\.0\.0\.1:\d+$"),
        ("/big", r"announces 200,017 B, more than the limit of 100,000 B"),
        ("/big-stream", r"sent more than the limit of 100,000 B"),
    ],
)
async def test_http_errors_and_size_limits(feed_server, path, message):
    with pytest.raises(SourceError, match=message):
        await download(feed_server.url(path), **LIMITS)


async def test_slow_servers_hit_the_total_timeout(feed_server):
    with pytest.raises(SourceError, match=r"no complete answer .* within 0\.5s"):
        await download(feed_server.url("/slow"), max_bytes=100_000, timeout=0.5, max_redirects=3, outbound=LOOPBACK)


async def test_unreachable_hosts_fail_clearly():
    from ics_support import free_port

    with pytest.raises(SourceError, match=r"cannot connect to http://127\.0\.0\.1:\d+: "):
        await download(f"http://127.0.0.1:{free_port()}/cal.ics?token=s3cret", **LIMITS)


async def test_feeds_at_non_public_addresses_are_refused_unless_allow_listed(feed_server):
    before = len(feed_server.feed.requests)
    url = feed_server.url("/cal.ics?token=s3cret")
    with pytest.raises(
        SourceError, match=r"^download from http://127\.0\.0\.1:\d+ refused: 127\.0\.0\.1 is a loopback"
    ) as e:
        await download(url, max_bytes=100_000, timeout=5, max_redirects=3)
    assert "network.allow" in str(e.value) and "s3cret" not in str(e.value)
    for address in ("169.254.169.254", "[::ffff:10.0.0.1]", "10.0.0.7"):
        with pytest.raises(SourceError, match="refused: .* address"):
            await download(f"http://{address}/cal.ics", **LIMITS)
    assert len(feed_server.feed.requests) == before


async def test_a_feed_name_resolving_to_a_private_address_needs_network_allow(feed_server):
    async def resolve(host: str, port: int) -> list[str]:
        return ["127.0.0.1"]  # calendar.internal is this machine

    feed_server.feed.body = ics(single("n", "Named")).encode()
    url = feed_server.url("/cal.ics").replace("127.0.0.1", "calendar.internal")
    refused = OutboundPolicy(resolver=resolve)
    with pytest.raises(SourceError, match=r"refused: calendar\.internal \(127\.0\.0\.1\) is a loopback address"):
        await download(url, **{**LIMITS, "outbound": refused})
    by_name = OutboundPolicy.from_entries(["calendar.internal"], resolver=resolve)
    data, _ = await download(url, **{**LIMITS, "outbound": by_name})
    assert data == feed_server.feed.body and feed_server.feed.requests[-1]["host"].startswith("calendar.internal:")


async def test_a_redirect_to_a_metadata_address_is_refused(feed_server):
    with pytest.raises(SourceError, match=r"refused: 169\.254\.169\.254 is a cloud metadata address"):
        await download(feed_server.url("/to-metadata"), **LIMITS)


def test_urls_are_redacted_in_messages():
    assert redact("https://user:pw@cal.example.org:8443/feed/x.ics?token=s3cret#frag") == (
        "https://cal.example.org:8443"
    )


async def test_files_unchanged_by_mtime_and_size_are_not_read(tmp_path):
    path = tmp_path / "cal.ics"
    path.write_text(ics(single("a", "x")))
    data, known = await read_file(path, max_bytes=100_000, known=None)
    assert data == path.read_bytes()
    again, _ = await read_file(path, max_bytes=100_000, known=known)
    assert again is None
    os.utime(path, ns=(known["mtime_ns"] + 10**9, known["mtime_ns"] + 10**9))
    again, _ = await read_file(path, max_bytes=100_000, known=known)
    assert again == data


async def test_missing_and_oversized_files(tmp_path):
    with pytest.raises(SourceError, match="file not found"):
        await read_file(tmp_path / "nope.ics", max_bytes=100, known=None)
    big = tmp_path / "big.ics"
    with big.open("wb") as fh:
        fh.truncate(50 * 1024 * 1024)  # a sparse 50 MB file: refused by size, never read
    refused = r"is 50\.0 MB \(52,428,800 B\), larger than the limit of 20\.0 MB \(20,971,520 B\)"
    with pytest.raises(SourceError, match=refused):
        await read_file(big, max_bytes=20 * 1024 * 1024, known=None)
