"""The outbound guard: what is refused, that nothing reaches a refused destination, and that the
connection goes to the address that was checked. Receivers listen on loopback and are allow-listed."""

from __future__ import annotations

import asyncio
import ipaddress
import re
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field

import httpx
import pytest

from chronos import testing as kit
from chronos.net import GuardedBackend, not_public, parse_allow_entry
from chronos.plugin import OutboundPolicy, OutboundRefused, ResponseTooLarge, check_outbound, outbound_client
from chronos.settings import load_settings

LOOPBACK = ["127.0.0.1/32"]


@dataclass
class Receiver:
    """A loopback HTTP/1.1 server: records each request head and answers by path."""

    host: str = "127.0.0.1"
    port: int = 0
    heads: list[str] = field(default_factory=list)
    connections: int = 0
    routes: dict[str, Callable[[asyncio.StreamWriter], Awaitable[None]]] = field(default_factory=dict)

    @property
    def base(self) -> str:
        return f"http://{self.host}:{self.port}"

    def paths(self) -> list[str]:
        return [head.split(" ")[1] for head in self.heads]

    def header(self, index: int, name: str) -> str | None:
        for line in self.heads[index].split("\r\n")[1:]:
            key, _, value = line.partition(":")
            if key.strip().lower() == name.lower():
                return value.strip()
        return None

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        try:
            head = (await reader.readuntil(b"\r\n\r\n")).decode("latin-1")
        except (asyncio.IncompleteReadError, ConnectionError):
            writer.close()
            return
        self.heads.append(head)
        path = head.split(" ")[1]
        answer = self.routes.get(path.split("?")[0], _ok)
        try:
            await answer(writer)
        except ConnectionError:
            pass
        finally:
            writer.close()


async def _ok(writer: asyncio.StreamWriter) -> None:
    writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok")
    await writer.drain()


def redirect_to(location: str) -> Callable[[asyncio.StreamWriter], Awaitable[None]]:
    async def answer(writer: asyncio.StreamWriter) -> None:
        writer.write(
            f"HTTP/1.1 302 Found\r\nLocation: {location}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n".encode()
        )
        await writer.drain()

    return answer


def body_of(size: int, *, announce: bool) -> Callable[[asyncio.StreamWriter], Awaitable[None]]:
    async def answer(writer: asyncio.StreamWriter) -> None:
        if announce:
            writer.write(f"HTTP/1.1 200 OK\r\nContent-Length: {size}\r\nConnection: close\r\n\r\n".encode())
        else:
            writer.write(b"HTTP/1.1 200 OK\r\nConnection: close\r\n\r\n")  # no length: read until close
        chunk = b"x" * 65536
        sent = 0
        while sent < size:
            piece = chunk[: size - sent]
            writer.write(piece)
            sent += len(piece)
            await writer.drain()

    return answer


async def never_answers(writer: asyncio.StreamWriter) -> None:
    await asyncio.Event().wait()


@pytest.fixture
async def receivers() -> AsyncIterator[Callable[..., Awaitable[Receiver]]]:
    servers: list[asyncio.Server] = []

    async def start(host: str = "127.0.0.1") -> Receiver:
        receiver = Receiver(host=host)
        server = await asyncio.start_server(receiver.handle, host, 0)
        receiver.port = server.sockets[0].getsockname()[1]
        servers.append(server)
        return receiver

    yield start
    for server in servers:
        server.close()
    # handlers that never answer are cancelled with the loop; the listening sockets are closed here


@pytest.fixture
async def receiver(receivers) -> Receiver:
    return await receivers()


def fixed_resolver(answers: dict[str, list[str]], calls: list[str] | None = None):
    async def resolve(host: str, port: int) -> list[str]:
        if calls is not None:
            calls.append(host)
        if host not in answers:
            raise OSError(f"unknown host {host}")
        return answers[host]

    return resolve


# -- what is not public --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("address", "kind"),
    [
        ("127.0.0.1", "loopback"),
        ("127.8.9.10", "loopback"),
        ("::1", "loopback"),
        ("0.0.0.0", "unspecified"),
        ("::", "unspecified"),
        ("10.0.0.1", "private"),
        ("172.16.5.4", "private"),
        ("192.168.1.1", "private"),
        ("fc00::1", "private"),
        ("fd12:3456::1", "private"),
        ("169.254.169.254", "cloud metadata"),
        ("169.254.170.2", "cloud metadata"),
        ("fd00:ec2::254", "cloud metadata"),
        ("100.100.100.200", "cloud metadata"),
        ("169.254.1.1", "link-local"),
        ("fe80::1", "link-local"),
        ("224.0.0.1", "multicast"),
        ("ff02::1", "multicast"),
        ("100.64.0.1", "carrier-grade NAT"),
        ("240.0.0.1", "reserved"),
        ("255.255.255.255", "broadcast|reserved|private"),
        ("::ffff:10.0.0.1", "private address (10.0.0.1) in IPv6 form"),
        ("::ffff:127.0.0.1", "loopback address (127.0.0.1) in IPv6 form"),
        ("::ffff:169.254.169.254", "cloud metadata address (169.254.169.254) in IPv6 form"),
        ("64:ff9b::7f00:1", "loopback address (127.0.0.1) in IPv6 form"),  # NAT64
        ("2002:c0a8:101::1", "private address (192.168.1.1) in IPv6 form"),  # 6to4
        ("2001:0:4136:e378:8000:63bf:f5ff:fffe", "private address (10.0.0.1) in IPv6 form"),  # Teredo client
        ("::a00:1", "private address (10.0.0.1) in IPv6 form"),  # IPv4-compatible
    ],
)
def test_non_public_addresses_are_named(address, kind):
    reason = not_public(ipaddress.ip_address(address))
    assert reason is not None
    assert any(part in reason for part in kind.split("|")), reason


@pytest.mark.parametrize("address", ["8.8.8.8", "93.184.216.34", "2606:4700:4700::1111", "::ffff:8.8.8.8"])
def test_public_addresses_pass(address):
    assert not_public(ipaddress.ip_address(address)) is None
    assert OutboundPolicy().refusal(ipaddress.ip_address(address)) is None


# -- refused URLs ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("url", "says"),
    [
        ("http://127.0.0.1/", "127.0.0.1 is a loopback address"),
        ("http://169.254.169.254/latest/meta-data/", "169.254.169.254 is a cloud metadata address"),
        ("http://[::ffff:10.0.0.1]/", "::ffff:10.0.0.1 is a private address (10.0.0.1) in IPv6 form"),
        ("http://[::1]:8080/", "::1 is a loopback address"),
        ("http://0.0.0.0/", "unspecified"),
        ("file:///etc/passwd", "only http and https URLs are fetched, not file"),
        ("gopher://example.com/", "not gopher"),
        ("ftp://example.com/x", "not ftp"),
        ("http:///nohost", "no host"),
    ],
)
async def test_check_outbound_refuses_with_one_line(url, says):
    with pytest.raises(OutboundRefused) as caught:
        await check_outbound(OutboundPolicy(), url)
    message = str(caught.value)
    assert says in message and "\n" not in message
    if "address" in says or "unspecified" in says:
        assert "network.allow" in message


async def test_a_name_resolving_to_a_private_address_is_refused():
    policy = OutboundPolicy(resolver=fixed_resolver({"intranet.example": ["10.1.2.3"]}))
    with pytest.raises(OutboundRefused, match=r"refused: intranet\.example \(10\.1\.2\.3\) is a private address"):
        await check_outbound(policy, "https://intranet.example/hook")


async def test_one_private_answer_refuses_the_name_even_after_a_public_one(receiver):
    calls: list[str] = []
    resolve = fixed_resolver({"mixed.example": ["93.184.216.34", "127.0.0.1"]}, calls)
    policy = OutboundPolicy(resolver=resolve)
    with pytest.raises(OutboundRefused, match=r"mixed\.example \(127\.0\.0\.1\) is a loopback address"):
        await check_outbound(policy, f"http://mixed.example:{receiver.port}/")
    async with outbound_client(policy) as c:
        with pytest.raises(OutboundRefused):
            await c.get(f"http://mixed.example:{receiver.port}/")
    assert receiver.connections == 0


async def test_a_refused_destination_receives_nothing(receiver):
    async with outbound_client(OutboundPolicy()) as c:
        with pytest.raises(OutboundRefused, match="loopback") as caught:
            await c.post(f"{receiver.base}/hook", json={"secret": "payload"})
    assert caught.value.request.url.path == "/hook"
    assert receiver.connections == 0 and receiver.heads == []


async def test_an_unresolvable_name_is_refused_and_a_connect_error():
    policy = OutboundPolicy(resolver=fixed_resolver({}))
    for expected in (OutboundRefused, httpx.ConnectError):
        with pytest.raises(expected, match="cannot resolve nowhere.invalid: unknown host"):
            await check_outbound(policy, "http://nowhere.invalid/")

    async def silent(host: str, port: int) -> list[str]:
        await asyncio.Event().wait()
        return []

    with pytest.raises(OutboundRefused, match=r"cannot resolve slow.example: no answer within 0\.2s"):
        await OutboundPolicy(resolver=silent).check_url("http://slow.example/", timeout=0.2)
    async with outbound_client(OutboundPolicy(resolver=fixed_resolver({}))) as c:
        with pytest.raises(httpx.ConnectError, match="cannot resolve"):  # in a request: a connect error to retry
            await c.get("http://nowhere.invalid/")


async def test_pool_limits_reach_the_guarded_transport(receiver):
    receiver.routes["/never"] = never_answers
    limits = httpx.Limits(max_connections=1)
    async with outbound_client(OutboundPolicy.from_entries(LOOPBACK), limits=limits, timeout=30) as c:
        first = asyncio.create_task(c.get(f"{receiver.base}/never"))  # holds the only connection
        async with asyncio.timeout(10):
            while not receiver.heads:
                await asyncio.sleep(0.01)
        with pytest.raises(httpx.PoolTimeout):
            await c.get(f"{receiver.base}/ok", timeout=httpx.Timeout(30, pool=0.2))
        first.cancel()
    assert receiver.paths() == ["/never"]


# -- network.allow --------------------------------------------------------------------------------


async def test_an_allow_listed_cidr_opens_loopback(receiver):
    policy = OutboundPolicy.from_entries(LOOPBACK)
    await check_outbound(policy, f"{receiver.base}/")
    async with outbound_client(policy) as c:
        r = await c.get(f"{receiver.base}/feed?token=1")
    assert (r.status_code, r.text) == (200, "ok")
    assert receiver.paths() == ["/feed?token=1"]


async def test_an_allow_listed_name_is_trusted_with_its_addresses(receiver):
    resolve = fixed_resolver({"caldav.internal": ["127.0.0.1"], "other.internal": ["127.0.0.1"]})
    policy = OutboundPolicy.from_entries(["caldav.internal"], resolver=resolve)
    async with outbound_client(policy) as c:
        assert (await c.get(f"http://caldav.internal:{receiver.port}/")).status_code == 200
        with pytest.raises(OutboundRefused, match="other.internal"):
            await c.get(f"http://other.internal:{receiver.port}/")
    assert len(receiver.heads) == 1


def test_suffix_entries_match_subdomains_only():
    policy = OutboundPolicy.from_entries(["*.corp.example", "Exact.Example."])
    assert policy.host_allowed("a.corp.example") and policy.host_allowed("x.y.CORP.example")
    assert not policy.host_allowed("corp.example") and not policy.host_allowed("evilcorp.example")
    assert policy.host_allowed("exact.example") and not policy.host_allowed("sub.exact.example")


@pytest.mark.parametrize("entry", ["", "10.0.0.0/33", "not a host", "-bad.example", "a..b", "http://x/"])
def test_invalid_allow_entries_are_refused(entry):
    with pytest.raises(ValueError):
        parse_allow_entry(entry)


def test_network_allow_comes_from_the_environment_and_is_validated():
    settings = load_settings(env={"CHRONOS__NETWORK__ALLOW": '["127.0.0.1/32", "caldav.internal"]'})
    assert settings.network.allow == ["127.0.0.1/32", "caldav.internal"]
    policy = OutboundPolicy.from_settings(settings)
    assert policy.address_allowed(ipaddress.ip_address("127.0.0.1"))
    assert not policy.address_allowed(ipaddress.ip_address("127.0.0.2"))
    with pytest.raises(kit.ConfigError, match=r"network\.allow.*not a valid CIDR.*CHRONOS__NETWORK__ALLOW"):
        load_settings(env={"CHRONOS__NETWORK__ALLOW": '["10.0.0.0/33"]'})


async def test_outbound_client_reads_the_plugin_context(chronos_app, receiver):
    async with chronos_app(config={"network": {"allow": LOOPBACK}}) as app:
        ctx = kit.runtime_of(app).ctx
        async with outbound_client(ctx) as c:
            assert (await c.get(f"{receiver.base}/")).status_code == 200
    async with chronos_app() as app:
        with pytest.raises(OutboundRefused):
            await check_outbound(kit.runtime_of(app).ctx, receiver.base)


# -- the connection goes to the checked address ---------------------------------------------------


async def test_the_connection_goes_to_the_address_that_was_checked(receiver):
    calls: list[str] = []
    answers = iter([["127.0.0.1"], ["10.9.9.9"]])  # a second lookup would answer something else

    async def rebinding(host: str, port: int) -> list[str]:
        calls.append(host)
        return next(answers)

    policy = OutboundPolicy.from_entries(LOOPBACK, resolver=rebinding)
    async with outbound_client(policy) as c:
        r = await c.get(f"http://calendar.example:{receiver.port}/cal.ics")
    assert r.status_code == 200 and calls == ["calendar.example"]
    assert receiver.header(0, "host") == f"calendar.example:{receiver.port}"


async def test_a_name_resolving_to_loopback_is_refused_unless_allow_listed(receiver):
    resolve = fixed_resolver({"sneaky.example": ["127.0.0.1"]})
    async with outbound_client(OutboundPolicy(resolver=resolve)) as c:
        with pytest.raises(OutboundRefused, match=r"sneaky\.example \(127\.0\.0\.1\) is a loopback address"):
            await c.get(f"http://sneaky.example:{receiver.port}/")
    assert receiver.connections == 0
    async with outbound_client(OutboundPolicy.from_entries(LOOPBACK, resolver=resolve)) as c:
        assert (await c.get(f"http://sneaky.example:{receiver.port}/")).status_code == 200


async def test_the_backend_tries_the_checked_addresses_in_order(receiver):
    resolve = fixed_resolver({"two.example": ["127.0.0.3", "127.0.0.1"]})  # nothing listens on 127.0.0.3
    policy = OutboundPolicy.from_entries(["127.0.0.0/8"], resolver=resolve)
    stream = await GuardedBackend(policy).connect_tcp("two.example", receiver.port, timeout=5)
    await stream.aclose()
    assert receiver.connections == 1


# -- redirects ------------------------------------------------------------------------------------


async def test_every_redirect_hop_is_checked(receivers):
    inside = await receivers("127.0.0.2")
    front = await receivers()
    front.routes["/to-private"] = redirect_to(f"{inside.base}/admin")
    front.routes["/to-metadata"] = redirect_to("http://169.254.169.254/latest/meta-data/")
    front.routes["/to-mapped"] = redirect_to("http://[::ffff:10.0.0.1]/")
    front.routes["/to-file"] = redirect_to("file:///etc/passwd")
    front.routes["/to-inside-ok"] = redirect_to(f"{inside.base}/allowed")
    async with outbound_client(OutboundPolicy.from_entries(LOOPBACK), follow_redirects=True) as c:
        for path, says in [
            ("/to-private", "127.0.0.2 is a loopback address"),
            ("/to-metadata", "cloud metadata"),
            ("/to-mapped", "private address (10.0.0.1)"),
        ]:
            with pytest.raises(OutboundRefused, match=re.escape(says)):
                await c.get(f"{front.base}{path}")
        with pytest.raises((OutboundRefused, httpx.UnsupportedProtocol)):
            await c.get(f"{front.base}/to-file")
    assert inside.connections == 0
    async with outbound_client(OutboundPolicy.from_entries(["127.0.0.0/8"]), follow_redirects=True) as c:
        r = await c.get(f"{front.base}/to-inside-ok")
    assert r.status_code == 200 and inside.paths() == ["/allowed"]


async def test_redirects_are_not_followed_unless_asked(receiver):
    receiver.routes["/moved"] = redirect_to("http://169.254.169.254/")
    async with outbound_client(OutboundPolicy.from_entries(LOOPBACK)) as c:
        r = await c.get(f"{receiver.base}/moved")
    assert r.status_code == 302 and r.headers["location"] == "http://169.254.169.254/"


# -- size and time --------------------------------------------------------------------------------


async def test_a_ten_megabyte_answer_is_refused_at_the_default_cap(receiver):
    receiver.routes["/big"] = body_of(10 * 1024 * 1024 + 1, announce=False)
    async with outbound_client(OutboundPolicy.from_entries(LOOPBACK)) as c:
        with pytest.raises(ResponseTooLarge, match=r"sent more than the limit of 10,485,760 bytes") as caught:
            await c.get(f"{receiver.base}/big?secret=1")
    assert "secret" not in str(caught.value) and caught.value.request.url.path == "/big"


async def test_an_announced_size_over_the_cap_is_refused_before_reading(receiver):
    receiver.routes["/big"] = body_of(50_000, announce=True)
    async with outbound_client(OutboundPolicy.from_entries(LOOPBACK), max_response_bytes=10_000) as c:
        with pytest.raises(ResponseTooLarge, match="announces more than the limit of 10,000 bytes"):
            await c.get(f"{receiver.base}/big")
        async with c.stream("GET", f"{receiver.base}/fine") as r:
            assert await r.aread() == b"ok"


async def test_streaming_reads_are_capped_too(receiver):
    receiver.routes["/stream"] = body_of(200_000, announce=False)
    received = 0
    client = outbound_client(OutboundPolicy.from_entries(LOOPBACK), max_response_bytes=100_000)
    async with client as c, c.stream("GET", f"{receiver.base}/stream") as r:
        assert r.status_code == 200
        with pytest.raises(ResponseTooLarge):
            async for chunk in r.aiter_bytes():
                received += len(chunk)
    assert received <= 100_000


async def test_a_receiver_that_never_answers_times_out(receiver):
    receiver.routes["/never"] = never_answers
    async with outbound_client(OutboundPolicy.from_entries(LOOPBACK), timeout=0.3) as c:
        with pytest.raises(httpx.ReadTimeout):
            await c.get(f"{receiver.base}/never")
    assert receiver.paths() == ["/never"]


# -- what the client ignores ----------------------------------------------------------------------


async def test_proxy_environment_variables_cannot_route_around_the_guard(receivers, monkeypatch):
    proxy = await receivers()
    target = await receivers("127.0.0.2")
    for name in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "http_proxy", "https_proxy", "all_proxy"):
        monkeypatch.setenv(name, proxy.base)
    monkeypatch.delenv("NO_PROXY", raising=False)
    monkeypatch.delenv("no_proxy", raising=False)
    async with outbound_client(OutboundPolicy.from_entries(["127.0.0.2/32"])) as c:
        assert (await c.get(f"{target.base}/direct")).status_code == 200
    assert proxy.connections == 0 and target.paths() == ["/direct"]


async def test_through_a_configured_proxy_the_target_is_still_checked(receivers):
    proxy = await receivers()
    async with outbound_client(OutboundPolicy(), proxy=proxy.base) as c:
        with pytest.raises(OutboundRefused, match="169.254.169.254"):
            await c.get("http://169.254.169.254/latest/meta-data/")
    assert proxy.connections == 0


def test_a_custom_transport_cannot_replace_the_guard():
    with pytest.raises(TypeError, match="transport"):
        outbound_client(OutboundPolicy(), transport=httpx.AsyncHTTPTransport())
