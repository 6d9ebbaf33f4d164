"""One guard for every outbound HTTP request (webhooks, channels, ICS feeds, CalDAV).

Only http and https leave the service. The destination's host is resolved once,
every address it resolves to is checked, and the connection goes to a checked
address (the name is never resolved a second time, so a DNS answer that changes
between check and connect cannot slip through). Loopback, private, link-local,
multicast, unspecified, reserved, shared (100.64.0.0/10) and cloud-metadata
addresses are refused, in their IPv6, IPv4-mapped, 6to4, Teredo and NAT64 forms
too, unless the operator allow-lists them in ``network.allow`` (CIDRs and host
names). Redirects are followed hop by hop through the same transport, so every
hop is checked again; response bodies are capped while they are read.

TLS keeps the original host name for SNI and certificate verification (httpcore
passes it to ``start_tls``); the Host header is the URL's.
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
import ssl
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import httpcore
import httpx

if TYPE_CHECKING:  # pragma: no cover
    from chronos.settings import NetworkSettings, Settings

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network
#: ``resolve(host, port) -> addresses`` (as text, in the resolver's order).
Resolver = Callable[[str, int], Awaitable[Sequence[str]]]

ALLOW_HINT = "allow it in network.allow"
DEFAULT_TIMEOUT = 15.0
DEFAULT_RESOLVE_TIMEOUT = 10.0
DEFAULT_MAX_RESPONSE_BYTES = 10 * 1024 * 1024
DEFAULT_LIMITS = httpx.Limits(max_connections=100, max_keepalive_connections=20, keepalive_expiry=5.0)

_METADATA = {
    ipaddress.ip_address("169.254.169.254"),  # AWS, GCP, Azure, OpenStack …
    ipaddress.ip_address("169.254.170.2"),  # AWS ECS task metadata
    ipaddress.ip_address("100.100.100.200"),  # Alibaba Cloud
    ipaddress.ip_address("fd00:ec2::254"),  # AWS over IPv6
}
_SHARED = ipaddress.ip_network("100.64.0.0/10")  # carrier-grade NAT: not public, not is_private before 3.12
_NAT64 = (ipaddress.ip_network("64:ff9b::/96"), ipaddress.ip_network("64:ff9b:1::/48"))


class OutboundRefused(httpx.RequestError):
    """A destination the outbound guard does not allow; the message is one line saying why."""


class ResponseTooLarge(httpx.RequestError):
    """A response body larger than the client's ``max_response_bytes`` (raised while reading it)."""


class UnresolvableHost(OutboundRefused, httpx.ConnectError):
    """``check_outbound`` could not resolve the URL's host (no such name, no answer in time).

    Both a refusal (nothing can be checked, so nothing is allowed: code that
    validates a URL given by a client catches ``OutboundRefused``) and a
    connect error (code that retries connection failures catches ``httpx.ConnectError``).
    """


# -- network.allow ----------------------------------------------------------------------------------


def parse_allow_entry(entry: str) -> IPNetwork | str:
    """A CIDR (a bare address is a single-address network) or a lower-case host name (``*.suffix`` allowed).

    ``ValueError`` with a one-line reason for anything else.
    """
    text = entry.strip()
    if not text:
        raise ValueError("an empty entry; give a CIDR such as 127.0.0.1/32 or a host name")
    try:
        return ipaddress.ip_network(text.strip("[]"), strict=False)
    except ValueError:
        pass
    if "/" in text:
        raise ValueError(f"{entry!r} is not a valid CIDR (e.g. 10.0.0.0/8 or fd00::/8)")
    name = text.lower().rstrip(".")
    labels = name[2:].split(".") if name.startswith("*.") else name.split(".")
    if not labels or not all(_is_label(label) for label in labels):
        raise ValueError(f"{entry!r} is neither a CIDR nor a host name (letters, digits, '-', dots; '*.' prefix)")
    return name


def _is_label(label: str) -> bool:
    return 0 < len(label) <= 63 and label[0] != "-" and label[-1] != "-" and all(c.isalnum() or c == "-" for c in label)


@dataclass(frozen=True)
class OutboundPolicy:
    """What the guard allows beyond public addresses, and how it resolves names.

    Build it from settings with :meth:`from_settings`; ``resolver`` replaces the
    system resolver (tests use it to make a name resolve to chosen addresses).
    """

    networks: tuple[IPNetwork, ...] = ()
    hosts: frozenset[str] = frozenset()
    suffixes: tuple[str, ...] = ()
    resolver: Resolver | None = field(default=None, compare=False)

    @classmethod
    def from_entries(cls, entries: Iterable[str], *, resolver: Resolver | None = None) -> OutboundPolicy:
        networks: list[IPNetwork] = []
        hosts: set[str] = set()
        suffixes: list[str] = []
        for entry in entries:
            parsed = parse_allow_entry(entry)
            if isinstance(parsed, str):
                if parsed.startswith("*."):
                    suffixes.append(parsed[1:])  # ".corp.example"
                else:
                    hosts.add(parsed)
            else:
                networks.append(parsed)
        return cls(tuple(networks), frozenset(hosts), tuple(suffixes), resolver)

    @classmethod
    def from_settings(cls, settings: Settings | NetworkSettings, *, resolver: Resolver | None = None) -> OutboundPolicy:
        network = getattr(getattr(settings, "kernel", None), "network", settings)
        return cls.from_entries(getattr(network, "allow", ()), resolver=resolver)

    def host_allowed(self, host: str) -> bool:
        """Whether ``host`` (a name from a URL) is allow-listed by name."""
        name = host.lower().rstrip(".")
        return name in self.hosts or any(name.endswith(suffix) for suffix in self.suffixes)

    def address_allowed(self, address: IPAddress) -> bool:
        return any(address.version == net.version and address in net for net in self.networks)

    def refusal(self, address: IPAddress) -> str | None:
        """Why ``address`` is refused, or ``None`` when a connection to it is allowed."""
        if self.address_allowed(address):
            return None
        return not_public(address)

    async def resolve(self, host: str, port: int) -> list[IPAddress]:
        """Every address ``host`` resolves to (an address literal is itself), in the resolver's order."""
        literal = _literal(host)
        if literal is not None:
            return [literal]
        try:
            if self.resolver is not None:
                texts = list(await self.resolver(host, port))
            else:
                infos = await asyncio.get_running_loop().getaddrinfo(host, port, type=socket.SOCK_STREAM)
                texts = [str(info[4][0]) for info in infos]
        except (OSError, UnicodeError) as exc:  # socket.gaierror is an OSError
            raise httpcore.ConnectError(f"cannot resolve {host}: {_gai_reason(exc)}") from None
        found: list[IPAddress] = []
        for text in texts:
            address = ipaddress.ip_address(text.split("%", 1)[0])  # a scope id (fe80::1%eth0) is not part of it
            if address not in found:
                found.append(address)
        if not found:
            raise httpcore.ConnectError(f"cannot resolve {host}: no addresses")
        return found

    async def checked_addresses(self, host: str, port: int) -> list[IPAddress]:
        """The addresses of ``host`` a connection may go to; ``OutboundRefused`` if any of them is refused.

        One refused address refuses the name: a resolver answering a public and a
        private address must not be able to steer the connection to the private one.
        A host allow-listed by name is trusted with whatever it resolves to.
        """
        addresses = await self.resolve(host, port)
        if self.host_allowed(host):
            return addresses
        for address in addresses:
            reason = self.refusal(address)
            if reason is not None:
                shown = host if _literal(host) is not None else f"{host} ({address})"
                raise OutboundRefused(f"refused: {shown} is {reason}; {ALLOW_HINT}")
        return addresses

    async def check_url(self, url: str | httpx.URL, *, timeout: float = DEFAULT_RESOLVE_TIMEOUT) -> list[IPAddress]:
        """Refuse ``url`` unless it is http(s) to an allowed destination; its checked addresses otherwise.

        A host that does not resolve within ``timeout`` seconds raises :class:`UnresolvableHost`.
        """
        try:
            parsed = url if isinstance(url, httpx.URL) else httpx.URL(url)
        except (httpx.InvalidURL, TypeError, ValueError) as exc:
            raise OutboundRefused(f"refused: not a valid URL ({exc})") from None
        if parsed.scheme not in ("http", "https"):
            raise OutboundRefused(f"refused: only http and https URLs are fetched, not {parsed.scheme or 'no'} scheme")
        host = parsed.host
        if not host:
            raise OutboundRefused("refused: the URL has no host")
        port = parsed.port or (443 if parsed.scheme == "https" else 80)
        try:
            async with asyncio.timeout(timeout):
                return await self.checked_addresses(host, port)
        except httpcore.ConnectError as exc:  # the name does not resolve
            raise UnresolvableHost(str(exc)) from None
        except TimeoutError:
            raise UnresolvableHost(f"cannot resolve {host}: no answer within {timeout:g}s") from None


def not_public(address: IPAddress) -> str | None:
    """What kind of non-public address this is (``"a loopback address"`` …), or ``None`` for a public one."""
    if isinstance(address, ipaddress.IPv6Address):
        embedded = _embedded_ipv4(address)
        if embedded is not None:
            inner = not_public(embedded)
            return f"{inner} ({embedded}) in IPv6 form" if inner else None
    if address in _METADATA:
        return "a cloud metadata address"
    checks = (
        ("is_unspecified", "an unspecified address"),
        ("is_loopback", "a loopback address"),
        ("is_link_local", "a link-local address"),
        ("is_multicast", "a multicast address"),
    )
    for attribute, reason in checks:
        if getattr(address, attribute):
            return reason
    if address.version == 4 and address in _SHARED:
        return "a shared (carrier-grade NAT) address"
    if address.is_reserved:
        return "a reserved address"
    if address.is_private:
        return "a private address"
    if isinstance(address, ipaddress.IPv6Address) and address.is_site_local:
        return "a site-local address"
    if not address.is_global:
        return "not a public address"
    return None


def _embedded_ipv4(address: ipaddress.IPv6Address) -> ipaddress.IPv4Address | None:
    """The IPv4 address an IPv6 address carries: mapped, 6to4, Teredo client, NAT64, IPv4-compatible."""
    if address.ipv4_mapped is not None:
        return address.ipv4_mapped
    if address.sixtofour is not None:
        return address.sixtofour
    if address.teredo is not None:
        return address.teredo[1]
    if any(address in net for net in _NAT64):
        return ipaddress.IPv4Address(int(address) & 0xFFFFFFFF)
    if int(address) >> 32 == 0 and int(address) > 1:  # ::a.b.c.d (deprecated IPv4-compatible form)
        return ipaddress.IPv4Address(int(address) & 0xFFFFFFFF)
    return None


def _literal(host: str) -> IPAddress | None:
    try:
        return ipaddress.ip_address(host.strip("[]").split("%", 1)[0])
    except ValueError:
        return None


def _gai_reason(exc: BaseException) -> str:
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror
    return str(exc) or type(exc).__name__


# -- the transport ---------------------------------------------------------------------------------


class GuardedBackend(httpcore.AsyncNetworkBackend):
    """httpcore's network backend with the check in ``connect_tcp``: resolve, check, connect to the checked address."""

    def __init__(self, policy: OutboundPolicy, inner: httpcore.AsyncNetworkBackend | None = None) -> None:
        self.policy = policy
        self.inner = inner or httpcore.AnyIOBackend()

    async def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,
        local_address: str | None = None,
        socket_options: Iterable[Any] | None = None,
    ) -> httpcore.AsyncNetworkStream:
        try:
            async with asyncio.timeout(timeout):
                addresses = await self.policy.checked_addresses(host, port)
        except TimeoutError:
            raise httpcore.ConnectTimeout(f"resolving {host} took longer than {timeout:g}s") from None
        last: Exception | None = None
        for address in addresses:  # in the resolver's order, like the system's own connect
            try:
                return await self.inner.connect_tcp(
                    str(address), port, timeout=timeout, local_address=local_address, socket_options=socket_options
                )
            except (httpcore.ConnectError, httpcore.ConnectTimeout) as exc:
                last = exc
        assert last is not None
        raise last

    async def connect_unix_socket(self, path: str, timeout: float | None = None, socket_options: Any = None) -> Any:
        raise OutboundRefused("refused: connections over unix sockets are not outbound HTTP")

    async def sleep(self, seconds: float) -> None:
        await self.inner.sleep(seconds)


class _CappedStream(httpx.AsyncByteStream):
    """A response body that raises ``ResponseTooLarge`` once more than ``limit`` bytes arrived."""

    def __init__(self, inner: httpx.AsyncByteStream, request: httpx.Request, limit: int, declared: str | None) -> None:
        self.inner, self.request, self.limit, self.declared = inner, request, limit, declared

    def _too_large(self, what: str) -> ResponseTooLarge:
        return ResponseTooLarge(
            f"the response from {_origin(self.request.url)} {what} more than the limit of {self.limit:,} bytes",
            request=self.request,
        )

    async def __aiter__(self) -> AsyncIterator[bytes]:
        if self.declared and self.declared.isdigit() and int(self.declared) > self.limit:
            raise self._too_large("announces")
        seen = 0
        async for chunk in self.inner:
            seen += len(chunk)
            if seen > self.limit:
                raise self._too_large("sent")
            yield chunk

    async def aclose(self) -> None:
        await self.inner.aclose()


def _origin(url: httpx.URL) -> str:
    """``scheme://host[:port]``: never the path, query or user info (they may carry secrets)."""
    port = f":{url.port}" if url.port else ""
    host = f"[{url.host}]" if ":" in url.host else url.host
    return f"{url.scheme}://{host}{port}"


class GuardedTransport(httpx.AsyncHTTPTransport):
    """An ``httpx`` transport that connects only to destinations the policy allows and caps response bodies.

    Without a proxy the check runs in the connection itself (:class:`GuardedBackend`).
    Through a proxy (the operator's own, e.g. ``ics.proxy``) the proxy resolves the
    name; the target is still checked before each request.
    """

    def __init__(
        self,
        policy: OutboundPolicy,
        *,
        max_response_bytes: int = DEFAULT_MAX_RESPONSE_BYTES,
        verify: ssl.SSLContext | str | bool = True,
        proxy: str | httpx.URL | httpx.Proxy | None = None,
        limits: httpx.Limits = DEFAULT_LIMITS,
        http2: bool = False,
        retries: int = 0,
    ) -> None:
        ssl_context = (
            verify if isinstance(verify, ssl.SSLContext) else httpx.create_ssl_context(verify, trust_env=False)
        )
        super().__init__(verify=ssl_context, trust_env=False, limits=limits, http2=http2, proxy=proxy, retries=retries)
        self.policy = policy
        self.max_response_bytes = max_response_bytes
        self.proxied = proxy is not None
        if not self.proxied:
            self._pool = httpcore.AsyncConnectionPool(
                ssl_context=ssl_context,
                max_connections=limits.max_connections,
                max_keepalive_connections=limits.max_keepalive_connections,
                keepalive_expiry=limits.keepalive_expiry,
                http1=True,
                http2=http2,
                retries=retries,
                network_backend=GuardedBackend(policy),
            )

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        try:
            if request.url.scheme not in ("http", "https"):
                raise OutboundRefused(f"refused: only http and https URLs are fetched, not {request.url.scheme}")
            if self.proxied:
                await self.policy.check_url(request.url)
            response = await super().handle_async_request(request)
        except httpx.RequestError as exc:  # OutboundRefused included: name the request it refused
            exc.request = request
            raise
        assert isinstance(response.stream, httpx.AsyncByteStream)
        response.stream = _CappedStream(
            response.stream, request, self.max_response_bytes, response.headers.get("content-length")
        )
        return response


# -- what plugins call -----------------------------------------------------------------------------


def policy_of(source: Any) -> OutboundPolicy:
    """The policy for a plugin context, the kernel's settings, a ``NetworkSettings`` or a policy itself."""
    if isinstance(source, OutboundPolicy):
        return source
    settings = getattr(source, "settings", source)  # a PluginContext carries the settings
    return OutboundPolicy.from_settings(settings)


def outbound_client(
    ctx: Any,
    *,
    timeout: float = DEFAULT_TIMEOUT,
    max_response_bytes: int = DEFAULT_MAX_RESPONSE_BYTES,
    follow_redirects: bool = False,
    **httpx_kwargs: Any,
) -> httpx.AsyncClient:
    """An ``httpx.AsyncClient`` whose every request (and every redirect hop) passes the outbound guard.

    ``ctx`` is the plugin context (or the settings, or an :class:`OutboundPolicy`).
    Refused destinations raise :class:`OutboundRefused`; a body past
    ``max_response_bytes`` raises :class:`ResponseTooLarge` while it is read
    (streamed reads too). Proxy environment variables and netrc are ignored;
    ``proxy=`` (an operator's setting), ``verify=``, ``http2=`` and ``limits=``
    configure the guarded transport; any other keyword goes to
    ``httpx.AsyncClient``. Close it (``async with``) when done.
    """
    if "transport" in httpx_kwargs or "mounts" in httpx_kwargs:
        raise TypeError("outbound_client builds its own transport; transport= and mounts= are not accepted")
    httpx_kwargs.pop("trust_env", None)
    transport = GuardedTransport(
        policy_of(ctx),
        max_response_bytes=max_response_bytes,
        verify=httpx_kwargs.pop("verify", True),
        proxy=httpx_kwargs.pop("proxy", None),
        http2=httpx_kwargs.pop("http2", False),
        limits=httpx_kwargs.pop("limits", DEFAULT_LIMITS),
    )
    return httpx.AsyncClient(
        transport=transport,
        timeout=timeout,
        follow_redirects=follow_redirects,
        trust_env=False,
        **httpx_kwargs,
    )


async def check_outbound(ctx: Any, url: str) -> None:
    """Raise :class:`OutboundRefused` unless ``url`` is http(s) to an allowed destination (the name is resolved;
    one that does not resolve raises :class:`UnresolvableHost`, an ``OutboundRefused`` and ``httpx.ConnectError``).

    For clients that cannot use :func:`outbound_client` (CalDAV's library): call it
    right before connecting. Such a client resolves the name again itself, so a
    DNS answer changing in between is not covered; prefer ``outbound_client``.
    """
    await policy_of(ctx).check_url(url)
