"""Large projects: the copy index agrees with a plain scan, batched imports stay correct and undoable."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

import imagegen
from tl_app import dupes
from tl_app.images import normalize, sha256_file
from tl_app.importer import import_files
from tl_app.project import NewImage, Project


def _picture(seed: int, size=(48, 36)) -> Image.Image:
    """A smooth random colour field (quick to make; pictures of one corpus correlate a little)."""
    rng = np.random.default_rng(seed)
    small = rng.integers(0, 256, (3, 4, 3)).astype(np.uint8)
    return Image.fromarray(small).resize(size, Image.Resampling.BICUBIC)


def _scene(i: int) -> Image.Image:
    """Photo-like scenes (sky, ground, a few shapes): many look alike, as web pictures of one class do."""
    return imagegen.scene(i, size=(64, 48))


@pytest.fixture(scope="module")
def corpus():
    """2,600 fingerprints of scenes, every 20th a cropped copy of the one before."""
    prints = []
    for i in range(2600):
        im = _scene(i) if i % 20 != 19 else _scene(i - 1).crop((2, 1, 62, 46))
        prints.append(dupes.fingerprint(im))
    return prints


def test_the_copy_index_finds_the_neighbours_a_scan_finds(corpus):
    base = corpus[:2300]
    # Copies of stored pictures (cropped, resized) and new scenes.
    queries = ([dupes.fingerprint(_scene(i).crop((3, 2, 61, 47)).resize((90, 70))) for i in range(0, 2300, 23)]
               + corpus[2300:])
    index = dupes.CopyIndex({f"item{i}": fp for i, fp in enumerate(base)})
    assert len(index) >= dupes.INDEX_FROM and index._basis is not None  # the index, not the scan, answers
    found = 0
    for fp in queries:
        ids, sims = index.neighbours(fp)
        ids_scan, sims_scan = index.neighbours(fp, scan=True)
        assert ids.tolist() == ids_scan.tolist()
        np.testing.assert_allclose(sims, sims_scan, atol=1e-5)
        found += len(ids)
    assert found > len(queries)  # pictures of this corpus do have neighbours: the comparison says something


def test_the_copy_index_stays_exact_as_pictures_are_added(corpus):
    index = dupes.CopyIndex({f"item{i}": fp for i, fp in enumerate(corpus[:1500])})
    assert index._basis is None  # too few for the index: a scan
    for i, fp in enumerate(corpus[1500:2500], start=1500):
        index.add(f"item{i}", fp)  # crosses INDEX_FROM: the index is built on the way
    assert index._basis is not None
    for fp in corpus[2500:]:
        ids, sims = index.neighbours(fp)
        ids_scan, sims_scan = index.neighbours(fp, scan=True)
        assert ids.tolist() == ids_scan.tolist()
    # A cropped copy of a stored picture is found as one, with the index's answer.
    copy = dupes.fingerprint(_scene(2000).crop((2, 1, 62, 46)))
    hit = index.find(copy)
    assert hit is not None and hit[0] == "item2000" and hit[1].is_copy
    assert index.find(dupes.fingerprint(_scene(99_999))) is None


def test_the_index_finds_every_copy_review_finds(corpus):
    """Downloads (the index, one picture at a time) refuse every copy Review (all pairs) would group."""
    pairs = {(m.a, m.b) for m in dupes.find_matches(corpus[:2000]) if m.is_copy}
    made = {(i - 1, i) for i in range(19, 2000, 20)}
    assert len(pairs & made) >= 0.9 * len(made)
    index = dupes.CopyIndex({f"item{i}": fp for i, fp in enumerate(corpus[:2000]) if i % 20 != 19})
    for a, b in pairs & made:
        hit = index.find(corpus[b])
        assert hit is not None and hit[0] == f"item{a}" and hit[1].is_copy


def test_a_batched_import_of_thousands_is_complete_and_undoable(tmp_path):
    src = tmp_path / "src"
    for i in range(2000):
        d = src / f"c{i % 4}"
        d.mkdir(parents=True, exist_ok=True)
        _picture(i, size=(40, 40)).save(d / f"{i}.png")
    for i in range(5):  # byte copies under other names: duplicates within one batch
        (src / "c0" / f"again{i}.png").write_bytes((src / "c0" / f"{4 * i}.png").read_bytes())
    (src / "c1" / "notes.txt").write_text("not a picture")
    project = Project.open(tmp_path / "proj", create=True)
    rep = import_files(project, [src])
    assert (rep.imported, rep.duplicates, len(rep.rejected)) == (2000, 5, 1)
    assert rep.rejected[0].file.endswith("notes.txt")
    items = project.items()
    assert len(items) == 2000 and project.label_counts() == {"c0": 500, "c1": 500, "c2": 500, "c3": 500}
    files = {p for p in project.images_dir.rglob("*") if p.is_file()}
    assert files == {project.path_of(it) for it in items}
    for it in items[::97]:
        assert sha256_file(project.path_of(it)) == it.sha256
    assert [f for f in project.tmp_dir.iterdir() if f.is_file()] == []
    # Delete and undo: every byte comes back.
    before = {it.id: project.path_of(it).read_bytes() for it in items[:300]}
    project.delete(list(before))
    assert len(project.items()) == 1700
    project.undo()
    assert {it.id for it in project.items()} == {it.id for it in items}
    assert all(project.path_of(project.item(i)).read_bytes() == b for i, b in before.items())


def test_add_images_checks_each_picture_on_its_own(project):
    imgs = [normalize(imagegen.encode(_picture(i), "PNG")) for i in range(3)]
    res = project.add_images([NewImage(imgs[0], "cat"), NewImage(imgs[1], "bad/name"), NewImage(imgs[0], "dog"),
                              NewImage(imgs[2], "Cat")])
    assert res[0].item is not None and not res[0].duplicate
    assert res[1].error is not None and "cannot have" in str(res[1].error)
    assert res[2].duplicate and res[2].item.id == res[0].item.id and "'cat'" in res[2].reason
    assert res[3].item.label == "cat"  # one class whatever the case
    assert project.label_counts() == {"cat": 2}
    assert [f for f in project.tmp_dir.iterdir() if f.is_file()] == []


def test_review_after_a_delete_reuses_the_last_search_and_gives_the_same_groups(tmp_path, monkeypatch):
    from tl_app import review

    src = tmp_path / "src" / "scenes"
    src.mkdir(parents=True)
    for i in range(60):
        imagegen.scene(i, size=(96, 72)).save(src / f"{i:02d}.png")
    base = imagegen.scene(5, size=(160, 120))
    base.crop((6, 4, 154, 116)).save(src / "copy-a.png")   # three copies of scene 5 beside it
    base.resize((120, 90)).save(src / "copy-b.png")
    base.crop((0, 8, 160, 112)).save(src / "copy-c.png")
    project = Project.open(tmp_path / "proj", create=True)
    import_files(project, [src.parent])
    review._MATCHES.clear()
    groups = review.duplicate_groups(project)
    assert [len(g.items) for g in groups] == [4]
    searched = []
    real = dupes.find_matches
    monkeypatch.setattr(dupes, "find_matches", lambda prints, **kw: searched.append(len(prints)) or real(prints, **kw))
    review.duplicate_groups(project)
    assert searched == []  # the same pictures: no search at all
    project.delete([groups[0].first.id])
    after = review.duplicate_groups(project)
    assert searched and max(searched) < 10  # only the group that lost a picture was searched again
    review._MATCHES.clear()
    for f in project.cache_dir.glob("matches-*.npz"):
        f.unlink()
    fresh = review.duplicate_groups(project)
    assert [sorted(it.id for it in g.items) for g in after] == [sorted(it.id for it in g.items) for g in fresh]
    assert [len(g.items) for g in after] == [3]


def test_galleries_come_in_pages_and_more_adds_the_next(tmp_path):
    """The Search tab's gallery and Review's show a first page; "Show more" adds the next, over the API too."""
    from gradio_client import Client

    from e2e.harness import serve
    from tl_app.ui.review_tab import ALL, SHOWN
    from tl_app.ui.search_tab import BROWSE_LIMIT

    src = tmp_path / "src" / "a"
    src.mkdir(parents=True)
    for i in range(150):  # 40 px: every one is also a poor (tiny) picture, so Review lists them all
        _picture(i, size=(40, 40)).save(src / f"{i:03d}.png")
    project = Project.open(tmp_path / "proj", create=True)
    import_files(project, [src.parent])
    with serve(project.root) as srv:
        c = Client(srv.url, verbose=False, download_files=False)
        first, _, note, = c.predict("a", api_name="/browse")
        assert len(first) == BROWSE_LIMIT == 60 and "60 newest of 150" in note
        more = c.predict("a", "", api_name="/browse_more")[0]
        assert len(more) == 120 and [g["caption"] for g in more[:60]] == [g["caption"] for g in first]
        assert len({g["caption"] for g in more}) == 120  # the next pictures, none twice
        rest = c.predict("a", "", api_name="/browse_more")[0]
        assert len(rest) == 150
        newest_first = [it.display_name for it in project.items(newest=150)]
        assert [g["caption"].split(" ", 1)[1] for g in rest] == newest_first

        page = c.predict(ALL, "", "", "strict", None, api_name="/review")[2]
        assert len(page) == SHOWN and all(g["caption"].endswith("poor picture") for g in page)
        two = c.predict(ALL, "", "", "strict", None, "", api_name="/review_more")[2]
        assert len(two) == 2 * SHOWN and [g["caption"] for g in two[:SHOWN]] == [g["caption"] for g in page]
        assert len({g["caption"] for g in two}) == 2 * SHOWN


def test_a_duplicate_search_is_kept_on_disk_for_the_next_process(tmp_path, monkeypatch):
    from tl_app import review

    src = tmp_path / "src" / "scenes"
    src.mkdir(parents=True)
    for i in range(30):
        imagegen.scene(i, size=(96, 72)).save(src / f"{i:02d}.png")
    base = imagegen.scene(5, size=(160, 120))
    base.crop((6, 4, 154, 116)).save(src / "copy-a.png")
    base.transpose(0).save(src / "mirrored.png")
    project = Project.open(tmp_path / "proj", create=True)
    import_files(project, [src.parent])
    review._MATCHES.clear()
    strict, loose = review.duplicate_groups(project), review.duplicate_groups(project, loose=True)
    assert [len(g.items) for g in strict] == [2] and [len(g.items) for g in loose] == [3]  # the mirrored copy joins

    def ids(groups):
        return [([it.id for it in g.items], [r.to_dict() for r in g.rows], g.kind) for g in groups]

    searched = []
    real = dupes.find_matches
    monkeypatch.setattr(dupes, "find_matches", lambda prints, **kw: searched.append(len(prints)) or real(prints, **kw))
    review._MATCHES.clear()  # what a new process has in memory: nothing
    assert ids(review.duplicate_groups(project)) == ids(strict)
    assert ids(review.duplicate_groups(project, loose=True)) == ids(loose)
    assert searched == []  # read from cache/, not searched again
    # A search made by another version of the copy finder is not used.
    monkeypatch.setitem(review._CODE, "code", "another")
    review._MATCHES.clear()
    assert ids(review.duplicate_groups(project)) == ids(strict) and searched
