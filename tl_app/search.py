"""Image search providers behind one small interface, with retries, a cache and a per-visitor limit.

A provider turns a query into raw result dicts (the shape ``ddgs`` returns:
``image``, ``thumbnail``, ``url``, ``title``, ``width``, ``height``,
``source``); :func:`search_images` parses them into :class:`SearchResult`,
retries refusals with backoff and jitter within a deadline, and caches results
per query and filters in the project.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import random
import time
from dataclasses import asdict, dataclass, field
from typing import Callable, Optional, Protocol
from urllib.parse import urlsplit

from . import network
from .access import Allowance
from .errors import InputError, InvalidLabel, LimitReached, SearchUnavailable, TLError

log = logging.getLogger("tl_app.search")

SIZES = ("Small", "Medium", "Large", "Wallpaper")
TYPES = ("photo", "clipart", "gif", "transparent", "line")
LAYOUTS = ("Square", "Tall", "Wide")
LICENSES = ("any", "Public", "Share", "ShareCommercially", "Modify", "ModifyCommercially")
SAFESEARCH = ("on", "moderate", "off")
BACKENDS = ("duckduckgo", "bing", "auto")
#: What a form sends for "no filter".
ANY = "any"
#: Most classes one search may name at once, and the longest query.
MAX_CLASSES = 20
MAX_QUERY_LEN = 200


@dataclass(frozen=True)
class SearchFilters:
    """Filters the search engine applies (None: no filter)."""

    size: Optional[str] = None
    type_image: Optional[str] = None
    layout: Optional[str] = None
    license_image: Optional[str] = None
    safesearch: str = "moderate"

    def validate(self) -> "SearchFilters":
        for name, allowed in (("size", SIZES), ("type_image", TYPES), ("layout", LAYOUTS),
                              ("license_image", LICENSES)):
            v = getattr(self, name)
            if v is not None and v not in allowed:
                raise InputError(f"'{v}' is not a {name.replace('_image', '')} filter; choose one of {', '.join(allowed)}.")
        if self.safesearch not in SAFESEARCH:
            raise InputError(f"Safe search must be one of {', '.join(SAFESEARCH)}.")
        return self

    @classmethod
    def from_choices(cls, *, size: Optional[str] = None, type_image: Optional[str] = None,
                     layout: Optional[str] = None, license_image: Optional[str] = None,
                     safesearch: Optional[str] = None) -> "SearchFilters":
        """Validated filters from a form, where ``"any"`` or nothing means "no filter"."""
        def pick(v):
            return None if v in (None, "", ANY) else v

        return cls(size=pick(size), type_image=pick(type_image), layout=pick(layout),
                   license_image=pick(license_image), safesearch=safesearch or "moderate").validate()


@dataclass
class SearchResult:
    """One found picture: its full-size link, a thumbnail link, and where it came from."""

    image: str
    thumbnail: str = ""
    title: str = ""
    page_url: str = ""
    width: Optional[int] = None
    height: Optional[int] = None
    source: str = ""
    license: str = ""

    def to_dict(self) -> dict:
        return asdict(self)


class SearchProvider(Protocol):
    """Anything that can turn a query into raw result dicts."""

    name: str

    def images(self, query: str, *, max_results: int, filters: SearchFilters) -> list[dict]: ...


class DDGSProvider:
    """DuckDuckGo (or another engine) through the ``ddgs`` package; honours ``DDGS_PROXY``."""

    def __init__(self, backend: str = "duckduckgo", *, timeout: int = 10, region: str = "us-en",
                 proxy: Optional[str] = None):
        if backend not in BACKENDS:
            raise InputError(f"Unknown search engine '{backend}'; choose one of {', '.join(BACKENDS)}.")
        self.backend = backend
        self.name = f"ddgs:{backend}"
        self.timeout = timeout
        self.region = region
        self.proxy = proxy or os.environ.get("DDGS_PROXY") or None

    def images(self, query: str, *, max_results: int, filters: SearchFilters) -> list[dict]:
        from ddgs import DDGS

        kw = {k: v for k, v in (("size", filters.size), ("type_image", filters.type_image),
                                ("layout", filters.layout),
                                ("license_image", None if filters.license_image in (None, "any") else filters.license_image))
              if v}
        return DDGS(proxy=self.proxy, timeout=self.timeout).images(
            query, region=self.region, safesearch=filters.safesearch, max_results=max_results,
            backend=self.backend, **kw)


class RecordedProvider:
    """Results saved earlier (a list of result dicts), for replaying a search offline."""

    name = "recorded"

    def __init__(self, results: list[dict] | dict[str, list[dict]]):
        self.results = results

    @classmethod
    def from_file(cls, path) -> "RecordedProvider":
        with open(path, encoding="utf-8") as f:
            return cls(json.load(f))

    def images(self, query: str, *, max_results: int, filters: SearchFilters) -> list[dict]:
        res = self.results.get(query, []) if isinstance(self.results, dict) else self.results
        return list(res)[:max_results]


def _is_web_url(u) -> bool:
    if not isinstance(u, str) or len(u) > 4096:
        return False
    try:
        p = urlsplit(u.strip())
    except ValueError:
        return False
    return p.scheme in ("http", "https") and bool(p.hostname)


def _to_int(v) -> Optional[int]:
    try:
        n = int(float(v))
    except (TypeError, ValueError, OverflowError):
        return None
    return n if n > 0 else None


def _text(v, limit: int = 300) -> str:
    return v.strip()[:limit] if isinstance(v, str) else ""


def parse_results(raw: list) -> list[SearchResult]:
    """Raw provider dicts to results: missing or odd fields are tolerated, unusable rows dropped.

    A row needs an http(s) ``image`` or ``thumbnail``; duplicates (same image
    link) are dropped, keeping the first.
    """
    out: list[SearchResult] = []
    seen: set[str] = set()
    for r in raw if isinstance(raw, list) else []:
        if not isinstance(r, dict):
            continue
        image = r.get("image") if _is_web_url(r.get("image")) else ""
        thumb = r.get("thumbnail") if _is_web_url(r.get("thumbnail")) else ""
        if not image and not thumb:
            continue
        image, thumb = (image or thumb).strip(), (thumb or "").strip()
        if image in seen:
            continue
        seen.add(image)
        out.append(SearchResult(image=image, thumbnail=thumb, title=_text(r.get("title")),
                                page_url=r.get("url").strip() if _is_web_url(r.get("url")) else "",
                                width=_to_int(r.get("width")), height=_to_int(r.get("height")),
                                source=_text(r.get("source"), 100), license=_text(r.get("license"), 100)))
    return out


# --- retries --------------------------------------------------------------------------
def _retryable() -> tuple[type, ...]:
    try:
        from ddgs.exceptions import DDGSException, TimeoutException

        return (DDGSException, TimeoutException, TimeoutError, ConnectionError, OSError)
    except ImportError:  # pragma: no cover - ddgs is a requirement
        return (TimeoutError, ConnectionError, OSError)


def search_images(query: str, *, provider: SearchProvider, max_results: int = 100,
                  filters: SearchFilters = SearchFilters(), cache: Optional["SearchCache"] = None,
                  attempts: int = 3, backoff: float = 2.0, deadline: float = 25.0,
                  sleep: Callable[[float], None] = time.sleep,
                  before_asking: Optional[Callable[[], None]] = None) -> list[SearchResult]:
    """Search for pictures; retry refusals a few times, then raise :class:`SearchUnavailable`.

    The whole call, retries included, ends within about ``deadline`` seconds.
    Results are cached per provider, query and filters when ``cache`` is given.
    ``before_asking`` is called once when the engine is about to be asked (not
    for a cached answer) and may raise to refuse, e.g. :meth:`RateLimiter.check`.
    """
    query = (query or "").strip()
    if not query:
        raise InputError("Type what to search for.")
    if not 1 <= max_results <= 1000:
        raise InputError("Ask for between 1 and 1000 pictures.")
    filters.validate()
    key = cache.key(provider.name, query, max_results, filters) if cache else ""
    if cache:
        hit = cache.get(key)
        if hit is not None:
            return hit
    if before_asking is not None:
        before_asking()
    t0 = time.monotonic()
    unslept = 0.0  # waits an injected ``sleep`` did not really take: the deadline counts them anyway
    last: Exception | None = None
    retry_on = _retryable()
    for attempt in range(attempts):
        try:
            raw = provider.images(query, max_results=max_results, filters=filters)
        except retry_on as e:  # refused, rate limited, blocked or unreachable
            last = e
            if network.offline(e):  # no connection: asking again in a few seconds cannot help
                break
            # Exponential, with +-25% jitter: visitors refused together do not retry together,
            # and each wait is still longer than the one before.
            wait = backoff * (2 ** attempt) * random.uniform(0.75, 1.25)
            if attempt + 1 >= attempts or time.monotonic() - t0 + unslept + wait > deadline:
                break
            s0 = time.monotonic()
            sleep(wait)
            unslept += max(0.0, wait - (time.monotonic() - s0))
            continue
        results = parse_results(raw)
        if cache and results:  # an empty answer may be a soft block: do not keep it for a week
            cache.put(key, results)
        return results
    raise SearchUnavailable(unavailable_message(last, provider))


#: What a person can do when the web search is out of reach.
INSTEAD = "add your own pictures: upload them (or a zip file with a folder per class), or import a folder"


def unavailable_message(error: Optional[BaseException], provider) -> str:
    """Why the search engine gave no results, in plain words, and what to do; the library's text goes to the log."""
    engine = getattr(provider, "backend", None) or getattr(provider, "name", "search")
    if error is not None:
        log.warning("image search failed (%s): %s: %s", engine, type(error).__name__, str(error)[:500])
    if error is not None and network.offline(error):
        host = network.host_of(error) or _ENGINE_HOSTS.get(engine, "the search engine")
        return (f"No internet connection: {host} could not be found. Check this computer's connection and search "
                f"again; meanwhile you can {INSTEAD}.")
    proxy = getattr(provider, "proxy", None)
    if proxy and error is not None and network.refused_connection(error):
        return (f"The image search engine ({engine}) could not be reached through the proxy set in DDGS_PROXY "
                f"({proxy}): is it running? Fix or unset DDGS_PROXY, or {INSTEAD}.")
    if error is not None and network.timed_out(error):
        return (f"The image search engine ({engine}) did not answer in time. Try again in a minute or choose another "
                f"engine; or {INSTEAD}.")
    return (f"The image search engine ({engine}) refused the search or could not be reached. Search engines block "
            f"heavy use for a while: try again in a few minutes or choose another engine; or {INSTEAD}.")


_ENGINE_HOSTS = {"duckduckgo": "duckduckgo.com", "bing": "www.bing.com"}


# --- several classes at once ----------------------------------------------------------------
@dataclass(frozen=True)
class ClassQuery:
    """A class to fill and the words to search the web with."""

    label: str
    query: str


def parse_class_queries(text: str, *, max_classes: int = MAX_CLASSES) -> list[ClassQuery]:
    """Read ``"centipede, millipede = millipede insect, spider"`` into classes and their queries.

    Classes are separated by commas or new lines. ``class = words`` searches
    for the words after ``=``; otherwise the class name is the query. Names are
    checked like any class name (:func:`~tl_app.project.validate_label`), and a
    class named twice (in any letter case) is kept once, the first time.
    """
    from .project import validate_label

    out: list[ClassQuery] = []
    seen: set[str] = set()
    for part in (text or "").replace("\n", ",").split(","):
        if not part.strip():
            continue
        name, eq, query = part.partition("=")
        try:
            label = validate_label(name)
        except InvalidLabel as e:
            raise InvalidLabel(f"{e} (in '{part.strip()}')" if eq else str(e)) from None
        query = " ".join(query.split()) if eq else ""
        if len(query) > MAX_QUERY_LEN:
            raise InputError(f"The search words for '{label}' are too long (at most {MAX_QUERY_LEN} characters).")
        if label.casefold() in seen:
            continue
        seen.add(label.casefold())
        out.append(ClassQuery(label, query or label))
    if not out:
        raise InputError("Type the classes to search for, separated by commas, e.g. 'centipede, millipede, spider'.")
    if len(out) > max_classes:
        raise InputError(f"{len(out)} classes at once is too many; search for at most {max_classes} at a time.")
    return out


@dataclass
class ClassResults:
    """What one class's search found; ``cached`` when the answer came from the project's cache."""

    label: str
    query: str
    results: list[SearchResult]
    cached: bool = False


@dataclass
class ClassSearch:
    """Results per class; when the engine refused, ``refused`` says so and the rest were not searched."""

    found: list[ClassResults] = field(default_factory=list)
    refused: str = ""
    not_searched: list[ClassQuery] = field(default_factory=list)


def search_classes(queries: list[ClassQuery], *, provider: SearchProvider, max_results: int = 100,
                   filters: SearchFilters = SearchFilters(), cache: Optional["SearchCache"] = None,
                   before_asking: Optional[Callable[[], None]] = None, **retry) -> ClassSearch:
    """Search for every class in turn with :func:`search_images`.

    Once the engine refuses (:class:`SearchUnavailable`, a visitor limit
    included), the remaining classes are not asked for: the engine is likely to
    refuse them too, and asking again only prolongs a block.
    """
    out = ClassSearch()
    for i, cq in enumerate(queries):
        asked = []

        def gate():
            asked.append(True)
            if before_asking is not None:
                before_asking()

        try:
            res = search_images(cq.query, provider=provider, max_results=max_results, filters=filters,
                                cache=cache, before_asking=gate, **retry)
        except SearchUnavailable as e:
            out.refused = str(e)
            out.not_searched = list(queries[i:])
            break
        out.found.append(ClassResults(cq.label, cq.query, res, cached=not asked))
    return out


# --- cache -------------------------------------------------------------------------------
class SearchCache:
    """Search results kept in the project database, per provider, query and filters."""

    def __init__(self, project, ttl_seconds: float = 7 * 24 * 3600):
        self.project = project
        self.ttl = ttl_seconds
        with project._write() as con:
            con.execute("CREATE TABLE IF NOT EXISTS search_cache(key TEXT PRIMARY KEY, created REAL NOT NULL,"
                        " results TEXT NOT NULL)")

    @staticmethod
    def key(provider: str, query: str, max_results: int, filters: SearchFilters) -> str:
        blob = json.dumps([provider, query.casefold(), max_results, asdict(filters)], sort_keys=True)
        return hashlib.sha256(blob.encode()).hexdigest()

    def get(self, key: str) -> Optional[list[SearchResult]]:
        with self.project._read() as con:
            row = con.execute("SELECT created, results FROM search_cache WHERE key=?", (key,)).fetchone()
        if row is None or time.time() - row["created"] > self.ttl:
            return None
        return [SearchResult(**d) for d in json.loads(row["results"])]

    def put(self, key: str, results: list[SearchResult]) -> None:
        with self.project._write() as con:
            con.execute("INSERT OR REPLACE INTO search_cache(key, created, results) VALUES(?,?,?)",
                        (key, time.time(), json.dumps([r.to_dict() for r in results])))


# --- per-visitor limit ------------------------------------------------------------------------
@dataclass
class RateLimiter(Allowance):
    """At most ``limit`` searches per ``window`` seconds per visitor (for a shared server)."""

    limit: int = 10
    window: float = 600.0
    what: str = "searches"
    advice: str = "or upload pictures"

    def check(self, visitor: str, now: Optional[float] = None) -> None:
        """Count one search for ``visitor``; raise :class:`SearchUnavailable` past the limit."""
        try:
            self.take(visitor, 1, now)
        except LimitReached as e:
            raise SearchUnavailable(str(e)) from None
