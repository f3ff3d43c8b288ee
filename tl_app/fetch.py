"""A safe fetcher for untrusted picture links.

- http and https only (no ``file://``, ``ftp://``, ``data:``);
- the host is resolved and every address must be public: loopback, private,
  link-local, multicast, reserved and other non-global addresses are refused;
  the connection goes to the address that was checked (the TLS certificate is
  still checked against the host name), and the check is made again after each
  redirect (at most 5);
- caps on total time (20 s) and bytes (20 MB), enforced while streaming;
- the body goes to a temporary file; the caller moves it into the dataset only
  after the image pipeline accepts it.

``TL_ALLOW_HOSTS="127.0.0.1:8001,..."`` lets the named loopback host:port pairs
through the address guard. It exists for tests, is off by default, and the UI
never sets it.
"""

from __future__ import annotations

import asyncio
import ipaddress
import os
import socket
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Optional
from urllib.parse import urljoin, urlsplit

from .errors import FetchRefused

MAX_BYTES = 20 * 1024 * 1024
TOTAL_TIMEOUT = 20.0
MAX_REDIRECTS = 5
USER_AGENT = "Mozilla/5.0 (X11; Linux x86_64) tl_app/0.1 (image classifier builder)"
_REDIRECTS = (301, 302, 303, 307, 308)
_MAX_ADDRS = 4  # addresses of one name tried in turn
_NAT64 = ipaddress.ip_network("64:ff9b::/96")


def allowed_hosts() -> set[tuple[str, int]]:
    """The loopback host:port pairs ``TL_ALLOW_HOSTS`` lets through (tests only)."""
    out = set()
    for part in os.environ.get("TL_ALLOW_HOSTS", "").split(","):
        part = part.strip()
        if not part or ":" not in part:
            continue
        host, _, port = part.rpartition(":")
        try:
            ip = ipaddress.ip_address(host.strip("[]"))
            port_n = int(port)
        except ValueError:
            continue
        if ip.is_loopback:  # only loopback may be allowed: the setting cannot open the private network
            out.add((str(ip), port_n))
    return out


def address_problem(ip: str) -> Optional[str]:
    """Why an IP address must not be fetched from, or None when it is a public address."""
    try:
        addr = ipaddress.ip_address(ip.split("%")[0])
    except ValueError:
        return "not an IP address"
    if isinstance(addr, ipaddress.IPv6Address):
        if addr in _NAT64:  # an IPv6-only network's gateway to IPv4: judge the IPv4 address inside
            return address_problem(str(ipaddress.IPv4Address(int(addr) & 0xFFFFFFFF)))
        mapped = addr.ipv4_mapped or addr.sixtofour or (addr.teredo[1] if addr.teredo else None)
        if mapped is not None:
            inner = address_problem(str(mapped))
            if inner:
                return inner
    # The most specific reason first (169.254.169.254 is "link-local", not just "private").
    for check, what in (("is_loopback", "this computer"), ("is_link_local", "a link-local network"),
                        ("is_unspecified", "an unspecified address"), ("is_multicast", "a multicast group"),
                        ("is_reserved", "a reserved range"), ("is_private", "a private network")):
        if getattr(addr, check):
            return what
    if getattr(addr, "is_site_local", False):  # fec0::/10: deprecated, yet Python counts it as global
        return "a site-local network"
    if not addr.is_global:
        return "a non-public network"
    return None


#: What every link whose host name cannot be looked up is refused with; see :func:`looks_offline`.
UNRESOLVED = "could not be found (no internet connection, or the site is gone)"


def unresolved(host: str) -> str:
    """The reason for a link whose host name cannot be looked up."""
    return f"the site {host} {UNRESOLVED}"


def looks_offline(reasons: list[str]) -> bool:
    """Whether a download's refusals say there is no internet connection: every link's site could not be found."""
    return bool(reasons) and all(UNRESOLVED in r for r in reasons)


def check_url(url: str) -> tuple[str, str, int]:
    """``(scheme, host, port)`` of an http(s) URL, or :class:`FetchRefused` naming the problem."""
    try:
        parts = urlsplit(url.strip())
        port = parts.port
    except ValueError:
        raise FetchRefused("the link is not a valid web address") from None
    scheme = parts.scheme.lower()
    if scheme not in ("http", "https"):
        raise FetchRefused(f"only http and https links are downloaded, not {scheme or 'this kind of'} links")
    if not parts.hostname:
        raise FetchRefused("the link has no host name")
    if parts.username or parts.password:
        raise FetchRefused("links with a user name or password are not downloaded")
    return scheme, parts.hostname, port or (443 if scheme == "https" else 80)


async def resolve_checked(host: str, port: int) -> str:
    """Resolve ``host`` and return an address to connect to; refuse non-public addresses.

    Every address the name resolves to must be public, so that a host cannot
    pass the check with one address and be reached on another.
    """
    return (await _resolve_all_checked(host, port))[0]


async def _resolve_all_checked(host: str, port: int) -> list[str]:
    allow = allowed_hosts()
    try:
        literal = ipaddress.ip_address(host.strip("[]"))
        addrs = [str(literal)]
    except ValueError:
        loop = asyncio.get_running_loop()
        try:
            infos = await asyncio.wait_for(loop.getaddrinfo(host, port, type=socket.SOCK_STREAM), 10)
        except (socket.gaierror, UnicodeError) as e:
            raise FetchRefused(unresolved(host), final=False) from None
        except (asyncio.TimeoutError, OSError):
            raise FetchRefused(f"looking up the site {host} took too long or failed", final=False) from None
        addrs = list(dict.fromkeys(i[4][0] for i in infos if i[0] in (socket.AF_INET, socket.AF_INET6)))
        if not addrs:
            raise FetchRefused(f"the host name {host} has no address")
    for a in addrs:
        if (str(ipaddress.ip_address(a.split("%")[0])), port) in allow:
            continue
        why = address_problem(a)
        if why:
            raise FetchRefused(f"the link leads to {why} ({a}), which the app never downloads from")
    return addrs


@dataclass
class Fetched:
    """A downloaded body in a temporary file."""

    url: str            # the URL asked for
    final_url: str      # after redirects
    path: Path
    size: int
    content_type: str


def _pinned_transport(max_connections: int):
    import httpx

    class PinnedTransport(httpx.AsyncBaseTransport):
        """Connects to the address in the request's extensions, keeping Host and TLS SNI of the name.

        Each host name gets its own connection pool: pools are keyed by address,
        and a TLS connection verified for one name must not carry another name's
        requests just because both resolved to the same address.
        """

        def __init__(self):
            self._pools: dict[str, httpx.AsyncHTTPTransport] = {}
            self._tls = None  # one TLS context (CA bundle loaded once) for every pool

        async def handle_async_request(self, request):
            host = request.url.host
            pool = self._pools.get(host)
            if pool is None:
                if self._tls is None:
                    self._tls = httpx.create_ssl_context(verify=True, trust_env=False)
                pool = self._pools[host] = httpx.AsyncHTTPTransport(
                    retries=0, verify=self._tls, http2=False, trust_env=False,
                    limits=httpx.Limits(max_connections=max_connections,
                                        max_keepalive_connections=min(max_connections, 8)))
            ip = request.extensions.get("tl_ip")
            if ip:
                request.url = request.url.copy_with(host=ip)
                request.extensions = {**request.extensions, "sni_hostname": host}
            return await pool.handle_async_request(request)

        async def aclose(self) -> None:
            pools, self._pools = list(self._pools.values()), {}
            for pool in pools:
                await pool.aclose()

    return PinnedTransport()


def make_client(*, max_connections: int = 32):
    """An httpx client for :func:`fetch`: no proxies from the environment, no automatic redirects."""
    import httpx

    # The limits live in the transport's pools (one per host name); a client given a
    # transport ignores its own ``limits``.
    return httpx.AsyncClient(transport=_pinned_transport(max_connections), follow_redirects=False, trust_env=False,
                             timeout=httpx.Timeout(10.0, connect=10.0),
                             headers={"User-Agent": USER_AGENT, "Accept": "image/avif,image/webp,image/*;q=0.9,*/*;q=0.5"})


async def _send_first(client, url: str, host_header: str, addrs: list[str]):
    """Send the request to the first of the checked addresses that accepts a connection.

    A name often resolves to an IPv6 and an IPv4 address, and a machine without
    IPv6 cannot reach the first: try the next one, as browsers do.
    """
    import httpx

    for i, ip in enumerate(addrs):
        req = client.build_request("GET", url, headers={"Host": host_header}, extensions={"tl_ip": ip})
        try:
            return await client.send(req, stream=True)
        except httpx.ConnectError:
            if i == len(addrs) - 1:
                raise


def _size(n: int) -> str:
    """A byte count for messages: '20 MB', '1.5 MB', '195 kB' (binary units, as MAX_BYTES is)."""
    mb = n / 2**20
    return f"{mb:.0f} MB" if mb >= 10 else f"{mb:.1f} MB" if mb >= 1 else f"{n / 1024:.0f} kB"


async def _fetch(client, url: str, dest: Path, max_bytes: int, deadline: float) -> Fetched:
    current = url
    for hop in range(MAX_REDIRECTS + 1):
        scheme, host, port = check_url(current)
        addrs = await _resolve_all_checked(host, port)
        default_port = 443 if scheme == "https" else 80
        host_header = host if port == default_port else f"{host}:{port}"
        if ":" in host and not host.startswith("["):
            host_header = f"[{host}]" if port == default_port else f"[{host}]:{port}"
        resp = await _send_first(client, current, host_header, addrs[:_MAX_ADDRS])
        try:
            if resp.status_code in _REDIRECTS:
                loc = resp.headers.get("location")
                if not loc:
                    raise FetchRefused(f"the server redirected without saying where (HTTP {resp.status_code})")
                current = urljoin(current, loc)
                continue
            if resp.status_code != 200:
                raise FetchRefused(f"the server answered HTTP {resp.status_code} instead of the picture",
                                   final=resp.status_code in (401, 403, 404, 410, 451))
            ctype = resp.headers.get("content-type", "").split(";")[0].strip().lower()
            if ctype.startswith("text/") or ctype in ("application/json", "application/xhtml+xml", "application/xml"):
                raise FetchRefused(f"the server sent a web page or text ({ctype}), not a picture")
            length = resp.headers.get("content-length")
            if length and length.isdigit() and int(length) > max_bytes:
                raise FetchRefused(f"the picture is too large ({_size(int(length))}; the limit is {_size(max_bytes)})")
            size = 0
            with open(dest, "wb") as f:
                async for chunk in resp.aiter_bytes():  # decoded: the cap also stops compression bombs
                    size += len(chunk)
                    if size > max_bytes:
                        raise FetchRefused(f"the picture is larger than the {_size(max_bytes)} limit")
                    if time.monotonic() > deadline:
                        raise asyncio.TimeoutError
                    f.write(chunk)
            return Fetched(url, current, dest, size, ctype)
        finally:
            await resp.aclose()
    raise FetchRefused(f"too many redirects (more than {MAX_REDIRECTS})")


async def fetch(client, url: str, dest: Path, *, max_bytes: int = MAX_BYTES,
                total_timeout: float = TOTAL_TIMEOUT) -> Fetched:
    """Download ``url`` into ``dest`` safely; raise :class:`FetchRefused` with a plain reason.

    On any failure ``dest`` is removed.
    """
    import httpx

    deadline = time.monotonic() + total_timeout
    try:
        return await asyncio.wait_for(_fetch(client, url, dest, max_bytes, deadline), total_timeout)
    except asyncio.TimeoutError:
        _unlink(dest)
        raise FetchRefused(f"the download took longer than {total_timeout:.0f} s", final=False) from None
    except FetchRefused:
        _unlink(dest)
        raise
    except (httpx.HTTPError, OSError, ValueError) as e:
        _unlink(dest)
        raise FetchRefused(_network_reason(url, e), final=False) from None


def _network_reason(url: str, e: BaseException) -> str:
    """A failed connection in plain words (the library's own text stays out of messages)."""
    from . import network

    try:
        host = urlsplit(url).hostname or "the site"
    except ValueError:
        host = "the site"
    if network.cannot_resolve(e):
        return unresolved(host)
    if network.offline(e):
        return "the download failed: no internet connection (the network is unreachable)"
    if network.refused_connection(e):
        return f"the download failed: {host} refused or dropped the connection"
    if network.timed_out(e):
        return f"the download failed: {host} did not answer in time"
    return f"the download failed: the connection to {host} broke off"


def _unlink(p: Path) -> None:
    try:
        os.unlink(p)
    except OSError:
        pass
