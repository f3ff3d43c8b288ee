"""Download pictures from the web into a project: concurrently, safely, without duplicates.

Each link is fetched by :mod:`tl_app.fetch` into ``tmp/``, checked by the image
pipeline, compared with the project's pictures (exact hash, then a copy of one
confirmed by :mod:`tl_app.dupes`) and only then added to its class with its
provenance. A failed image
link falls back to its thumbnail. Links already fetched are skipped when a
download runs again. Up to 16 downloads run at once, at most 4 per host.
"""

from __future__ import annotations

import asyncio
import io
import os
import shutil
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Callable, Iterable, Optional
from urllib.parse import urlsplit

from . import fetch as _fetch
from .dupes import CopyIndex, Fingerprint, FingerprintStore, compare, fingerprint_stored, item_fingerprints
from .errors import FetchRefused, ImageRejected, TLError
from .images import encode_jpeg, normalize
from .jobs import Progress, ProgressFn, StopToken, no_progress
from .project import Project, validate_label

CONCURRENCY = 16
PER_HOST = 4
MIN_FREE_BYTES = 200 * 1024 * 1024
#: A picture that this many different links of one host delivered in one download is a
#: "photo unavailable" placeholder (a photo seldom sits at three addresses of one host);
#: two links are enough when the host redirected both to the same address.
PLACEHOLDER_LINKS = 3
#: Outcomes that mean "do not fetch this link again"; network failures may be retried later.
_FINAL = ("imported", "duplicate", "near-duplicate", "invalid", "refused", "placeholder")


@dataclass
class DownloadTask:
    """One picture to fetch: its link, a fallback (thumbnail) link, and what we know of it."""

    url: str
    fallback: str = ""
    meta: dict = field(default_factory=dict)


@dataclass
class DownloadReport:
    """What a download did; every refusal has the link and the reason."""

    imported: int = 0
    duplicates: int = 0
    near_duplicates: int = 0
    skipped: int = 0
    rejected: list[dict] = field(default_factory=list)
    items: list[str] = field(default_factory=list)
    placeholders: int = 0
    stopped: bool = False
    seconds: float = 0.0

    def to_dict(self) -> dict:
        return {"imported": self.imported, "duplicates": self.duplicates + self.near_duplicates,
                "rejected": list(self.rejected), "near_duplicates": self.near_duplicates,
                "placeholders": self.placeholders, "skipped": self.skipped, "stopped": self.stopped}

    def summary(self) -> str:
        parts = [f"{self.imported} downloaded"]
        if self.duplicates or self.near_duplicates:
            n = self.duplicates + self.near_duplicates
            parts.append(f"{n} duplicate{'s' if n != 1 else ''} skipped"
                         + (f" ({self.near_duplicates} near-identical)" if self.near_duplicates else ""))
        if self.skipped:
            parts.append(f"{self.skipped} already fetched before")
        if self.rejected:
            parts.append(f"{len(self.rejected)} refused" + (
                f" ({self.placeholders} of them 'photo unavailable' placeholders)" if self.placeholders else ""))
        if self.stopped:
            parts.append("stopped")
        return ", ".join(parts)


def tasks_from_urls(urls: Iterable[str], **meta) -> list[DownloadTask]:
    """Tasks for plain links (one per non-empty line), in order, without repeats."""
    seen, out = set(), []
    for u in urls:
        u = (u or "").strip()
        if u and not u.startswith("#") and u not in seen:
            seen.add(u)
            out.append(DownloadTask(u, meta=dict(meta)))
    return out


def tasks_from_results(results, *, query: str = "", engine: str = "") -> list[DownloadTask]:
    """Tasks for search results: the full-size picture, falling back to the thumbnail."""
    return [DownloadTask(r.image, r.thumbnail if r.thumbnail != r.image else "",
                         {"page_url": r.page_url, "title": r.title, "query": query, "license": r.license,
                          "engine": engine, "thumbnail": r.thumbnail})
            for r in results]


@dataclass
class ClassDownload:
    """The pictures to fetch into one class."""

    label: str
    tasks: list[DownloadTask]


@dataclass
class ClassesReport:
    """Reports per class, in order; classes a stop or an error left untouched have none.

    ``error`` is the message that ended the downloads early (a full disk, say).
    """

    reports: dict[str, DownloadReport] = field(default_factory=dict)
    error: str = ""
    stopped: bool = False


def download_classes(project: Project, jobs: list[ClassDownload], *,
                     progress: Callable[[str, Progress], None] = lambda label, p: None,
                     stop: Optional[StopToken] = None, **kw) -> ClassesReport:
    """Download several classes one after another with :func:`download_to_project`.

    ``progress`` receives the class and its :class:`Progress`. A stop ends the
    class being fetched and leaves the later ones alone; so does an error a
    person can act on (its message is kept in the report, with what was done).
    """
    out = ClassesReport()
    for job in jobs:
        if stop is not None and stop.is_set():
            break
        try:
            rep = download_to_project(project, job.label, job.tasks, stop=stop,
                                      progress=lambda p, label=job.label: progress(label, p), **kw)
        except TLError as e:
            out.error = f"{job.label}: {e}"
            break
        if rep.stopped and _accounted(rep) >= len(job.tasks):
            rep.stopped = False  # the stop came once every link had been tried: nothing was cut short
        out.reports[job.label] = rep
        if rep.stopped:
            break
    out.stopped = any(r.stopped for r in out.reports.values()) or (
        stop is not None and stop.is_set() and len(out.reports) < len(jobs) and not out.error)
    return out


def _accounted(rep: DownloadReport) -> int:
    return rep.imported + rep.duplicates + rep.near_duplicates + len(rep.rejected) + rep.skipped


def fetched_urls(project: Project) -> set[str]:
    """Links that were already fetched for good (imported, duplicate or not a picture)."""
    with project._read() as con:
        return {r["url"] for r in con.execute(
            f"SELECT url FROM sources WHERE outcome IN ({','.join('?' * len(_FINAL))})", _FINAL)}


def _warm_up() -> None:
    """Load numpy, the copy finder and Pillow's JPEG codec (once per process)."""
    from PIL import Image

    a = fingerprint_stored(io.BytesIO(encode_jpeg(Image.new("RGB", (32, 32)))))
    compare(a, a)


class _Journal:
    """Outcomes of links (and the new pictures' fingerprints), written to the databases in batches.

    Each commit costs a disk flush (about 15 ms here); one per link for these
    rows made the database the bottleneck of a download. The pictures
    themselves are still committed one by one by :meth:`Project.add_image`;
    losing a batch in a crash only means those links are fetched again (and
    found to be duplicates).
    """

    def __init__(self, project: Project, db_lock: threading.Lock, every: float = 1.0, size: int = 64):
        self.project, self.db_lock, self.every, self.size = project, db_lock, every, size
        self._lock = threading.Lock()  # guards the lists only: the event loop never waits for the disk
        self._sources: list[tuple] = []
        self._prints: list[tuple[str, Fingerprint]] = []
        self._last = time.monotonic()

    def source(self, url: str, label: str, outcome: str, reason: str, item: Optional[str]) -> None:
        with self._lock:
            self._sources.append((url, label, item, outcome, reason, time.time()))

    def fingerprint(self, sha256: str, fp: Fingerprint) -> None:
        with self._lock:
            self._prints.append((sha256, fp))

    def due(self) -> bool:
        return len(self._sources) >= self.size or time.monotonic() - self._last > self.every

    def flush(self) -> None:
        """Write what is pending in one transaction (waits for ``db_lock``: call it off the event loop)."""
        with self._lock:
            self._last = time.monotonic()
            sources, self._sources = self._sources, []
            prints, self._prints = self._prints, []
        if not sources and not prints:
            return
        with self.db_lock:
            if sources:
                with self.project._write() as con:
                    con.executemany("INSERT OR REPLACE INTO sources(url, label, item, outcome, reason, fetched)"
                                    " VALUES(?,?,?,?,?,?)", sources)
            if prints:
                FingerprintStore(self.project).put(prints)


_PLACEHOLDER_REASON = "a 'photo unavailable' placeholder, not a photo (the same picture came from several links)"


def _placeholder_table(con) -> None:
    # The placeholders a download has met, by fingerprint (an older table held perceptual hashes,
    # which cannot confirm a picture: it is left unused).
    con.execute("CREATE TABLE IF NOT EXISTS placeholder_prints(sha256 TEXT PRIMARY KEY, version INTEGER NOT NULL,"
                " width REAL NOT NULL, height REAL NOT NULL, thumb BLOB NOT NULL, seen REAL NOT NULL)")


def placeholder_prints(project: Project) -> list[Fingerprint]:
    """Fingerprints of the placeholders downloads have met: refused at once next time (when identical)."""
    from .dupes import VERSION

    with project._write() as con:
        _placeholder_table(con)
        rows = con.execute("SELECT width, height, thumb FROM placeholder_prints WHERE version=?", (VERSION,))
        out = []
        for r in rows:
            try:
                out.append(Fingerprint.from_blob(r["thumb"], r["width"], r["height"]))
            except ValueError:  # a damaged row: that placeholder is found again by its links
                pass
        return out


def is_known_placeholder(fp: Fingerprint, known: list[Fingerprint]) -> bool:
    """Whether ``fp`` is the very same picture as a known placeholder (whole, not a crop or a look-alike)."""
    for p in known:
        m = compare(p, fp)
        if m is not None and m.identical:
            return True
    return False


def is_placeholder(links: list[tuple]) -> bool:
    """Whether one picture delivered by these links looks like a host's placeholder.

    ``links`` holds ``(link, host, address after redirects, ...)`` per link. A host
    that has lost a picture serves the same "photo unavailable" image for every
    missing one, or redirects them all to it. The same photo does turn up at two
    addresses (two sizes on one site, or two sites); at three addresses of one
    host, or at two that the host redirected to one place, it is the host's
    stand-in for pictures it no longer has.
    """
    if len({link[0] for link in links}) < 2:
        return False
    per_host: dict[str, set[str]] = {}
    per_target: dict[str, set[str]] = {}
    for link, host, final, *_ in links:
        per_host.setdefault(host, set()).add(link)
        if final and final != link:
            per_target.setdefault(final, set()).add(link)
    return (any(len(v) >= PLACEHOLDER_LINKS for v in per_host.values())
            or any(len(v) >= 2 for v in per_target.values()))


def _settle_placeholders(project: Project, label: str, delivered: dict, report: "DownloadReport",
                         journal: "_Journal", db_lock: threading.Lock) -> None:
    """Move the pictures that turned out to be placeholders to the trash and report their links.

    The first copy of a placeholder is stored before the next links reveal it;
    here it leaves the dataset (one undoable delete) and every link that gave it
    is listed as refused. Its fingerprint is remembered so later downloads refuse it at once.
    Only links that gave the very same picture (the same file, or the whole picture again at
    another size or quality) count: a look-alike never makes a placeholder.
    """
    from .dupes import VERSION

    found = {item: links for item, links in delivered.items() if is_placeholder(links)}
    if not found:
        return
    with db_lock:
        items = [project.item(i) for i in found]
        prints = item_fingerprints(project, items)
        # Only pictures this app downloaded leave: never one the person imported from their own files.
        trash = [it.id for it in items if it.status == "active" and it.source.startswith(("http://", "https://"))]
        if trash:
            n = len(trash)
            project.delete(trash, summary=f"removed {n} 'photo unavailable' placeholder{'s' if n != 1 else ''} "
                                          "a download found")
        with project._write() as con:
            _placeholder_table(con)
            con.executemany("INSERT OR REPLACE INTO placeholder_prints(sha256, version, width, height, thumb, seen)"
                            " VALUES(?,?,?,?,?,?)",
                            [(it.sha256, VERSION, prints[it.id].width, prints[it.id].height, prints[it.id].blob,
                              time.time()) for it in items if it.id in prints])
    for item, links in found.items():
        for link, _, _, outcome in links:
            # Each link was counted as imported or as a duplicate of the placeholder: a refusal now.
            if outcome == "imported":
                report.imported -= 1
                if item in report.items:
                    report.items.remove(item)
            elif outcome == "duplicate":
                report.duplicates -= 1
            else:
                report.near_duplicates -= 1
            journal.source(link, label, "placeholder", _PLACEHOLDER_REASON, None)
            report.rejected.append({"url": link, "reason": _PLACEHOLDER_REASON})
            report.placeholders += 1


def _name(it) -> str:
    """A picture as a person knows it: the file name it came under, not an item id."""
    from urllib.parse import unquote

    src = (it.source or "").split("?")[0].rstrip("/")
    name = unquote(src.rsplit("/", 1)[-1]) if src else ""
    return f"“{name}”" if name else "a picture"


def download_to_project(project: Project, label: str, tasks: list[DownloadTask], *,
                        concurrency: int = CONCURRENCY, per_host: int = PER_HOST,
                        max_bytes: int = _fetch.MAX_BYTES, total_timeout: float = _fetch.TOTAL_TIMEOUT,
                        progress: ProgressFn = no_progress, stop: Optional[StopToken] = None) -> DownloadReport:
    """Fetch every task's picture into class ``label`` of ``project`` and report what happened."""
    label = project.add_label(validate_label(label))
    t0 = time.monotonic()
    report = DownloadReport()
    done_before = fetched_urls(project)
    todo = []
    for t in tasks:
        if t.url in done_before:
            report.skipped += 1
        else:
            todo.append(t)
    if todo:
        free = shutil.disk_usage(project.root).free
        if free < MIN_FREE_BYTES:
            raise TLError(f"Only {free / 1e6:.0f} MB of disk space is left in {project.root}; "
                          "free some space before downloading.")
    total = len(todo)
    progress(Progress(0, total, "Starting downloads"))
    if total:
        # A connection held open for the whole download: when the last connection to a WAL
        # database closes, SQLite checkpoints and removes the WAL, which here cost 7 ms per
        # picture (every Project call opens and closes its own connection).
        with project._read() as keeper:
            keeper.execute("SELECT 1 FROM items LIMIT 1").fetchall()
            asyncio.run(_run(project, label, todo, report, concurrency=concurrency, per_host=per_host,
                             max_bytes=max_bytes, total_timeout=total_timeout, progress=progress, stop=stop))
    report.seconds = time.monotonic() - t0
    return report


async def _run(project: Project, label: str, todo: list[DownloadTask], report: DownloadReport, *,
               concurrency: int, per_host: int, max_bytes: int, total_timeout: float,
               progress: ProgressFn, stop: Optional[StopToken]) -> None:
    index = CopyIndex(item_fingerprints(project))
    add_lock = threading.Lock()
    sem = asyncio.Semaphore(concurrency)
    host_sems: dict[str, asyncio.Semaphore] = {}
    state = {"done": 0}
    loop = asyncio.get_running_loop()
    pool = ThreadPoolExecutor(max_workers=max(1, min(4, os.cpu_count() or 1)))
    journal = _Journal(project, add_lock)
    known_placeholders = placeholder_prints(project)
    # Which links delivered each stored picture in this run: (link, host, address after redirects).
    delivered: dict[str, list[tuple[str, str, str]]] = {}
    pool.submit(_warm_up)  # imports for the first picture load while the first answers travel

    def host_sem(url: str) -> asyncio.Semaphore:
        host = (urlsplit(url).hostname or "").lower()
        return host_sems.setdefault(host, asyncio.Semaphore(per_host))

    def accept(tmp_path, task: DownloadTask, used_url: str):
        """Validate and store one downloaded file (runs on the thread pool).

        Returns ``(outcome, reason, item, same)``: ``same`` when the item is this
        very picture (stored now, the same file, or the whole picture again), which
        is what counts toward a placeholder.
        """
        norm = normalize(tmp_path)
        fp = fingerprint_stored(io.BytesIO(norm.data))
        if is_known_placeholder(fp, known_placeholders):
            return "placeholder", _PLACEHOLDER_REASON, None, False
        # Every database write of this run goes through add_lock: SQLite would otherwise make
        # the threads wait on its busy handler (sleeps of 1-25 ms), which cost half the run.
        with add_lock:
            exact = project.find_sha(norm.sha256)
            if exact is not None:
                return "duplicate", f"the same picture is already in '{exact.label}'", exact.id, True
            hit = index.find(fp)
            if hit is not None:
                iid, match = hit
                other = project.item(iid)
                how = ("the same picture but for text or a mark" if match.kind == "overlay" else
                       "the same picture, perhaps resized, re-encoded, cropped or framed")
                return ("near-duplicate", f"a copy of {_name(other)}, already in '{other.label}' ({how})",
                        iid, match.identical)
            meta = {k: v for k, v in task.meta.items() if v}
            meta["url"] = used_url
            if used_url != task.url:
                meta["original_url"] = task.url
            res = project.add_image(norm, label, source=used_url, meta=meta)
            if res.duplicate:
                return "duplicate", res.reason, res.item.id if res.item else None, True
            index.add(res.item.id, fp)
            journal.fingerprint(norm.sha256, fp)
        return "imported", "", res.item.id, True

    async def one(client, task: DownloadTask):
        if stop is not None and stop.is_set():
            return
        reasons: list[str] = []
        outcome = "failed"
        item = None
        for url in [u for u in (task.url, task.fallback) if u]:
            if stop is not None and stop.is_set():
                return
            tmp = project.temp_path(".download")
            try:
                # The host's slot first: a task waiting for a busy host must not hold one of
                # the global slots, or links grouped by host would run 4 at a time, not 16.
                async with host_sem(url), sem:
                    if stop is not None and stop.is_set():
                        return
                    got = await _fetch.fetch(client, url, tmp, max_bytes=max_bytes, total_timeout=total_timeout)
                storing = loop.run_in_executor(pool, accept, got.path, task, url)
                try:
                    outcome, reason, item, same = await asyncio.shield(storing)
                except asyncio.CancelledError:
                    # Stopped while the picture was being stored: the thread goes on, so wait
                    # for it and count the picture, or the report would miss an added item.
                    outcome, reason, item, same = await storing
                reasons = [reason] if reason else []
                if item is not None and same:
                    delivered.setdefault(item, []).append(
                        (task.url, (urlsplit(url).hostname or "").lower(), got.final_url, outcome))
                break
            except FetchRefused as e:
                reason, outcome = str(e), ("refused" if e.final else "failed")
            except ImageRejected as e:
                reason, outcome = e.reason, "invalid"
            except TLError as e:
                reason, outcome = str(e), "failed"
            except OSError as e:  # the disk (full, read-only), not the link: try again later
                reason, outcome = f"the picture could not be stored ({e.strerror or e})", "failed"
            finally:
                if tmp.exists():
                    tmp.unlink()
            reasons.append(reason if url == task.url else f"its thumbnail too: {reason}")
        reason = "; ".join(reasons)
        # Count before the next await: a stop cancels this job there, and the picture is stored.
        journal.source(task.url, label, outcome, reason, item)
        if outcome == "imported":
            report.imported += 1
            report.items.append(item)
        elif outcome == "duplicate":
            report.duplicates += 1
        elif outcome == "near-duplicate":
            report.near_duplicates += 1
        else:
            report.rejected.append({"url": task.url, "reason": reason})
            if outcome == "placeholder":
                report.placeholders += 1
        state["done"] += 1
        progress(Progress(state["done"], len(todo), task.url, failed=len(report.rejected)))
        if journal.due():
            await loop.run_in_executor(pool, journal.flush)

    client = _fetch.make_client(max_connections=concurrency * 2)
    try:
        jobs = [asyncio.ensure_future(one(client, t)) for t in todo]

        async def watch_stop():
            while not all(j.done() for j in jobs):
                if stop is not None and stop.is_set():
                    for j in jobs:
                        j.cancel()
                    return
                await asyncio.sleep(0.1)

        watcher = asyncio.ensure_future(watch_stop())
        results = await asyncio.gather(*jobs, return_exceptions=True)
        watcher.cancel()
        if stop is not None and stop.is_set():
            report.stopped = True
        # A bug must not turn into links that silently vanish from the report.
        for r in results:
            if isinstance(r, Exception):
                raise r
        await loop.run_in_executor(pool, _settle_placeholders, project, label, delivered, report, journal, add_lock)
    finally:
        await client.aclose()
        pool.shutdown(wait=True)
        journal.flush()
