"""The safe fetcher: which addresses and links it refuses, and how it ends every bad server.

Address checks run on bare IP strings (no connection is made). Every download
goes to the loopback bad server, let through the guard by ``TL_ALLOW_HOSTS``
for its own host:port only.
"""

from __future__ import annotations

import asyncio
import socket
import time

import pytest

import badserver
from tl_app import fetch as F
from tl_app.errors import FetchRefused, ImageRejected
from tl_app.images import normalize

SMALL = 200_000  # byte cap in these tests: the bad routes send more than this


def run_fetch(url: str, dest, **kw) -> F.Fetched:
    async def go():
        client = F.make_client()
        try:
            return await F.fetch(client, url, dest, **kw)
        finally:
            await client.aclose()

    return asyncio.run(go())


def refused(url: str, dest, **kw) -> tuple[FetchRefused, float]:
    """The refusal of ``url`` and how long it took; the temporary file must be gone."""
    t0 = time.monotonic()
    with pytest.raises(FetchRefused) as e:
        run_fetch(url, dest, **kw)
    assert not dest.exists(), "a refused download left its temporary file"
    return e.value, time.monotonic() - t0


# --- addresses (bare IP strings, no connection) -----------------------------------------------

REFUSED = {
    "127.0.0.1": "this computer", "127.255.255.254": "this computer", "::1": "this computer",
    "10.0.0.1": "private", "172.16.0.1": "private", "172.31.255.255": "private", "192.168.1.1": "private",
    "fc00::1": "private", "fd12:3456::1": "private",
    "169.254.169.254": "link-local", "fe80::1": "link-local", "fe80::1%eth0": "link-local",
    "224.0.0.1": "multicast", "239.255.255.250": "multicast", "ff02::1": "multicast",
    "240.0.0.1": "reserved", "255.255.255.255": "reserved",
    "0.0.0.0": "unspecified", "::": "unspecified",
    "100.64.0.1": "non-public", "100.127.255.254": "non-public",            # carrier-grade NAT
    "::ffff:127.0.0.1": "this computer", "::ffff:10.1.2.3": "private",      # IPv4-mapped IPv6
    "2002:c0a8:0101::1": "private", "2002:7f00:0001::1": "this computer",   # 6to4 of 192.168.1.1 / 127.0.0.1
    "64:ff9b::7f00:1": "this computer", "64:ff9b::a00:1": "private",        # NAT64 of 127.0.0.1 / 10.0.0.1
    "fec0::1": "site-local", "192.0.2.1": "", "198.18.0.1": "", "2001:db8::1": "", "0.1.2.3": "",
}
PUBLIC = ["8.8.8.8", "1.1.1.1", "172.32.0.1", "100.128.0.1", "11.0.0.1", "2606:4700:4700::1111",
          "2001:4860:4860::8888", "64:ff9b::808:808"]


@pytest.mark.parametrize("ip", sorted(REFUSED))
def test_non_public_addresses_are_refused_with_a_reason(ip):
    why = F.address_problem(ip)
    assert why, f"{ip} must be refused"
    assert REFUSED[ip] in why


@pytest.mark.parametrize("ip", PUBLIC)
def test_public_addresses_pass(ip):
    assert F.address_problem(ip) is None


def test_a_name_is_not_an_address():
    assert F.address_problem("localhost") == "not an IP address"


# --- links ---------------------------------------------------------------------------------------

@pytest.mark.parametrize("url, words", [
    ("file:///etc/passwd", "not file links"),
    ("ftp://127.0.0.1/cat.jpg", "not ftp links"),
    ("data:image/png;base64,iVBORw0KGgo=", "not data links"),
    ("javascript:alert(1)", "not javascript links"),
    ("gopher://127.0.0.1/", "not gopher links"),
    ("//127.0.0.1/cat.jpg", "only http and https"),
    ("http:///cat.jpg", "no host name"),
    ("http://127.0.0.1:secret@127.0.0.1/cat.jpg", "user name or password"),
    ("http://localhost@127.0.0.1/cat.jpg", "user name or password"),
    ("http://127.0.0.1:99999/cat.jpg", "not a valid web address"),
])
def test_check_url_refuses_what_is_not_a_plain_web_link(url, words):
    with pytest.raises(FetchRefused) as e:
        F.check_url(url)
    assert words in str(e.value)
    assert e.value.final


def test_check_url_gives_scheme_host_and_port():
    assert F.check_url("http://127.0.0.1/cat.jpg") == ("http", "127.0.0.1", 80)
    assert F.check_url(" HTTPS://[::1]:8443/cat.jpg ") == ("https", "::1", 8443)
    assert F.check_url("https://localhost/cat.jpg") == ("https", "localhost", 443)


# --- TL_ALLOW_HOSTS -------------------------------------------------------------------------------

def test_allow_hosts_is_off_by_default():
    assert F.allowed_hosts() == set()


def test_allow_hosts_parses_loopback_pairs(monkeypatch):
    monkeypatch.setenv("TL_ALLOW_HOSTS", " 127.0.0.1:8001, [::1]:8002,127.0.0.2:8003 ")
    assert F.allowed_hosts() == {("127.0.0.1", 8001), ("::1", 8002), ("127.0.0.2", 8003)}


def test_allow_hosts_ignores_everything_but_loopback_pairs(monkeypatch):
    """The setting cannot open the private network, names, or a whole host."""
    monkeypatch.setenv("TL_ALLOW_HOSTS", "10.0.0.1:80,192.168.0.1:80,169.254.169.254:80,0.0.0.0:80,"
                                         "::ffff:127.0.0.1:80,localhost:80,127.0.0.1,127.0.0.1:port,,junk")
    assert F.allowed_hosts() == set()


def test_loopback_is_refused_without_the_setting(server, tmp_path):
    e, _ = refused(server.url("/img/1.jpg"), tmp_path / "x")
    assert "this computer" in str(e)
    assert ("/img/1.jpg", server.hostport) not in server.log


def test_allowing_one_port_does_not_allow_another(monkeypatch, server, other, tmp_path):
    monkeypatch.setenv("TL_ALLOW_HOSTS", server.hostport)
    e, _ = refused(other.url("/img/1.jpg"), tmp_path / "x")
    assert "this computer" in str(e)
    assert other.log == []


# --- downloads that work ----------------------------------------------------------------------------

@pytest.mark.parametrize("path, fmt", [("/img/1.jpg", "JPEG"), ("/img/2.png", "PNG")])
def test_a_good_picture_is_downloaded_whole(allow, tmp_path, path, fmt):
    dest = tmp_path / "x"
    got = run_fetch(allow.url(path), dest)
    n = int(path.split("/")[-1].split(".")[0])
    assert dest.read_bytes() == badserver.image_bytes(n, fmt)
    assert got.size == dest.stat().st_size
    assert got.content_type == f"image/{fmt.lower()}"
    assert got.final_url == got.url == allow.url(path)


def test_five_redirects_are_followed(allow, tmp_path):
    got = run_fetch(allow.url("/chain/5"), tmp_path / "x")
    assert got.final_url == allow.url("/chain/0")
    assert (tmp_path / "x").read_bytes() == badserver.image_bytes(0)


# --- bad servers ------------------------------------------------------------------------------------

@pytest.mark.parametrize("path, words, final", [
    ("/page.html", "web page", True),
    ("/status/404", "HTTP 404", True),
    ("/status/410", "HTTP 410", True),
    ("/status/500", "HTTP 500", False),    # may work another day
    ("/loop", "too many redirects", True),
    ("/chain/6", "too many redirects", True),
    ("/redirect-file", "only http and https", True),
    ("/big-cl?size=1000000", "too large (977 kB; the limit is 195 kB)", True),
    ("/big-nocl?size=1000000", "larger than the 195 kB limit", True),
    ("/endless", "larger than the 195 kB limit", True),
    ("/gzip-bomb", "larger than the 195 kB limit", True),  # the cap counts decoded bytes
])
def test_bad_servers_are_refused_quickly_with_a_reason(allow, tmp_path, path, words, final):
    e, took = refused(allow.url(path), tmp_path / "x", max_bytes=SMALL, total_timeout=2)
    assert words in str(e)
    assert e.final is final
    assert took < 3, f"{path} took {took:.1f} s"  # far below the real 20 s cap


def test_slow_drip_ends_at_the_time_cap(allow, tmp_path):
    e, took = refused(allow.url("/slow"), tmp_path / "x", max_bytes=SMALL, total_timeout=2)
    assert "took longer than 2 s" in str(e)
    assert not e.final
    assert 1.9 < took < 4.0


def test_redirect_to_a_port_that_is_not_allowed_is_refused_after_the_redirect(allow, other, tmp_path):
    e, _ = refused(allow.url(f"/redirect-port/{other.port}"), tmp_path / "x")
    assert "this computer (127.0.0.1)" in str(e)
    assert (f"/redirect-port/{other.port}", allow.hostport) in allow.log  # the first hop was allowed
    assert other.log == []                                               # the target was never contacted


def test_a_closed_port_is_a_failure_worth_retrying(monkeypatch, tmp_path):
    with badserver.start() as gone:
        port = gone.port
    monkeypatch.setenv("TL_ALLOW_HOSTS", f"127.0.0.1:{port}")
    e, took = refused(f"http://127.0.0.1:{port}/img/1.jpg", tmp_path / "x")
    assert str(e) == "the download failed: 127.0.0.1 refused or dropped the connection" and not e.final
    assert took < 5


@pytest.mark.parametrize("path, words", [
    ("/html-as-jpeg", "web page"),
    ("/bomb.png", "too many pixels"),
    ("/truncated.jpg", "truncated"),
    ("/empty.jpg", "empty"),
])
def test_what_passes_the_fetcher_is_refused_by_the_image_pipeline(allow, tmp_path, path, words):
    """The fetcher trusts a picture's Content-Type; the pipeline looks at the bytes."""
    got = run_fetch(allow.url(path), tmp_path / "x", max_bytes=SMALL)
    with pytest.raises(ImageRejected) as e:
        normalize(got.path)
    assert words in e.value.reason.lower()


# --- host names: the connection goes to the address that was checked ------------------------------

@pytest.fixture
def resolver(monkeypatch):
    """Make ``localhost`` resolve to the addresses a test chooses, one list per lookup."""
    answers: list[list[str]] = []
    calls: list[str] = []
    real = socket.getaddrinfo

    def fake(host, port, *args, **kw):
        if (host.decode() if isinstance(host, bytes) else host) != "localhost":  # httpcore asks with bytes
            return real(host, port, *args, **kw)
        calls.append(host)
        ips = answers[min(len(calls), len(answers)) - 1]
        if isinstance(ips, Exception):
            raise ips
        return [(socket.AF_INET6 if ":" in ip else socket.AF_INET, socket.SOCK_STREAM, 6, "",
                 (ip, port, 0, 0) if ":" in ip else (ip, port)) for ip in ips]

    monkeypatch.setattr(socket, "getaddrinfo", fake)
    return answers, calls


def test_the_fetcher_connects_to_the_address_it_checked(monkeypatch, server, tmp_path, resolver):
    """DNS rebinding: a second lookup would give another address; there must be no second lookup."""
    answers, calls = resolver
    answers += [["127.0.0.1"], ["127.0.0.3"]]  # 127.0.0.3:port is not allowed and nothing listens there
    monkeypatch.setenv("TL_ALLOW_HOSTS", server.hostport)
    got = run_fetch(f"http://localhost:{server.port}/img/3.jpg", tmp_path / "x")
    assert calls == ["localhost"]
    assert got.path.read_bytes() == badserver.image_bytes(3)
    assert ("/img/3.jpg", f"localhost:{server.port}") in server.log  # the Host header keeps the name


def test_a_name_passes_only_when_every_address_is_allowed(monkeypatch, server, tmp_path, resolver):
    """Allowed entries are addresses: a name is judged by all the addresses it resolves to."""
    answers, _ = resolver
    answers.append(["127.0.0.1", "::1"])
    monkeypatch.setenv("TL_ALLOW_HOSTS", server.hostport)
    e, _ = refused(f"http://localhost:{server.port}/img/3.jpg", tmp_path / "x")
    assert "this computer (::1)" in str(e)


def test_a_name_in_the_allow_list_is_ignored(monkeypatch, server, tmp_path, resolver):
    answers, _ = resolver
    answers.append(["127.0.0.1"])
    monkeypatch.setenv("TL_ALLOW_HOSTS", f"localhost:{server.port}")
    e, _ = refused(f"http://localhost:{server.port}/img/3.jpg", tmp_path / "x")
    assert "this computer (127.0.0.1)" in str(e)


def test_the_next_checked_address_is_tried_when_one_does_not_answer(monkeypatch, server, tmp_path, resolver):
    answers, _ = resolver
    answers.append(["127.0.0.3", "127.0.0.1"])  # nothing listens on 127.0.0.3
    monkeypatch.setenv("TL_ALLOW_HOSTS", f"127.0.0.3:{server.port},{server.hostport}")
    got = run_fetch(f"http://localhost:{server.port}/img/4.jpg", tmp_path / "x")
    assert got.path.read_bytes() == badserver.image_bytes(4)


def test_a_name_that_does_not_resolve_is_refused(tmp_path, resolver):
    answers, _ = resolver
    answers.append(socket.gaierror(socket.EAI_NONAME, "Name or service not known"))
    e, _ = refused("http://localhost:8080/cat.jpg", tmp_path / "x")
    # In words a person understands, without the resolver's own text.
    assert str(e) == "the site localhost could not be found (no internet connection, or the site is gone)"
    assert not e.final and "Name or service" not in str(e)
