"""Searching and downloading several classes at once: the core under the web search UI.

"centipede, millipede = millipede insect, spider" becomes classes with their
queries; each class is searched in turn (a refusal ends the round, a cached
answer is not counted against a visitor's limit); the chosen results are
downloaded class after class, and a stop leaves the later classes alone.
"""

from __future__ import annotations

import pytest
from ddgs.exceptions import DDGSException

import badserver
from tl_app import search as S
from tl_app.download import ClassDownload, download_classes, tasks_from_urls
from tl_app.errors import InvalidLabel, SearchUnavailable, TLError
from tl_app.jobs import StopToken


# --- "class = query" lists --------------------------------------------------------------------
def test_classes_are_separated_by_commas_or_lines_and_may_carry_their_own_words():
    got = S.parse_class_queries("centipede, millipede =  millipede   insect ,spider\nwood louse\r\n\n, ,")
    assert got == [S.ClassQuery("centipede", "centipede"), S.ClassQuery("millipede", "millipede insect"),
                   S.ClassQuery("spider", "spider"), S.ClassQuery("wood louse", "wood louse")]


def test_a_class_named_twice_is_searched_once_and_an_empty_query_means_the_name():
    assert S.parse_class_queries("Cat, dog =, cat = kitten, DOG") == [S.ClassQuery("Cat", "Cat"),
                                                                       S.ClassQuery("dog", "dog")]


@pytest.mark.parametrize("text, words", [
    ("", "Type the classes"), (" , \n ", "Type the classes"),
    ("cats, a/b", "'/'"), ("= spiders", "cannot be empty"), ("ok, ../up = x", "in '../up = x'"),
    ("con", "reserved"),
])
def test_bad_lists_are_refused_with_a_message_that_names_the_problem(text, words):
    with pytest.raises(TLError) as e:
        S.parse_class_queries(text)
    assert words in str(e.value)


def test_too_many_classes_or_too_long_words_are_refused():
    with pytest.raises(TLError, match="at most 3"):
        S.parse_class_queries("a, b, c, d", max_classes=3)
    assert len(S.parse_class_queries(", ".join(f"c{i}" for i in range(S.MAX_CLASSES)))) == S.MAX_CLASSES
    with pytest.raises(TLError, match="too long"):
        S.parse_class_queries("cat = " + "x" * (S.MAX_QUERY_LEN + 1))
    with pytest.raises(InvalidLabel):
        S.parse_class_queries("x" * 100)


# --- filters from a form ---------------------------------------------------------------------------
def test_any_or_nothing_in_a_form_means_no_filter():
    f = S.SearchFilters.from_choices(size="any", type_image="photo", layout="", license_image=None,
                                     safesearch="off")
    assert f == S.SearchFilters(size=None, type_image="photo", layout=None, license_image=None, safesearch="off")
    assert S.SearchFilters.from_choices().safesearch == "moderate"
    with pytest.raises(TLError, match="not a size filter"):
        S.SearchFilters.from_choices(size="Huge")


# --- several searches -------------------------------------------------------------------------------
def _rows(tag: str, n: int = 3) -> list[dict]:
    return [{"title": f"{tag} {i}", "image": f"http://127.0.0.1:9/{tag}/{i}.jpg"} for i in range(n)]


class Counting:
    """Recorded answers per query, refusing the queries in ``refuse``; counts what it is asked."""

    name = "counting"
    backend = "duckduckgo"

    def __init__(self, answers: dict, refuse=()):
        self.answers, self.refuse, self.asked = answers, set(refuse), []

    def images(self, query, *, max_results, filters):
        self.asked.append(query)
        if query in self.refuse:
            raise DDGSException("No results found.")
        return self.answers.get(query, [])[:max_results]


def test_the_gate_is_asked_before_the_engine_and_never_for_a_cached_answer(project):
    p = Counting({"cat": _rows("cat")})
    cache = S.SearchCache(project)
    gate = []
    assert len(S.search_images("cat", provider=p, cache=cache, before_asking=lambda: gate.append(1))) == 3
    assert len(S.search_images("cat", provider=p, cache=cache, before_asking=lambda: gate.append(1))) == 3
    assert gate == [1] and p.asked == ["cat"]

    def refuse():
        raise SearchUnavailable("slow down")

    with pytest.raises(SearchUnavailable, match="slow down"):
        S.search_images("dog", provider=p, cache=cache, before_asking=refuse)
    assert p.asked == ["cat"]


def test_each_class_is_searched_with_its_query_and_cached_answers_are_marked(project):
    p = Counting({"centipede": _rows("c", 4), "millipede insect": _rows("m", 2)})
    queries = S.parse_class_queries("centipede, millipede = millipede insect, spider")
    cache = S.SearchCache(project)
    first = S.search_classes(queries, provider=p, max_results=10, cache=cache)
    assert [(c.label, c.query, len(c.results), c.cached) for c in first.found] == [
        ("centipede", "centipede", 4, False), ("millipede", "millipede insect", 2, False),
        ("spider", "spider", 0, False)]
    assert first.refused == "" and first.not_searched == []
    again = S.search_classes(queries, provider=p, max_results=10, cache=cache)
    # Empty answers are not cached (they may be a soft block), so only spider is asked again.
    assert [c.cached for c in again.found] == [True, True, False]
    assert p.asked == ["centipede", "millipede insect", "spider", "spider"]


def test_a_refusal_ends_the_round_and_says_which_classes_were_not_searched():
    p = Counting({"ant": _rows("a"), "wasp": _rows("w")}, refuse={"bee"})
    got = S.search_classes(S.parse_class_queries("ant, bee, wasp"), provider=p, sleep=lambda s: None)
    assert [c.label for c in got.found] == ["ant"]
    assert [q.label for q in got.not_searched] == ["bee", "wasp"]
    assert "refused the search or could not be reached" in got.refused and "upload" in got.refused
    assert p.asked == ["ant", "bee", "bee", "bee"]  # retried, and wasp never asked


def test_a_visitor_limit_counts_only_searches_that_reach_the_engine(project):
    p = Counting({q: _rows(q) for q in "abcd"})
    limiter = S.RateLimiter(limit=2, window=600)
    cache = S.SearchCache(project)

    def run(text, who="me"):
        return S.search_classes(S.parse_class_queries(text), provider=p, cache=cache,
                                before_asking=lambda: limiter.check(who))

    assert run("a, b").refused == ""
    assert run("a, b").refused == ""  # both from the cache
    third = run("a, c, d")
    assert [c.label for c in third.found] == ["a"] and [q.label for q in third.not_searched] == ["c", "d"]
    assert "2 searches per visitor" in third.refused
    assert run("c", who="someone else").refused == ""
    assert p.asked == ["a", "b", "c"]


# --- several downloads ---------------------------------------------------------------------------------
@pytest.fixture
def server(monkeypatch):
    with badserver.start() as s:
        monkeypatch.setenv("TL_ALLOW_HOSTS", s.hostport)
        yield s


def test_classes_are_downloaded_in_turn_with_progress_per_class(server, project):
    jobs = [ClassDownload("ant", tasks_from_urls(server.url(f"/img/{i}.jpg") for i in range(3))),
            ClassDownload("bee", tasks_from_urls([server.url("/img/10.jpg"), server.url("/status/404")]))]
    seen = []
    rep = download_classes(project, jobs, progress=lambda label, p: seen.append((label, p.done, p.total)))
    assert list(rep.reports) == ["ant", "bee"] and not rep.stopped and rep.error == ""
    assert rep.reports["ant"].imported == 3 and rep.reports["bee"].imported == 1
    assert [r["url"] for r in rep.reports["bee"].rejected] == [server.url("/status/404")]
    assert ("ant", 3, 3) in seen and ("bee", 2, 2) in seen
    assert seen.index(("ant", 3, 3)) < seen.index(("bee", 0, 2))
    assert project.label_counts() == {"ant": 3, "bee": 1}


def test_a_stop_ends_the_current_class_and_leaves_the_later_ones_alone(project, monkeypatch):
    with badserver.start(latency=0.2) as slow:
        monkeypatch.setenv("TL_ALLOW_HOSTS", slow.hostport)
        stop = StopToken()
        jobs = [ClassDownload("ant", tasks_from_urls(slow.url(f"/img/{i}.jpg") for i in range(40))),
                ClassDownload("bee", tasks_from_urls(slow.url(f"/img/{i}.jpg") for i in range(50, 60)))]

        def progress(label, p):
            if p.done >= 2:
                stop.set()

        rep = download_classes(project, jobs, progress=progress, stop=stop, total_timeout=5)
    assert rep.stopped and list(rep.reports) == ["ant"] and rep.reports["ant"].stopped
    assert 2 <= rep.reports["ant"].imported < 40
    assert "bee" not in project.labels() or project.label_counts()["bee"] == 0


def test_a_stop_after_the_last_link_is_not_reported_as_cut_short(server, project):
    stop = StopToken()
    jobs = [ClassDownload("ant", tasks_from_urls([server.url("/img/30.jpg")]))]

    def progress(label, p):
        if p.done == p.total == 1:
            stop.set()

    rep = download_classes(project, jobs, progress=progress, stop=stop)
    assert rep.reports["ant"].imported == 1 and not rep.reports["ant"].stopped and not rep.stopped
