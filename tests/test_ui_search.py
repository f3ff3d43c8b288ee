"""The web search of tab 1, driven over HTTP with gradio_client as another program would.

The app runs in this process (``e2e/harness.py``) and answers searches with
recorded results whose links point at a loopback bad server (``badserver.py``),
let through the fetcher's guard for that host:port only. Nothing is mocked
below the search provider: the real downloader, fetcher and image pipeline run.
"""

from __future__ import annotations

import socket

import pytest
from gradio_client import Client
from gradio_client.exceptions import AppError

import badserver
from e2e.harness import serve, wait_until
from tl_app.search import RateLimiter, RecordedProvider

# What the search endpoint returns, in order (the results themselves stay in the session's State).
SEARCH_OUT = ("selected", "preview", "status", "selection", "target")
# What the download endpoints return, in order (the refusals' accordion is not part of the API).
DOWNLOAD_OUT = ("progress", "status", "refusals", "classes", "target", "browse_class", "browse_gallery",
                "browse_selected", "browse_note", "manage_pick", "move_to")


def _client(url: str) -> Client:
    return Client(url, verbose=False, download_files=False)


def _named(out, names) -> dict:
    return dict(zip(names, out, strict=True))


def _counts(table: dict) -> dict[str, int]:
    return {row[0]: int(row[1]) for row in table["data"]}


def _error(call) -> str:
    with pytest.raises(AppError) as ei:
        call()
    return str(ei.value)


def _row(srv, path: str, title: str, thumb: str | None = None) -> dict:
    row = {"title": title, "image": srv.url(path), "url": srv.url("/pages/" + title.replace(" ", "-"))}
    if thumb:
        row["thumbnail"] = srv.url(thumb)
    return row


#: Links a person would find and the words the reason for refusing each must contain.
BAD = {"/status/404": "HTTP 404", "/html-as-jpeg": "web page", "/bomb.png": "too many pixels",
       "/truncated.jpg": "truncated"}


def recorded(srv) -> dict[str, list[dict]]:
    """Results for three classes: good pictures, a duplicate pair, placeholders, bad links, an SVG preview."""
    centipede = [_row(srv, f"/img/{i}.jpg", f"centipede {i}", f"/thumb/{i}.jpg") for i in range(5)]
    centipede += [_row(srv, "/status/404", "gone"), _row(srv, "/html-as-jpeg", "a web page")]
    centipede += [_row(srv, "/dup/a.jpg", "copy a"), _row(srv, "/dup/b.jpg", "copy b")]
    millipede = [_row(srv, f"/img/{i}.png", f"millipede {i}") for i in range(100, 104)]
    millipede += [_row(srv, f"/placeholder/{i}.jpg", f"removed {i}") for i in range(3)]
    millipede += [_row(srv, "/bomb.png", "huge")]
    spider = [_row(srv, f"/img/{i}.jpg", f"spider {i}", f"/thumb/{i}.jpg") for i in range(200, 203)]
    # A full-size link that fails, with a thumbnail that works; and a preview link Gradio would fetch
    # itself if it were given as is (".svg").
    spider += [_row(srv, "/status/404?s", "thumb only", "/thumb/203.jpg"),
               _row(srv, "/truncated.jpg", "cut", "/thumb/icon.svg")]
    return {"centipede": centipede, "millipede insect": millipede, "spider": spider}


@pytest.fixture(scope="module")
def pictures():
    with badserver.start() as s:
        yield s


@pytest.fixture
def app(tmp_path, pictures, monkeypatch):
    monkeypatch.setenv("TL_ALLOW_HOSTS", pictures.hostport)
    with serve(tmp_path / "proj") as srv:
        srv.demo.tl_context.search_provider = RecordedProvider(recorded(pictures))
        yield srv


def _search(c: Client, classes: str, **kw) -> dict:
    out = _named(c.predict(classes=classes, **kw, api_name="/search_web"), SEARCH_OUT)
    # The preview comes as an update: shown with what was found, hidden when nothing was.
    assert out["preview"]["visible"] is bool(out["preview"]["value"]), out["preview"]
    out["preview"] = out["preview"]["value"]
    return out


def test_three_classes_are_previewed_then_downloaded_with_every_refusal_explained(app, pictures):
    c = _client(app.url)
    before = len(pictures.log)
    out = _search(c, "centipede, millipede = millipede insect, spider")
    assert "**centipede**: 9 pictures found" in out["status"]
    assert "**millipede**: 8 pictures found for “millipede insect”" in out["status"]
    assert "**spider**: 5 pictures found" in out["status"]
    assert out["selected"] == "" and "22 pictures found" in out["selection"]
    preview = out["preview"]
    assert len(preview) == 22
    assert [g["caption"].split(" · ")[0] for g in preview] == ["☐ centipede"] * 9 + ["☐ millipede"] * 8 + [
        "☐ spider"] * 5
    assert preview[0]["caption"] == "☐ centipede · centipede 0"
    # The browser loads the previews (thumbnails where there are some); the server fetched none.
    assert preview[0]["image"]["url"] == pictures.url("/thumb/0.jpg") + "#preview"
    assert preview[9]["image"]["url"] == pictures.url("/img/100.png") + "#preview"
    assert preview[-1]["image"]["url"] == pictures.url("/thumb/icon.svg") + "#preview"
    assert len(pictures.log) == before
    assert app.project.labels() == []  # nothing is created before something is downloaded

    out = _named(c.predict(api_name="/download_all"), DOWNLOAD_OUT)
    status = out["status"]
    assert status.startswith("**Download finished.**"), status
    assert "- **centipede**: 6 downloaded, 1 duplicate skipped, 2 refused; the class has 6 pictures now" in status
    assert ("- **millipede**: 4 downloaded, 4 refused (3 of them 'photo unavailable' placeholders); "
            "the class has 4 pictures now") in status
    assert "- **spider**: 4 downloaded, 1 refused; the class has 4 pictures now" in status
    assert _counts(out["classes"]) == {"centipede": 6, "millipede": 4, "spider": 4}
    assert app.project.label_counts() == {"centipede": 6, "millipede": 4, "spider": 4}
    refused = {row[1]: (row[0], row[2]) for row in out["refusals"]["data"]}
    placeholders = {pictures.url(f"/placeholder/{i}.jpg") for i in range(3)}
    assert set(refused) == {pictures.url(p) for p in BAD} | placeholders
    assert all("'photo unavailable' placeholder" in refused[u][1] for u in placeholders)
    for path, words in BAD.items():
        assert words in refused[pictures.url(path)][1], refused[pictures.url(path)]
    assert refused[pictures.url("/truncated.jpg")][0] == "spider"
    assert "thumbnail too" in refused[pictures.url("/truncated.jpg")][1]  # the .svg preview is no picture either
    # The picture came from its thumbnail when the full-size link failed; provenance is kept.
    items = {it.source: it for it in app.project.items(label="spider")}
    thumb = items[pictures.url("/thumb/203.jpg")]
    assert thumb.meta["original_url"] == pictures.url("/status/404?s") and thumb.meta["title"] == "thumb only"
    assert items[pictures.url("/img/200.jpg")].meta["query"] == "spider"
    assert {it.meta["query"] for it in app.project.items(label="millipede")} == {"millipede insect"}
    # The first class is shown below, with what just arrived.
    assert out["browse_class"]["value"] == "centipede" and len(out["browse_gallery"]) == 6
    # Captioned by the name the picture had on the web, never by an item id; none selected yet.
    names = {it.id: it.source.rsplit("/", 1)[-1] for it in app.project.items(label="centipede")}
    assert {g["caption"] for g in out["browse_gallery"]} == {f"☐ {n}" for n in names.values()}
    assert not any(i in g["caption"] for g in out["browse_gallery"] for i in names)
    assert out["browse_selected"] == "" and "Click pictures to select them" in out["browse_note"]
    assert app.demo.tl_context.downloads == {}

    # Again: every link was settled, so nothing is fetched twice and nothing changes.
    asked = len(pictures.log)
    again = _named(c.predict(api_name="/download_all"), DOWNLOAD_OUT)
    assert "- **centipede**: 0 downloaded, 9 already fetched before" in again["status"]
    assert "- **spider**: 0 downloaded, 5 already fetched before" in again["status"]
    assert again["refusals"]["data"] == []
    assert len(pictures.log) == asked
    assert app.project.label_counts() == {"centipede": 6, "millipede": 4, "spider": 4}

    # The same search again comes from the project's cache.
    out = _search(c, "centipede, millipede = millipede insect, spider")
    assert out["status"].count("from this project's saved searches") == 3


def test_download_selected_fetches_only_the_chosen_pictures(app, pictures):
    c = _client(app.url)
    assert "Search first" in _error(lambda: c.predict("0", api_name="/download_selected"))
    out = _search(c, "centipede, spider")
    assert len(out["preview"]) == 14
    assert "Click the pictures you want first" in _error(lambda: c.predict("", api_name="/download_selected"))
    assert "'14' is not a result number" in _error(lambda: c.predict("3, 14", api_name="/download_selected"))
    assert "'-1' is not" in _error(lambda: c.predict("-1", api_name="/download_selected"))

    out = _named(c.predict("1, 3,10", api_name="/download_selected"), DOWNLOAD_OUT)
    assert "- **centipede**: 2 downloaded; the class has 2 pictures now" in out["status"]
    assert "- **spider**: 1 downloaded; the class has 1 picture now" in out["status"]
    assert {it.source for it in app.project.items()} == {pictures.url(p) for p in (
        "/img/1.jpg", "/img/3.jpg", "/img/201.jpg")}
    assert app.project.labels() == ["centipede", "spider"]

    # Download all afterwards skips the three already fetched.
    out = _named(c.predict(api_name="/download_all"), DOWNLOAD_OUT)
    assert "- **centipede**: 4 downloaded, 1 duplicate skipped, 2 already fetched before, 2 refused" in out["status"]


def test_another_visitor_has_their_own_results(app):
    me, other = _client(app.url), _client(app.url)
    _search(me, "centipede")
    assert "Search first" in _error(lambda: other.predict(api_name="/download_all"))
    assert app.project.labels() == []


def test_bad_class_lists_are_refused_plainly(app):
    c = _client(app.url)
    msg = _error(lambda: _search(c, "centipede, a/b"))
    assert "'/'" in msg and "went wrong" not in msg
    assert "Type the classes" in _error(lambda: _search(c, " , "))
    assert "Huge is not in the list of choices" in _error(lambda: _search(c, "ant", size="Huge"))
    assert "300" in _error(lambda: _search(c, "ant", per_class=1000))  # the slider's bounds hold over the API
    assert app.project.labels() == []


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_an_unreachable_engine_is_explained_and_upload_is_offered(tmp_path, monkeypatch):
    """The real ddgs provider, reachable only through a proxy (DDGS_PROXY) that is closed."""
    monkeypatch.setenv("DDGS_PROXY", f"http://127.0.0.1:{_closed_port()}")
    with serve(tmp_path / "proj") as srv:
        c = _client(srv.url)
        out = _search(c, "centipede, millipede, spider")
        status = out["status"]
        # The closed proxy's refusal, in words: DDGS_PROXY was used, and no library text is shown.
        assert "The image search engine (duckduckgo) could not be reached through the proxy set in DDGS_PROXY" in status
        assert "os error" not in status and "ConnectError" not in status
        assert "upload" in status and "import" in status
        assert "Not searched: centipede, millipede, spider" in status
        assert "The upload area below is set to 'centipede'" in status
        assert out["target"]["value"] == "centipede"
        assert out["preview"] == [] and out["selection"] == ""
        assert "Search first" in _error(lambda: c.predict(api_name="/download_all"))


def test_a_shared_app_limits_searches_per_visitor_by_the_address_the_proxy_reports(tmp_path, pictures, monkeypatch):
    """Behind a Space's proxy every request comes from the proxy: the visitor is its X-Forwarded-For address.

    A new session (a new client, a reloaded page) from the same address brings no fresh allowance;
    another address has its own. The proxy appends the address it saw, so a value the visitor puts
    in front of it changes nothing.
    """
    monkeypatch.setenv("TL_ALLOW_HOSTS", pictures.hostport)
    with serve(tmp_path / "proj", shared=True, auth=[("ann", "pw-ann")], behind_proxy=True) as srv:
        ctx = srv.demo.tl_context
        assert isinstance(ctx.search_limiter, RateLimiter)  # a shared app has one by default
        ctx.search_provider = RecordedProvider(recorded(pictures))
        ctx.search_limiter = RateLimiter(limit=2, window=600)

        def client(forwarded: str) -> Client:
            return Client(srv.url, verbose=False, download_files=False, auth=("ann", "pw-ann"),
                          headers={"X-Forwarded-For": forwarded})

        me = client("203.0.113.5")
        assert "Not searched" not in _search(me, "centipede, spider")["status"]
        assert "Not searched" not in _search(me, "spider")["status"]  # from the cache: not counted
        again = client("198.51.100.99, 203.0.113.5")  # a fresh session, and a made-up address in front
        out = _search(again, "centipede, millipede = millipede insect")
        assert "**centipede**: 9 pictures found" in out["status"]
        assert "This shared app allows 2 searches per visitor every 10 minutes" in out["status"]
        assert "upload" in out["status"] and "Not searched: millipede" in out["status"]
        assert len(out["preview"]) == 9  # what was found is still on offer
        other = client("198.51.100.7")
        assert "**millipede**: 8 pictures found" in _search(other, "millipede = millipede insect")["status"]


def test_stop_ends_a_slow_download_and_says_so(tmp_path, pictures, monkeypatch):
    """Links that send one byte a second: without a working Stop this would last the fetcher's 20 s cap."""
    monkeypatch.setenv("TL_ALLOW_HOSTS", pictures.hostport)
    # The quick one first: at most 4 links of one host are fetched at once.
    slow = {"ant": [_row(pictures, "/img/300.jpg", "quick")]
            + [_row(pictures, f"/slow?{i}", f"slow {i}") for i in range(6)]}
    with serve(tmp_path / "proj") as srv:
        ctx = srv.demo.tl_context
        ctx.search_provider = RecordedProvider(slow)
        me, other = _client(srv.url), _client(srv.url)
        _search(me, "ant")
        assert other.predict(api_name="/stop_download") == "Nothing is downloading."
        job = me.submit(api_name="/download_all")
        # Running: the progress table is on show and the quick picture has arrived.
        assert wait_until(lambda: ctx.downloads and len(srv.project.items()) == 1, timeout=30), job.status()
        assert wait_until(lambda: job.outputs(), timeout=30)
        assert "**Downloading…**" in job.outputs()[-1][1] and "| ant |" in job.outputs()[-1][1]
        # Another visitor's Stop does not touch it.
        assert other.predict(api_name="/stop_download") == "Nothing is downloading."
        assert not job.done()

        assert me.predict(api_name="/stop_download") == "**Stopping…**"
        out = _named(job.result(timeout=15), DOWNLOAD_OUT)
        assert out["status"].startswith("**Download stopped.**"), out["status"]
        assert "- **ant**: 1 downloaded, stopped" in out["status"]
        assert out["refusals"]["data"] == []  # links cut short are not refusals: they are tried again
        assert ctx.downloads == {}
        assert me.predict(api_name="/stop_download") == "Nothing is downloading."
        assert list(srv.project.tmp_dir.iterdir()) == []
        assert srv.project.label_counts() == {"ant": 1}


class _Offline:
    """The engine as ddgs 9.16 reached it on this machine without a connection (the text it raised)."""

    name, backend = "ddgs:duckduckgo", "duckduckgo"

    def images(self, query, **kw):
        from ddgs.exceptions import DDGSException

        raise DDGSException(DDGSException(
            "DNSError: DNSError('error sending request for url (https://127.0.0.1/?q=ant) > error resolving "
            "DNS > DNS error: no records found for Query { name: Name(\"127.0.0.1.\"), query_type: A }')"))


def test_offline_the_search_and_the_download_say_there_is_no_internet_connection(tmp_path, monkeypatch):
    # No name resolves (as on a machine without a connection); loopback addresses still work.
    real = socket.getaddrinfo

    def no_dns(host, *args, **kw):
        name = host.decode() if isinstance(host, bytes) else host
        try:
            import ipaddress

            ipaddress.ip_address(name)
        except ValueError:  # every name, even localhost: the links below name this machine and are not found
            raise socket.gaierror(socket.EAI_NONAME, "Name or service not known") from None
        return real(host, *args, **kw)

    monkeypatch.setattr(socket, "getaddrinfo", no_dns)
    with serve(tmp_path / "proj") as srv:
        ctx = srv.demo.tl_context
        c = _client(srv.url)
        ctx.search_provider = _Offline()
        status = _search(c, "ant, bee")["status"]
        assert status.startswith("No internet connection: 127.0.0.1 could not be found.")
        assert "DNS" not in status and "try again in a few minutes" not in status
        assert "Not searched: ant, bee" in status

        # Results found earlier (say, from the project's saved searches), downloaded without a connection.
        # Links to this machine by name, which the resolver above cannot find: no traffic leaves it.
        links = ["http://localhost:1/a.jpg", "http://localhost:2/a.jpg", "http://localhost:3/a.jpg"]
        ctx.search_provider = RecordedProvider({"ant": [{"title": f"ant {i}", "image": u} for i, u in enumerate(links)]})
        _search(c, "ant")
        out = _named(c.predict(api_name="/download_all"), DOWNLOAD_OUT)
        assert out["status"].startswith("**No internet connection:** none of the sites could be found.")
        reasons = [row[2] for row in out["refusals"]["data"]]
        assert reasons == ["the site localhost could not be found (no internet connection, or the site is gone)"] * 3
        assert "Name or service" not in out["status"] + str(reasons)


def test_the_app_takes_a_search_provider_and_otherwise_asks_ddgs_with_the_chosen_engine(tmp_path):
    from tl_app.search import DDGSProvider
    from tl_app.ui.app import build_demo

    recorded_provider = RecordedProvider([])
    ctx = build_demo(tmp_path / "a", search_provider=recorded_provider).tl_context
    assert ctx.provider_for("bing") is recorded_provider and ctx.search_limiter is None
    ctx = build_demo(tmp_path / "b").tl_context
    assert isinstance(ctx.provider_for("bing"), DDGSProvider) and ctx.provider_for("bing").backend == "bing"
    assert ctx.provider_for("").backend == "duckduckgo"


def test_visitors_are_told_apart_by_their_address_never_by_a_session():
    from types import SimpleNamespace

    from tl_app.access import Access
    from tl_app.ui.adapters import visitor_id

    def request(host, session="abc", forwarded=None):
        headers = [(b"x-forwarded-for", forwarded.encode())] if forwarded else []
        scope = {"type": "http", "client": (host, 5000), "headers": headers}
        return SimpleNamespace(request=SimpleNamespace(scope=scope), session_hash=session, username=None)

    assert visitor_id(request("8.8.8.8")) == visitor_id(request("8.8.8.8", "another page load")) == "ip:8.8.8.8"
    # A private or loopback address is an address too: a new page brings no new allowance.
    assert visitor_id(request("10.0.3.7")) == visitor_id(request("10.0.3.7", "xyz")) == "ip:10.0.3.7"
    # X-Forwarded-For is believed only behind a trusted proxy, and then its right-most public address.
    assert visitor_id(request("10.0.3.7", forwarded="1.2.3.4")) == "ip:10.0.3.7"
    proxy = Access(shared=True, behind_proxy=True)
    assert visitor_id(request("10.0.3.7", forwarded="1.2.3.4", session="a"), proxy) == "ip:1.2.3.4"
    assert visitor_id(request("10.0.3.7", forwarded="9.9.9.9, 1.2.3.4, 10.0.0.2"), proxy) == "ip:1.2.3.4"
    assert visitor_id(SimpleNamespace(session_hash="abc", username=None)) == "session:abc"
