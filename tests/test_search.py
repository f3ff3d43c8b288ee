"""Image search: parsing what ddgs returns, retries with backoff, the cache, the per-visitor limit.

No test reaches a search engine. Recorded result dicts have the shape ddgs 9.x
returns (every link points at loopback); the one test of the real ddgs
provider sends it through a proxy on a closed loopback port.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
from ddgs.exceptions import DDGSException, RatelimitException, TimeoutException

from tl_app import search as S
from tl_app.errors import SearchUnavailable, TLError

ROOT = Path(__file__).resolve().parent.parent

# What DDGS().images() returns, trimmed: strings for sizes, a page url, a CDN thumbnail.
DDGS_ROWS = [
    {"title": "Tabby cat sitting on a windowsill - Free Stock Photo", "image": "http://127.0.0.1:8001/photos/tabby.jpg",
     "thumbnail": "http://127.0.0.2:8002/th?id=OIP.3xq&pid=Api", "url": "http://127.0.0.1:8001/blog/tabby-cats",
     "height": "1080", "width": "1620", "source": "Bing"},
    {"title": "  Ginger kitten  ", "image": "https://127.0.0.1:8443/img/ginger.png?w=2000",
     "thumbnail": "https://127.0.0.2:8443/th?id=OIP.9f2", "url": "https://127.0.0.1:8443/kittens",
     "height": 768, "width": 1024, "source": "Bing"},
    # the full-size link is missing: the thumbnail stands in
    {"title": "Black cat", "thumbnail": "http://127.0.0.2:8002/th?id=OIP.b1", "url": "http://127.0.0.1:8001/black",
     "height": None, "width": "", "source": None},
    # a non-http full-size link: the thumbnail stands in
    {"title": "Cat in a box", "image": "data:image/jpeg;base64,/9j/4AAQSkZJRg==",
     "thumbnail": "http://127.0.0.2:8002/th?id=OIP.box", "url": "javascript:void(0)", "height": "abc", "width": "-3"},
    # duplicate of the first row (same image link): dropped
    {"title": "Tabby cat (again)", "image": "http://127.0.0.1:8001/photos/tabby.jpg",
     "thumbnail": "http://127.0.0.2:8002/th?id=OIP.other", "url": "http://127.0.0.1:8001/other"},
    # nothing downloadable: dropped
    {"title": "No links at all", "url": "http://127.0.0.1:8001/x"},
    {"title": "Only odd links", "image": "ftp://127.0.0.1/cat.jpg", "thumbnail": "file:///etc/passwd"},
    {"title": 42, "image": "http:///no-host.jpg", "thumbnail": None},
    # not dicts at all
    None, "http://127.0.0.1:8001/a-bare-string.jpg", ["a", "list"], 7,
    # odd types in fields
    {"title": ["not", "text"], "image": " http://127.0.0.1:8001/photos/spaces.jpg ", "thumbnail": 12,
     "url": 3.5, "height": "1080.0", "width": 640.7, "source": {"x": 1}, "license": "Share"},
]


def test_parse_results_keeps_usable_rows_and_tolerates_odd_fields():
    got = S.parse_results(DDGS_ROWS)
    assert [r.image for r in got] == [
        "http://127.0.0.1:8001/photos/tabby.jpg", "https://127.0.0.1:8443/img/ginger.png?w=2000",
        "http://127.0.0.2:8002/th?id=OIP.b1", "http://127.0.0.2:8002/th?id=OIP.box",
        "http://127.0.0.1:8001/photos/spaces.jpg"]
    tabby, ginger, black, box, spaces = got
    assert (tabby.title, tabby.page_url, tabby.width, tabby.height, tabby.source) == (
        "Tabby cat sitting on a windowsill - Free Stock Photo", "http://127.0.0.1:8001/blog/tabby-cats", 1620, 1080, "Bing")
    assert tabby.thumbnail == "http://127.0.0.2:8002/th?id=OIP.3xq&pid=Api"
    assert (ginger.title, ginger.width, ginger.height) == ("Ginger kitten", 1024, 768)
    assert black.thumbnail == black.image and black.width is None and black.height is None and black.source == ""
    assert box.page_url == "" and box.width is None and box.height is None
    assert (spaces.title, spaces.thumbnail, spaces.page_url, spaces.source) == ("", "", "", "")
    assert (spaces.width, spaces.height, spaces.license) == (640, 1080, "Share")


@pytest.mark.parametrize("raw", [None, {}, {"image": "http://127.0.0.1/x.jpg"}, "text", 3, []])
def test_parse_results_of_something_that_is_not_a_list_is_empty(raw):
    assert S.parse_results(raw) == []


def test_results_round_trip_through_dicts():
    r = S.parse_results(DDGS_ROWS)[0]
    assert S.SearchResult(**r.to_dict()) == r


def test_recorded_provider_replays_a_list_or_a_dict_per_query(tmp_path):
    p = S.RecordedProvider(DDGS_ROWS)
    assert p.images("cat", max_results=3, filters=S.SearchFilters()) == DDGS_ROWS[:3]
    per_query = S.RecordedProvider({"cat": DDGS_ROWS[:2], "dog": DDGS_ROWS[2:4]})
    assert per_query.images("dog", max_results=10, filters=S.SearchFilters()) == DDGS_ROWS[2:4]
    assert per_query.images("horse", max_results=10, filters=S.SearchFilters()) == []
    f = tmp_path / "results.json"
    f.write_text(json.dumps(DDGS_ROWS), encoding="utf-8")
    got = S.search_images("cat", provider=S.RecordedProvider.from_file(f), max_results=100)
    assert len(got) == 5


def test_search_validates_what_it_is_asked():
    p = S.RecordedProvider(DDGS_ROWS)
    for kw in ({"query": "  "}, {"query": "cat", "max_results": 0}, {"query": "cat", "max_results": 5000},
               {"query": "cat", "filters": S.SearchFilters(size="Huge")},
               {"query": "cat", "filters": S.SearchFilters(safesearch="maybe")}):
        with pytest.raises(TLError):
            S.search_images(provider=p, **kw)


# --- retries ------------------------------------------------------------------------------------

class Flaky:
    """A provider that raises the given errors first, then answers."""

    name = "flaky"
    backend = "duckduckgo"

    def __init__(self, errors, rows=DDGS_ROWS):
        self.errors = list(errors)
        self.rows = rows
        self.calls = 0

    def images(self, query, *, max_results, filters):
        self.calls += 1
        if self.errors:
            raise self.errors.pop(0)
        return self.rows


@pytest.mark.parametrize("error", [DDGSException("No results found."), TimeoutException("timed out"),
                                   RatelimitException("202 Ratelimit"), ConnectionError("refused")])
def test_refusals_are_retried_with_growing_jittered_waits(error):
    firsts = set()
    for _ in range(8):
        waits: list[float] = []
        p = Flaky([error, error])
        got = S.search_images("cat", provider=p, backoff=2.0, attempts=3, sleep=waits.append)
        assert len(got) == 5 and p.calls == 3
        assert len(waits) == 2
        assert 2.0 * 0.75 <= waits[0] <= 2.0 * 1.25 and 4.0 * 0.75 <= waits[1] <= 4.0 * 1.25
        assert waits[1] > waits[0]
        firsts.add(round(waits[0], 6))
    assert len(firsts) > 1, "the waits have no jitter"


def test_a_search_that_keeps_failing_says_what_to_do_instead():
    waits: list[float] = []
    p = Flaky([DDGSException("No results found.")] * 10)
    with pytest.raises(SearchUnavailable) as e:
        S.search_images("cat", provider=p, attempts=3, sleep=waits.append)
    msg = str(e.value)
    assert p.calls == 3 and len(waits) == 2
    assert "refused the search or could not be reached" in msg and "try again in a few minutes" in msg
    assert "duckduckgo" in msg and "No results found" not in msg  # the library's text stays in the log
    assert "upload" in msg and "import" in msg


#: What ddgs 9.16 raised on this machine without a connection (its resolver found no address; the
#: engine's name written as a loopback address here).
OFFLINE = DDGSException(DDGSException(
    "DNSError: DNSError('error sending request for url (https://127.0.0.1/?q=cat) > error resolving DNS > "
    "DNS error: no records found for Query { name: Name(\"127.0.0.1.\"), query_type: A, query_class: IN }')"))


def test_no_connection_is_said_plainly_at_once_without_retries():
    waits: list[float] = []
    p = Flaky([OFFLINE] * 10)
    with pytest.raises(SearchUnavailable) as e:
        S.search_images("cat", provider=p, attempts=3, sleep=waits.append)
    msg = str(e.value)
    assert msg.startswith("No internet connection: 127.0.0.1 could not be found.")
    assert "DNS" not in msg and "Query" not in msg and "try again in a few minutes" not in msg
    assert "upload" in msg and "import" in msg
    assert p.calls == 1 and waits == []  # asking again seconds later cannot help


def test_a_resolver_error_from_python_is_no_connection_too():
    p = Flaky([OSError(socket.gaierror(socket.EAI_NONAME, "Name or service not known"))])
    with pytest.raises(SearchUnavailable) as e:
        S.search_images("cat", provider=p, sleep=lambda s: None)
    assert str(e.value).startswith("No internet connection: duckduckgo.com could not be found.")


def test_retries_stay_within_the_deadline():
    waits: list[float] = []
    p = Flaky([TimeoutException("timed out")] * 10)
    with pytest.raises(SearchUnavailable):
        S.search_images("cat", provider=p, attempts=10, backoff=1.0, deadline=6.0, sleep=waits.append)
    assert sum(waits) <= 6.0
    assert p.calls == len(waits) + 1


def test_other_errors_are_not_retried():
    p = Flaky([ValueError("a bug")])
    with pytest.raises(ValueError):
        S.search_images("cat", provider=p, sleep=lambda s: None)
    assert p.calls == 1


# --- the real ddgs provider ---------------------------------------------------------------------

class FakeDDGS:
    seen: list[dict] = []

    def __init__(self, proxy=None, timeout=5):
        FakeDDGS.seen.append({"proxy": proxy, "timeout": timeout})

    def images(self, query, **kw):
        FakeDDGS.seen.append({"query": query, **kw})
        return DDGS_ROWS[:2]


def test_ddgs_provider_passes_filters_engine_and_proxy(monkeypatch):
    import ddgs

    FakeDDGS.seen = []
    monkeypatch.setattr(ddgs, "DDGS", FakeDDGS)
    monkeypatch.setenv("DDGS_PROXY", "http://127.0.0.1:9")
    p = S.DDGSProvider()
    got = S.search_images("cat", provider=p, max_results=20,
                          filters=S.SearchFilters(size="Large", type_image="photo", license_image="any"))
    assert len(got) == 2
    init, call = FakeDDGS.seen
    assert init == {"proxy": "http://127.0.0.1:9", "timeout": 10}
    assert call == {"query": "cat", "region": "us-en", "safesearch": "moderate", "max_results": 20,
                    "backend": "duckduckgo", "size": "Large", "type_image": "photo"}
    with pytest.raises(TLError):
        S.DDGSProvider("altavista")


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_the_real_provider_through_an_unreachable_proxy_is_unavailable():
    p = S.DDGSProvider(proxy=f"http://127.0.0.1:{_closed_port()}", timeout=5)
    t0 = time.monotonic()
    with pytest.raises(SearchUnavailable) as e:
        S.search_images("cat", provider=p, sleep=lambda s: None)
    assert time.monotonic() - t0 < 20
    assert "could not be reached through the proxy set in DDGS_PROXY" in str(e.value)
    assert "os error" not in str(e.value) and "ConnectError" not in str(e.value)


def test_cli_search_with_the_engine_unreachable_fails_with_one_line(tmp_path):
    """The real CLI and the real ddgs: the engine is only reachable through a proxy that is closed."""
    env = {k: v for k, v in os.environ.items() if k != "TL_ALLOW_HOSTS"}
    env.update(DDGS_PROXY=f"http://127.0.0.1:{_closed_port()}", PYTHONPATH=str(ROOT))
    t0 = time.monotonic()
    out = subprocess.run([sys.executable, "-m", "tl_app", "search", str(tmp_path / "proj"), "--label", "cat"],
                         capture_output=True, text=True, env=env, cwd=tmp_path, timeout=60)
    took = time.monotonic() - t0
    assert out.returncode != 0
    assert took < 30, f"took {took:.0f} s"
    assert "Traceback" not in out.stderr
    last = out.stderr.strip().splitlines()[-1]
    assert last.startswith("error: ") and "could not be reached" in last and "upload" in last
    assert out.stdout == ""


# --- cache --------------------------------------------------------------------------------------

def test_cache_answers_the_same_search_without_asking_again(project):
    cache = S.SearchCache(project)
    p = Flaky([])
    first = S.search_images("Cat", provider=p, max_results=50, cache=cache)
    again = S.search_images("  cat ", provider=p, max_results=50, cache=cache)
    assert again == first and p.calls == 1
    # another cache object on the same project (another process) sees it too
    assert S.search_images("cat", provider=p, max_results=50, cache=S.SearchCache(project)) == first
    assert p.calls == 1


@pytest.mark.parametrize("change", [
    {"query": "dog"}, {"max_results": 10}, {"filters": S.SearchFilters(size="Large")},
    {"filters": S.SearchFilters(safesearch="off")}, {"filters": S.SearchFilters(license_image="Public")},
])
def test_cache_misses_another_query_count_or_filter(project, change):
    cache = S.SearchCache(project)
    p = Flaky([])
    base = {"query": "cat", "max_results": 50, "filters": S.SearchFilters()}
    S.search_images(provider=p, cache=cache, **base)
    S.search_images(provider=p, cache=cache, **{**base, **change})
    assert p.calls == 2


def test_cache_keeps_neither_failures_nor_empty_answers_and_expires(project):
    cache = S.SearchCache(project)
    p = Flaky([DDGSException("No results found.")] * 3)
    with pytest.raises(SearchUnavailable):
        S.search_images("cat", provider=p, cache=cache, sleep=lambda s: None)
    empty = Flaky([], rows=[])
    assert S.search_images("cat", provider=empty, cache=cache) == []
    assert len(S.search_images("cat", provider=Flaky([]), cache=cache)) == 5  # asked again, not cached
    expired = S.SearchCache(project, ttl_seconds=-1)
    p2 = Flaky([])
    S.search_images("cat", provider=p2, cache=expired)
    assert p2.calls == 1


# --- per-visitor limit --------------------------------------------------------------------------------

def test_rate_limiter_counts_per_visitor_within_a_window():
    rl = S.RateLimiter(limit=3, window=600)
    for t in (0, 1, 2):
        rl.check("alice", now=t)
    with pytest.raises(SearchUnavailable) as e:
        rl.check("alice", now=100)
    assert "3 searches per visitor every 10 minutes" in str(e.value)
    assert "try again in 501 s" in str(e.value) and "upload" in str(e.value)
    rl.check("bob", now=100)           # another visitor is not affected
    rl.check("alice", now=601)         # the first search left the window
    with pytest.raises(SearchUnavailable):
        rl.check("alice", now=601)     # the second has not


def test_rate_limiter_names_short_windows_in_seconds():
    rl = S.RateLimiter(limit=1, window=30)
    rl.check("a", now=0)
    with pytest.raises(SearchUnavailable) as e:
        rl.check("a", now=10)
    assert "every 30 seconds" in str(e.value)


def test_refused_searches_do_not_push_the_next_allowed_one_further_away():
    rl = S.RateLimiter(limit=2, window=60)
    rl.check("a", now=0)
    rl.check("a", now=1)
    for t in (2, 3, 30):
        with pytest.raises(SearchUnavailable):
            rl.check("a", now=t)
    rl.check("a", now=60.5)
    with pytest.raises(SearchUnavailable):
        rl.check("a", now=60.5)
