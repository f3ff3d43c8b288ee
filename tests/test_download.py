"""Downloading into a project: against the loopback bad server, through the core and the real CLI.

Every good picture arrives with its provenance, every bad link is refused with
its reason, duplicates and "photo unavailable" placeholders are skipped, and
nothing is left half-written.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest

import badserver
from tl_app.download import DownloadTask, download_to_project, tasks_from_results, tasks_from_urls
from tl_app.importer import import_files
from tl_app.jobs import StopToken
from tl_app.project import Project
from tl_app.search import parse_results

ROOT = Path(__file__).resolve().parent.parent
CAPS = {"max_bytes": 200_000, "total_timeout": 2}  # small caps keep the bad routes short


def requests_for(srv, path: str) -> int:
    return sum(1 for p, _ in srv.log if p == path)


def assert_clean(project: Project) -> None:
    """No temporary file left, and every file in images/ belongs to an item."""
    assert list(project.tmp_dir.iterdir()) == []
    files = sorted(p.relative_to(project.images_dir).as_posix() for p in project.images_dir.rglob("*") if p.is_file())
    assert files == sorted(it.file for it in project.items())


def cli(*args, env_extra: dict | None = None, timeout: float = 60, importtime: bool = False):
    env = {k: v for k, v in os.environ.items() if k != "TL_ALLOW_HOSTS"}
    env.update(PYTHONPATH=str(ROOT), **(env_extra or {}))
    cmd = [sys.executable, *(["-X", "importtime"] if importtime else []), "-m", "tl_app", *map(str, args)]
    return subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=timeout, cwd=ROOT)


# --- the core -------------------------------------------------------------------------------------

def test_a_mixed_batch_imports_the_good_and_refuses_the_bad_with_reasons(allow, other, project):
    srv = allow
    good = {srv.url("/img/0.jpg"): {"page_url": srv.url("/pages/0"), "query": "cats", "title": "Cat 0"},
            srv.url("/img/1.png"): {"page_url": srv.url("/pages/1"), "query": "cats", "title": "Cat 1"},
            srv.url("/img/2.jpg"): {}}
    bad = {  # link -> words its reason must contain
        srv.url("/html-as-jpeg"): "web page", srv.url("/page.html"): "web page",
        srv.url("/status/404"): "HTTP 404", srv.url("/status/500"): "HTTP 500",
        srv.url("/bomb.png"): "too many pixels", srv.url("/truncated.jpg"): "truncated",
        srv.url("/empty.jpg"): "empty", srv.url("/loop"): "too many redirects",
        srv.url("/chain/6"): "too many redirects", srv.url(f"/redirect-port/{other.port}"): "this computer",
        srv.url("/redirect-file"): "only http and https", srv.url("/big-cl?size=1000000"): "too large",
        srv.url("/big-nocl?size=1000000"): "larger than", srv.url("/gzip-bomb"): "larger than",
        srv.url("/endless"): "larger than", srv.url("/slow"): "took longer than 2 s",
        "file:///etc/passwd": "only http and https", "ftp://127.0.0.1/cat.jpg": "only http and https",
        f"http://127.0.0.1:{other.port}/img/5.jpg": "this computer",
    }
    dups = [srv.url("/dup/a.jpg"), srv.url("/dup/b.jpg")]
    placeholders = [srv.url(f"/placeholder/{i}.jpg") for i in range(5)]
    tasks = ([DownloadTask(u, meta=m) for u, m in good.items()] + [DownloadTask(u) for u in bad]
             + [DownloadTask(u) for u in dups + placeholders])

    t0 = time.monotonic()
    rep = download_to_project(project, "cat", tasks, **CAPS)
    assert time.monotonic() - t0 < 10

    assert (rep.imported, rep.duplicates, rep.near_duplicates, rep.placeholders) == (4, 1, 0, 5), rep
    assert {r["url"] for r in rep.rejected} == set(bad) | set(placeholders)
    for r in rep.rejected:
        assert (bad.get(r["url"]) or "'photo unavailable' placeholder") in r["reason"], r
    assert rep.to_dict()["duplicates"] == 1 and not rep.stopped
    assert other.log == []

    items = {it.source: it for it in project.items(label="cat")}
    assert len(items) == 4 and set(good) <= set(items)
    assert sum(u in items for u in dups) == 1 and not set(placeholders) & set(items)
    # The placeholder's first copy was stored before the next links gave it away: it is in the
    # trash, as an undoable step that says what it was.
    assert project.history(1)[0].summary == "removed 1 'photo unavailable' placeholder a download found"
    for url, meta in good.items():
        it = items[url]
        assert it.meta["url"] == url
        for k, v in meta.items():
            assert it.meta[k] == v
    assert set(rep.items) == {it.id for it in items.values()}
    assert_clean(project)


def test_the_thumbnail_is_used_when_the_picture_fails(allow, project):
    srv = allow
    tasks = [DownloadTask(srv.url("/status/404?a"), srv.url("/thumb/3.jpg"), {"title": "three"}),
             DownloadTask(srv.url("/html-as-jpeg?b"), srv.url("/thumb/4.jpg")),
             DownloadTask(srv.url("/img/6.jpg"), srv.url("/thumb/6.jpg")),
             DownloadTask(srv.url("/status/404?c"), srv.url("/status/410"))]
    rep = download_to_project(project, "cat", tasks, **CAPS)
    assert rep.imported == 3
    by_source = {it.source: it for it in project.items()}
    three = by_source[srv.url("/thumb/3.jpg")]
    assert three.meta["original_url"] == srv.url("/status/404?a") and three.meta["title"] == "three"
    assert srv.url("/thumb/4.jpg") in by_source
    assert srv.url("/img/6.jpg") in by_source and requests_for(srv, "/thumb/6.jpg") == 0  # no fallback needed
    [failed] = rep.rejected
    assert failed["url"] == srv.url("/status/404?c")
    assert "HTTP 404" in failed["reason"] and "thumbnail" in failed["reason"] and "HTTP 410" in failed["reason"]
    assert_clean(project)


def test_search_results_become_tasks_with_provenance(allow, project):
    srv = allow
    rows = [{"title": "A cat", "image": srv.url("/status/404?x"), "thumbnail": srv.url("/thumb/8.jpg"),
             "url": srv.url("/pages/8"), "width": "800", "height": "600", "source": "Bing"}]
    tasks = tasks_from_results(parse_results(rows), query="cute cat", engine="recorded")
    rep = download_to_project(project, "cat", tasks, **CAPS)
    assert rep.imported == 1
    [it] = project.items()
    assert it.meta["page_url"] == srv.url("/pages/8") and it.meta["query"] == "cute cat"
    assert it.meta["title"] == "A cat" and it.meta["engine"] == "recorded"


def test_running_again_skips_links_already_fetched_and_retries_failures(allow, project):
    srv = allow
    urls = [srv.url(p) for p in ("/img/20.jpg", "/img/21.jpg", "/status/404?again", "/status/503?again")]
    first = download_to_project(project, "cat", tasks_from_urls(urls), **CAPS)
    assert (first.imported, len(first.rejected), first.skipped) == (2, 2, 0)
    before = {p: requests_for(srv, p) for p in ("/img/20.jpg", "/status/404", "/status/503")}
    again = download_to_project(project, "cat", tasks_from_urls(urls + [srv.url("/img/22.jpg")]), **CAPS)
    assert (again.imported, again.skipped) == (1, 3)
    assert [r["url"] for r in again.rejected] == [srv.url("/status/503?again")]  # may work another day
    assert requests_for(srv, "/img/20.jpg") == before["/img/20.jpg"]
    assert requests_for(srv, "/status/404") == before["/status/404"]
    assert requests_for(srv, "/status/503") == before["/status/503"] + 1
    assert len(project.items()) == 3
    assert_clean(project)


def test_placeholders_leave_the_dataset_and_are_refused_from_then_on(allow, project, tmp_path):
    srv = allow
    # A host that redirects its removed pictures to one "photo unavailable" picture: two links tell.
    gone = [srv.url(f"/gone/{i}.jpg") for i in range(2)]
    rep = download_to_project(project, "cat", tasks_from_urls(gone + [srv.url("/img/40.jpg")]), **CAPS)
    assert (rep.imported, rep.placeholders) == (1, 2), rep
    assert {r["url"] for r in rep.rejected} == set(gone)
    assert [it.source for it in project.items()] == [srv.url("/img/40.jpg")]
    assert_clean(project)

    # Once known, one link is enough, in any class, even re-encoded at another size.
    rep = download_to_project(project, "dog", tasks_from_urls([srv.url("/placeholder/3.jpg")]), **CAPS)
    assert (rep.imported, rep.placeholders) == (0, 1) and "placeholder" in rep.rejected[0]["reason"]
    assert rep.summary() == "0 downloaded, 1 refused (1 of them 'photo unavailable' placeholders)"

    # Undo brings the trashed first copy back, as with any delete.
    project.undo()  # the later download stored nothing; the step before it is the placeholder's removal
    assert len(project.items(label="cat")) == 2


def test_the_same_photo_at_two_addresses_is_a_duplicate_not_a_placeholder(allow, project):
    rep = download_to_project(project, "cat", tasks_from_urls([allow.url("/dup/a.jpg"), allow.url("/dup/b.jpg")]),
                              **CAPS)
    assert (rep.imported, rep.duplicates, rep.placeholders) == (1, 1, 0)


def test_a_picture_the_person_imported_is_never_taken_away(allow, project, tmp_path):
    mine = tmp_path / "my placeholder.jpg"
    mine.write_bytes(badserver.placeholder_bytes(0))
    import_files(project, [mine], label="cat")
    links = [allow.url(f"/placeholder/{i}.jpg") for i in range(3)]
    rep = download_to_project(project, "cat", tasks_from_urls(links), **CAPS)
    assert rep.placeholders == 3 and rep.imported == 0
    assert [Path(it.source).name for it in project.items()] == ["my placeholder.jpg"]


def test_a_picture_already_in_another_class_is_a_duplicate(allow, project):
    download_to_project(project, "cat", tasks_from_urls([allow.url("/img/30.jpg")]), **CAPS)
    rep = download_to_project(project, "dog", tasks_from_urls([allow.url("/img/30.jpg?copy")]), **CAPS)
    assert (rep.imported, rep.duplicates) == (0, 1)
    assert project.label_counts() == {"cat": 1, "dog": 0}


def test_stop_ends_the_download_early_and_cleanly(monkeypatch, project):
    with badserver.start(latency=0.2) as slow:
        monkeypatch.setenv("TL_ALLOW_HOSTS", slow.hostport)
        stop = StopToken()
        seen = []

        def progress(p):
            seen.append(p.done)
            if p.done >= 3:
                stop.set()

        t0 = time.monotonic()
        rep = download_to_project(project, "cat", tasks_from_urls(slow.url(f"/img/{i}.jpg") for i in range(40)),
                                  progress=progress, stop=stop, **CAPS)
        took = time.monotonic() - t0
        time.sleep(0.3)  # answers still on their way when the stop came
        asked = len(slow.log)
    assert rep.stopped
    assert 3 <= rep.imported < 12 and took < 2.0
    assert asked < 16
    assert len(project.items()) == rep.imported
    assert_clean(project)


def test_without_the_allow_setting_the_loopback_server_is_refused(server, project):
    rep = download_to_project(project, "cat", tasks_from_urls([server.url("/img/40.jpg")]), **CAPS)
    assert rep.imported == 0 and "this computer" in rep.rejected[0]["reason"]


# --- the command line -------------------------------------------------------------------------------

def test_cli_download_json_and_list_sources(server, other, tmp_path):
    srv = server
    good = [srv.url(f"/img/{i}.jpg") for i in (50, 51)] + [srv.url("/img/52.png")]
    bad = {srv.url("/status/404"): "HTTP 404", srv.url("/html-as-jpeg"): "web page",
           srv.url("/big-cl"): "too large (24 MB; the limit is 20 MB)",  # the real cap, from the header
           srv.url("/bomb.png"): "too many pixels", srv.url(f"/redirect-port/{other.port}"): "this computer",
           "file:///etc/passwd": "only http and https"}
    lines = ["# pictures of cats", *good, "", srv.url("/dup/one.jpg"), srv.url("/dup/two.jpg"), *bad, good[0]]
    urls = tmp_path / "urls.txt"
    urls.write_text("\n".join(lines) + "\n", encoding="utf-8")
    proj = tmp_path / "proj"
    env = {"TL_ALLOW_HOSTS": srv.hostport}

    out = cli("download", proj, "--label", "cat", "--urls", urls, "--json", env_extra=env)
    assert out.returncode == 0, out.stderr
    assert "Traceback" not in out.stderr
    assert out.stdout.count("\n") == 1  # exactly one JSON document, on one line
    doc = json.loads(out.stdout)
    assert doc["imported"] == 4 and doc["duplicates"] == 1
    assert {r["url"] for r in doc["rejected"]} == set(bad)
    for r in doc["rejected"]:
        assert set(r) == {"url", "reason"} and bad[r["url"]] in r["reason"], r
        assert f"refused: {r['url']}: {r['reason']}" in out.stderr  # for a person too

    out = cli("list", proj, "--json")
    rows = json.loads(out.stdout)
    sources = {r["source"] for r in rows}
    assert len(rows) == 4 and all(r["label"] == "cat" for r in rows)
    assert set(good) <= sources and len(sources & {srv.url("/dup/one.jpg"), srv.url("/dup/two.jpg")}) == 1
    assert list((proj / "tmp").iterdir()) == []

    again = json.loads(cli("download", proj, "--label", "cat", "--urls", urls, "--json", env_extra=env).stdout)
    assert again["imported"] == 0 and again["skipped"] == len(good) + 2 + len(bad)  # every outcome was final


def test_cli_search_with_recorded_results_downloads_them(server, tmp_path):
    srv = server
    rows = [{"title": "Cat one", "image": srv.url("/img/60.jpg"), "thumbnail": srv.url("/thumb/60.jpg"),
             "url": srv.url("/pages/60"), "height": "120", "width": "160", "source": "Bing"},
            {"title": "Cat two", "image": srv.url("/status/404?61"), "thumbnail": srv.url("/thumb/61.jpg"),
             "url": srv.url("/pages/61")},
            {"title": "Gone", "image": srv.url("/status/410?62")},
            {"title": "Not a web link", "image": "file:///etc/passwd"},
            "not a dict"]
    results = tmp_path / "results.json"
    results.write_text(json.dumps(rows), encoding="utf-8")
    proj = tmp_path / "proj"
    out = cli("search", proj, "--label", "cat", "--query", "cute cat", "--results", results, "--json",
              env_extra={"TL_ALLOW_HOSTS": srv.hostport})
    assert out.returncode == 0, out.stderr
    doc = json.loads(out.stdout)
    assert (doc["query"], doc["found"], doc["imported"]) == ("cute cat", 3, 2)
    assert [r["url"] for r in doc["rejected"]] == [srv.url("/status/410?62")]
    rows = json.loads(cli("list", proj, "--json").stdout)
    assert {r["source"] for r in rows} == {srv.url("/img/60.jpg"), srv.url("/thumb/61.jpg")}
    meta = {it.source: it.meta for it in Project.open(proj).items()}
    assert meta[srv.url("/img/60.jpg")]["query"] == "cute cat"
    assert meta[srv.url("/img/60.jpg")]["page_url"] == srv.url("/pages/60")
    assert meta[srv.url("/thumb/61.jpg")]["original_url"] == srv.url("/status/404?61")


HEAVY = re.compile(r"\|\s*(torch|fastai|torchvision|timm|gradio)(\.|\s*$)", re.M)


@pytest.mark.parametrize("verb", ["download", "search"])
def test_download_and_search_do_not_import_torch_or_fastai(server, tmp_path, verb):
    srv = server
    if verb == "download":
        f = tmp_path / "urls.txt"
        f.write_text(srv.url("/img/70.jpg") + "\n", encoding="utf-8")
        args = ["--urls", f]
    else:
        f = tmp_path / "results.json"
        f.write_text(json.dumps([{"image": srv.url("/img/71.jpg")}]), encoding="utf-8")
        args = ["--results", f]
    out = cli(verb, tmp_path / "proj", "--label", "cat", *args, "--json", importtime=True,
              env_extra={"TL_ALLOW_HOSTS": srv.hostport})
    assert out.returncode == 0, out.stderr[-2000:]
    assert json.loads(out.stdout)["imported"] == 1
    assert "import time:" in out.stderr  # the check below looks at real data
    assert HEAVY.findall(out.stderr) == []


# --- copies and look-alikes ---------------------------------------------------------------------------
def test_distinct_drawings_that_a_perceptual_hash_confuses_all_arrive(allow, project):
    # Discs in four places, in 12 colour pairs: a perceptual hash pairs many of them (the old rule
    # refused about half as duplicates or placeholders); they are all different pictures.
    links = [allow.url(f"/drawing/{n}.jpg") for n in range(48)]
    rep = download_to_project(project, "discs", tasks_from_urls(links), **CAPS)
    assert (rep.imported, rep.duplicates, rep.near_duplicates, rep.placeholders) == (48, 0, 0, 0), rep
    assert rep.rejected == []


def test_copies_are_refused_with_the_picture_they_copy_but_a_mirrored_one_arrives(allow, project):
    originals = [allow.url(f"/img/{n}.jpg") for n in (1, 2, 3)]
    download_to_project(project, "cat", tasks_from_urls(originals), **CAPS)
    # Per picture a crop, a caption and one copy of the whole picture (three of those from one host
    # would be the sign of a "photo unavailable" placeholder).
    copies = [allow.url(f"/copy/{k}/{n}.jpg") for n, whole in ((1, "reencode"), (2, "smaller"), (3, "border"))
              for k in ("crop", "text", whole)]
    mirrored = [allow.url(f"/copy/mirror/{n}.jpg") for n in (1, 2, 3)]
    rep = download_to_project(project, "dog", tasks_from_urls(copies + mirrored), **CAPS)
    assert (rep.near_duplicates, rep.imported, rep.placeholders) == (9, 3, 0), rep
    assert {it.source for it in project.items(label="dog")} == set(mirrored)
    report = {r["url"]: r for r in _sources(project)}
    crop = report[allow.url("/copy/crop/1.jpg")]
    assert crop["outcome"] == "near-duplicate" and "already in 'cat'" in crop["reason"] and "“1.jpg”" in crop["reason"]
    assert all(report[u]["outcome"] == "near-duplicate" for u in copies)


def test_look_alikes_from_one_host_are_not_placeholders(allow, project):
    # Three links of one host giving discs in one place, in three colour pairs: alike to a
    # perceptual hash, never the very same picture. Three crops of one picture are copies (refused
    # as such) but not the same picture whole, so they do not make a placeholder either.
    alike = [allow.url(f"/drawing/{n}.jpg") for n in (0, 4, 8)]
    rep = download_to_project(project, "discs", tasks_from_urls(alike), **CAPS)
    assert (rep.imported, rep.placeholders) == (3, 0), rep
    crops = [allow.url(f"/copy/{kind}/7.jpg") for kind in ("crop", "text", "smaller")]
    rep = download_to_project(project, "crops", tasks_from_urls(crops), **CAPS)
    assert (rep.imported, rep.near_duplicates, rep.placeholders) == (1, 2, 0), rep


def _sources(project):
    with project._read() as con:
        return [dict(r) for r in con.execute("SELECT url, outcome, reason FROM sources")]
