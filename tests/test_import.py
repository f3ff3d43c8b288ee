"""Import from folders, zip files and single files: what gets in, what is refused and why."""

from __future__ import annotations

import zipfile
from pathlib import Path

import pytest
from PIL import Image

import hostile
import imagegen
from tl_app import config
from tl_app.errors import InvalidLabel
from tl_app.importer import import_files
from tl_app.jobs import Progress, StopToken


def stored_files(project) -> set[Path]:
    return hostile.files_under(project.images_dir)


def active_paths(project) -> set[Path]:
    return {project.path_of(it) for it in project.items()}


def assert_clean(project):
    """Nothing half-written: tmp/ is empty and images/ holds exactly the active items."""
    assert list(project.tmp_dir.iterdir()) == []
    assert stored_files(project) == active_paths(project)


def reasons(report) -> dict[str, str]:
    return {r.file: r.reason for r in report.rejected}


# --- hostile and awkward files ------------------------------------------------------------


def test_each_hostile_file_is_refused_with_its_reason_and_the_rest_imported(project, tmp_path):
    bad = hostile.hostile()
    src = hostile.write_files(tmp_path / "src" / "cat", {n: d for n, (d, _) in bad.items()})
    for i in range(3):
        (src / f"good{i}.png").write_bytes(hostile.png(seed=500 + i))

    rep = import_files(project, [tmp_path / "src"])

    assert rep.imported == 3 and rep.duplicates == 0
    got = reasons(rep)
    assert set(got) == {str(src / n) for n in bad}, "every hostile file is listed under its own name"
    for name, (_, words) in bad.items():
        reason = got[str(src / name)]
        assert any(w.lower() in reason.lower() for w in words), f"{name}: {reason!r}"
    assert rep.labels == {"cat": 3}
    assert_clean(project)
    assert "3 imported" in rep.summary() and f"{len(bad)} refused" in rep.summary()


def test_awkward_files_are_stored_as_upright_rgb_jpegs(project, tmp_path):
    cases = hostile.awkward()
    src = hostile.write_files(tmp_path / "src" / "mixed", {n: c.data for n, c in cases.items()})

    rep = import_files(project, [tmp_path / "src"])

    assert rep.rejected == [] and rep.imported == len(cases)
    by_source = {it.source: it for it in project.items()}
    for name, case in cases.items():
        it = by_source[str(src / name)]
        path = project.path_of(it)
        assert path.parent == project.images_dir / "mixed" and path.suffix == ".jpg"
        assert path.name.isascii() and " " not in path.name  # stored under a name the app chose
        with Image.open(path) as im:
            assert (im.format, im.mode, im.size) == ("JPEG", "RGB", case.size), name
            assert (it.width, it.height) == case.size
            for xy, want in case.pixels.items():
                assert hostile.close(im.getpixel(xy), want), f"{name} at {xy}: {im.getpixel(xy)} != {want}"
    assert_clean(project)


def test_non_ascii_and_spaces_survive_in_the_recorded_source(project, tmp_path):
    folder = tmp_path / "mes photos" / "chat noir"
    folder.mkdir(parents=True)
    (folder / "chat noir é.png").write_bytes(hostile.png(seed=20))
    rep = import_files(project, [tmp_path / "mes photos"])
    assert rep.imported == 1
    (it,) = project.items()
    assert it.label == "chat noir" and it.source == str(folder / "chat noir é.png")
    assert project.path_of(it).exists()


# --- duplicates ---------------------------------------------------------------------------


def test_exact_duplicates_are_skipped_and_counted_within_and_across_imports(project, tmp_path):
    pic = hostile.picture(seed=30)
    src = tmp_path / "src"
    hostile.write_files(src / "cat", {
        "a.png": imagegen.encode(pic, "PNG"),
        "a copy.png": imagegen.encode(pic, "PNG"),   # same bytes twice
        "a.bmp": imagegen.encode(pic, "BMP"),        # same picture, another format
        "b.png": hostile.png(seed=31),
    })
    rep = import_files(project, [src])
    assert (rep.imported, rep.duplicates) == (2, 2)
    assert rep.labels == {"cat": 2}

    # The same pictures again, even under another class name: nothing new.
    hostile.write_files(tmp_path / "again" / "dog", {"x.png": imagegen.encode(pic, "PNG"),
                                                     "y.bmp": imagegen.encode(hostile.picture(seed=31), "BMP")})
    rep2 = import_files(project, [tmp_path / "again"])
    assert (rep2.imported, rep2.duplicates) == (0, 2)
    assert len(project.items()) == 2 and {it.label for it in project.items()} == {"cat"}
    assert "2 duplicates skipped" in rep2.summary()
    assert_clean(project)
    assert not (project.images_dir / "dog").exists()  # no class, and no empty folder left for one


def test_pictures_are_listed_in_the_order_they_were_imported(project, tmp_path):
    """Galleries and "newest first" follow the order files were read in (not the pictures' hashes),
    within a batch as across batches."""
    names = [f"{i:02d}.png" for i in range(40)]
    hostile.write_files(tmp_path / "src" / "cat", {n: hostile.png(seed=700 + i) for i, n in enumerate(names)})
    import_files(project, [tmp_path / "src"])
    assert [Path(it.source).name for it in project.items()] == names
    assert [Path(it.source).name for it in project.items(newest=5)] == names[::-1][:5]


def test_a_deleted_picture_imported_again_counts_as_duplicate(project, tmp_path):
    f = tmp_path / "one" / "cat" / "a.png"
    f.parent.mkdir(parents=True)
    f.write_bytes(hostile.png(seed=32))
    import_files(project, [tmp_path / "one"])
    project.delete([project.items()[0].id])
    rep = import_files(project, [tmp_path / "one"])
    assert (rep.imported, rep.duplicates) == (0, 1)
    assert project.items() == []


# --- labels from folder names ---------------------------------------------------------------

BAD_FOLDER_NAMES = ["a\\b", "   ", "x" * 65, "CON", "lpt1.photos", "ctl\x01char", "what?", "tab\tname", "ends with dot."]


def test_files_in_badly_named_class_folders_are_refused_and_the_others_imported(project, tmp_path):
    src = tmp_path / "src"
    for i, name in enumerate(BAD_FOLDER_NAMES):
        hostile.write_files(src / name, {"p.png": hostile.png(seed=40 + i)})
    hostile.write_files(src / "good", {"p.png": hostile.png(seed=99)})

    rep = import_files(project, [src])

    assert rep.imported == 1 and rep.labels == {"good": 1}
    got = reasons(rep)
    assert set(got) == {str(src / n / "p.png") for n in BAD_FOLDER_NAMES}
    for name in BAD_FOLDER_NAMES:
        assert "class name" in got[str(src / name / "p.png")] or "reserved" in got[str(src / name / "p.png")]
    assert {p.name for p in project.images_dir.iterdir()} == {"good"}
    assert project.labels() == ["good"]
    assert_clean(project)


def test_hidden_folders_and_system_junk_are_skipped_silently(project, tmp_path):
    src = tmp_path / "src"
    hostile.write_files(src / "cat", {"p.png": hostile.png(seed=50), ".DS_Store": b"\x00\x00\x00\x01Bud1",
                                      "Thumbs.db": b"junk", "._p.png": b"\x00\x05\x16\x07"})
    hostile.write_files(src / ".git", {"HEAD": b"ref: refs/heads/main\n"})
    hostile.write_files(src / "__MACOSX" / "cat", {"._p.png": b"\x00\x05\x16\x07"})
    rep = import_files(project, [src])
    assert (rep.imported, rep.rejected) == (1, [])
    assert project.labels() == ["cat"]


@pytest.mark.parametrize("bad", ["..", "../x", "a/b", "a\\b", "", "   ", "x" * 65, ".hidden", "con", "a\x00b"])
def test_an_invalid_label_option_is_refused_before_anything_is_written(project, tmp_path, bad):
    f = tmp_path / "p.png"
    f.write_bytes(hostile.png(seed=60))
    with pytest.raises(InvalidLabel):
        import_files(project, [f], label=bad)
    assert project.items() == [] and project.labels() == []
    assert list(project.images_dir.iterdir()) == []


# --- single files ---------------------------------------------------------------------------


def test_single_files_need_a_class(project, tmp_path):
    f = tmp_path / "p.png"
    f.write_bytes(hostile.png(seed=61))
    rep = import_files(project, [f])
    assert rep.imported == 0 and "no class given" in reasons(rep)[str(f)]
    rep = import_files(project, [f, tmp_path / "missing.jpg"], label="dog")
    assert rep.imported == 1 and rep.labels == {"dog": 1}
    assert "no such file" in reasons(rep)[str(tmp_path / "missing.jpg")]


def test_display_names_replace_temporary_upload_names(project, tmp_path):
    f = tmp_path / "gradio-tmp-83hd.bin"
    f.write_bytes(b"<html>nope</html>")
    rep = import_files(project, [f], label="cat", names={str(f): "holiday.jpg"})
    assert [(r.file, "web page" in r.reason) for r in rep.rejected] == [("holiday.jpg", True)]


# --- zip files ------------------------------------------------------------------------------


def test_zip_with_class_folders(project, tmp_path):
    z = hostile.make_zip(tmp_path / "pets.zip", {
        "cat/1.png": hostile.png(seed=70), "cat/2.jpg": hostile.jpeg(seed=71),
        "dog/1.png": hostile.png(seed=72), "dog/deeper/3.png": hostile.png(seed=73),
    })
    rep = import_files(project, [z])
    assert rep.rejected == [] and rep.labels == {"cat": 2, "dog": 2}
    assert {it.source for it in project.items()} == {
        "pets.zip!cat/1.png", "pets.zip!cat/2.jpg", "pets.zip!dog/1.png", "pets.zip!dog/deeper/3.png"}
    assert_clean(project)


def test_zip_wrapping_folder_is_skipped_and_junk_ignored(project, tmp_path):
    z = hostile.make_zip(tmp_path / "download.zip", {
        "dataset/": b"",
        "dataset/cat/1.png": hostile.png(seed=80),
        "dataset/dog/1.png": hostile.png(seed=81),
        "dataset/dog/.DS_Store": b"\x00\x00\x00\x01Bud1",
        "__MACOSX/dataset/cat/._1.png": b"\x00\x05\x16\x07\x00\x02",
        "dataset/cat/Thumbs.db": b"junk",
    })
    rep = import_files(project, [z])
    assert rep.rejected == [] and rep.labels == {"cat": 1, "dog": 1}


def test_zip_readme_beside_the_class_folders_does_not_merge_the_classes(project, tmp_path):
    z = hostile.make_zip(tmp_path / "download.zip", {
        "dataset/README.txt": b"Pictures of cats and dogs, CC-BY.\n",
        "dataset/cat/1.png": hostile.png(seed=82),
        "dataset/dog/1.png": hostile.png(seed=83),
    })
    rep = import_files(project, [z])
    assert rep.labels == {"cat": 1, "dog": 1}
    assert [(r.file, "text" in r.reason) for r in rep.rejected] == [("download.zip!dataset/README.txt", True)]


def test_zip_of_loose_pictures_takes_the_zip_name_as_class(project, tmp_path):
    z = hostile.make_zip(tmp_path / "kittens.zip", {"1.png": hostile.png(seed=84), "2.png": hostile.png(seed=85)})
    assert import_files(project, [z]).labels == {"kittens": 2}


def test_zip_bad_members_are_refused_while_the_rest_import(project, tmp_path, monkeypatch):
    good = {f"cat/{i}.png": hostile.png(seed=90 + i) for i in range(3)}
    z = hostile.make_zip(tmp_path / "mixed.zip", {
        **good,
        "cat/page.jpg": b"<!doctype html><html>blocked</html>",
        "cat/cut.jpg": hostile.jpeg(seed=95)[:700],
        "cat/corrupt.bmp": imagegen.encode(Image.new("RGB", (200, 200), (1, 2, 3)), "BMP"),
        "cat/locked.png": hostile.png(seed=96),
        "cat/huge.png": b"\x00" * 300_000,
        "CON/x.png": hostile.png(seed=97),  # a member's folder becomes a class name: validated
    })
    hostile.corrupt_member(z, "cat/corrupt.bmp")
    hostile.encrypt_flag(z, "cat/locked.png")
    monkeypatch.setattr(config, "MAX_IMPORT_BYTES", 200_000)  # "huge" is over it

    rep = import_files(project, [z])

    assert rep.imported == 3 and rep.labels == {"cat": 3}
    got = reasons(rep)
    assert "web page" in got["mixed.zip!cat/page.jpg"]
    assert "truncated" in got["mixed.zip!cat/cut.jpg"]
    assert "damaged inside the zip" in got["mixed.zip!cat/corrupt.bmp"]
    assert "password" in got["mixed.zip!cat/locked.png"]
    assert "too large" in got["mixed.zip!cat/huge.png"]
    assert "reserved" in got["mixed.zip!CON/x.png"]
    assert len(got) == 6 and not (project.images_dir / "CON").exists()
    assert_clean(project)


def test_zip_member_paths_never_write_outside_the_project(project, tmp_path):
    outside_before = {p for p in tmp_path.rglob("*") if project.root not in p.parents and p != project.root}
    z = hostile.make_zip(tmp_path / "evil.zip", {
        "../evil.png": hostile.png(seed=100),
        "../../outside/evil.png": hostile.png(seed=101),
        "cat/../../evil3.png": hostile.png(seed=102),
        "..\\win\\evil4.png": hostile.png(seed=103),
        "/abs/evil5.png": hostile.png(seed=104),
        "cat/ok.png": hostile.png(seed=105),
    })
    rep = import_files(project, [z])

    outside_after = {p for p in tmp_path.rglob("*") if project.root not in p.parents and p != project.root}
    assert outside_after - outside_before == {z}
    assert not (tmp_path.parent / "evil.png").exists() and not (tmp_path.parent / "outside").exists()
    # Each unsafe member is named with a reason; only the safe one is imported.
    got = reasons(rep)
    assert set(got) == {f"evil.zip!{n}" for n in ("../evil.png", "../../outside/evil.png", "cat/../../evil3.png",
                                                  "..\\win\\evil4.png", "/abs/evil5.png")}
    assert all("outside the archive" in r for r in got.values())
    assert rep.imported == 1 and project.labels() == ["cat"]
    (it,) = project.items()
    assert project.path_of(it).parent == project.images_dir / "cat"
    assert_clean(project)


def test_a_damaged_zip_file_is_reported(project, tmp_path):
    z = tmp_path / "broken.zip"
    good = hostile.make_zip(tmp_path / "tmp.zip", {"cat/1.png": hostile.png(seed=110)}).read_bytes()
    z.write_bytes(good[: len(good) // 2])  # no central directory: not recognised as a zip
    rep = import_files(project, [z], label="cat")
    assert rep.imported == 0 and len(rep.rejected) == 1 and rep.rejected[0].file == str(z)


# --- progress and stop ----------------------------------------------------------------------


def test_progress_reports_every_file_and_stop_ends_the_import_cleanly(project, tmp_path):
    src = imagegen.class_folder(tmp_path / "src", per_class=20)
    seen: list[Progress] = []
    rep = import_files(project, [src], progress=seen.append)
    assert seen[0].done == 0 and seen[-1].done == seen[-1].total == 40
    assert rep.imported == 40

    other = project.root.parent / "other"
    from tl_app.project import Project

    p2 = Project.open(other, create=True)
    stop = StopToken()

    def stop_after_five(p: Progress) -> None:
        if p.done >= 5:
            stop.set()

    rep2 = import_files(p2, [src], progress=stop_after_five, stop=stop)
    assert rep2.stopped and 5 <= rep2.imported < 40
    assert "stopped" in rep2.summary()
    assert_clean(p2)


def test_many_workers_give_the_same_dataset_as_one(tmp_path):
    from tl_app.project import Project

    src = imagegen.class_folder(tmp_path / "src", per_class=10, classes=("red", "blue", "green"))
    shas = []
    for workers in (1, 4):
        p = Project.open(tmp_path / f"p{workers}", create=True)
        import_files(p, [src], workers=workers)
        shas.append(sorted((it.label, it.sha256, it.source) for it in p.items()))
    assert shas[0] == shas[1] and len(shas[0]) == 30


def test_threads_and_helper_processes_give_the_same_import_with_refusals_in_order(tmp_path, monkeypatch):
    """Decoded on one thread, two, or two helper processes: the same pictures, refusals (in order,
    with their reasons) and duplicates, from a folder and from a zip."""
    from tl_app import importer
    from tl_app.project import Project

    monkeypatch.setattr(importer, "_THREADS_WHILE_STARTING", False)  # every file on the helpers

    src = imagegen.class_folder(tmp_path / "src", per_class=30, classes=("red", "blue", "green"), size=(40, 40))
    (src / "red" / "again.png").write_bytes((src / "red" / "3.png").read_bytes())  # a copy
    (src / "blue" / "cut.png").write_bytes((src / "blue" / "4.png").read_bytes()[:200])  # truncated
    (src / "blue" / "notes.txt").write_text("not a picture")
    (src / "green" / "deeper").mkdir()  # a folder in a class folder: its pictures are of that class
    (src / "green" / "deeper" / "x.png").write_bytes((src / "green" / "5.png").read_bytes())  # a copy
    z = hostile.make_zip(tmp_path / "more.zip", {
        **{f"cat/{i}.png": hostile.png(seed=200 + i) for i in range(20)},
        "cat/page.jpg": b"<!doctype html><html>blocked</html>",
        "CON/y.png": hostile.png(seed=230),
        "cat/dup.png": hostile.png(seed=201),
    })
    got = []
    for workers, processes in ((1, False), (2, False), (2, True)):
        p = Project.open(tmp_path / f"p{workers}{processes}", create=True)
        rep = import_files(p, [src, z], workers=workers, processes=processes)
        got.append(((rep.imported, rep.duplicates), [(r.file, r.reason) for r in rep.rejected],
                    sorted((it.label, it.sha256, it.source) for it in p.items()), rep.labels))
        assert_clean(p)
    assert got[0] == got[1] == got[2]
    (imported, duplicates), rejected, _, labels = got[0]
    assert (imported, duplicates) == (110, 3) and labels == {"red": 30, "blue": 30, "green": 30, "cat": 20}
    assert [f.rsplit("/", 1)[-1] if "!" not in f else f for f, _ in rejected] == [
        "cut.png", "notes.txt", "more.zip!cat/page.jpg", "more.zip!CON/y.png"]
    assert "truncated" in rejected[0][1] and "reserved" in rejected[3][1]


def test_when_a_helper_process_dies_the_import_goes_on_threads(tmp_path, monkeypatch):
    from tl_app import importer
    from tl_app.project import Project

    src = imagegen.class_folder(tmp_path / "src", per_class=40, size=(40, 40))
    (src / "red" / "die.png").write_bytes(hostile.png(seed=300))
    monkeypatch.setattr(importer, "_stage_chunk", hostile.stage_chunk_or_die)
    monkeypatch.setattr(importer, "_THREADS_WHILE_STARTING", False)  # die.png goes to a helper
    p = Project.open(tmp_path / "p", create=True)
    rep = import_files(p, [src], processes=True, workers=2)
    assert (rep.imported, rep.duplicates, rep.rejected) == (81, 0, [])  # die.png too, on a thread
    assert p.label_counts() == {"blue": 40, "red": 41}
    assert_clean(p)


@pytest.mark.parametrize("threads_first", [False, True])
def test_a_stop_on_helper_processes_keeps_what_is_reported_and_leaves_no_staged_file(tmp_path, monkeypatch,
                                                                                      threads_first):
    from tl_app import importer
    from tl_app.project import Project

    monkeypatch.setattr(importer, "_THREADS_WHILE_STARTING", threads_first)

    src = imagegen.class_folder(tmp_path / "src", per_class=200, size=(48, 48), classes=("red", "blue"))
    p = Project.open(tmp_path / "p", create=True)
    stop = StopToken()

    def stop_at_60(pr: Progress) -> None:
        if pr.done >= 60:
            stop.set()

    rep = import_files(p, [src], progress=stop_at_60, stop=stop, processes=True, workers=2)
    assert rep.stopped and rep.read == 60 and rep.imported == 60 == len(p.items()) == len(rep.items)
    assert_clean(p)  # what the helpers had staged beyond the stop is gone


def test_zip_file_name_is_not_trusted_for_the_extension(project, tmp_path):
    """A zip that is not named .zip is refused as an archive, not opened as a picture."""
    z = hostile.make_zip(tmp_path / "photo.jpg", {"cat/1.png": hostile.png(seed=120)})
    assert zipfile.is_zipfile(z)
    rep = import_files(project, [z], label="cat")
    assert rep.imported == 0 and "zip" in rep.rejected[0].reason


def test_a_stop_after_the_first_batch_keeps_what_was_decoded_and_undo_takes_it_out(project, tmp_path):
    # A few hundred small pictures; the stop comes once the first batch is in the project.
    src = imagegen.class_folder(tmp_path / "src", per_class=150, size=(48, 48), classes=("red", "blue"))
    stop = StopToken()
    in_project: list[int] = []

    def stop_after_first_batch(p: Progress) -> None:
        n = len(project.items())
        if n and not in_project:
            in_project.append(n)
            stop.set()

    rep = import_files(project, [src], progress=stop_after_first_batch, stop=stop)
    first = in_project[0]
    assert rep.stopped and 0 < first < 300
    # What was in the project when Stop came stays, with what was decoded by then (added while the
    # first batch went in), and nothing else: the report tells exactly what the project holds.
    assert first <= rep.imported == len(project.items()) == len(rep.items) < 300
    assert rep.files == 300 and rep.read < 300
    assert f"{rep.imported} imported" in rep.summary() and f"stopped after {rep.read} of 300 files" in rep.summary()
    assert rep.to_dict()["stopped"] is True
    assert_clean(project)

    # What the stopped import kept is one undoable step: undo moves it to the trash, redo brings it back.
    a = project.undo()
    assert a.kind == "add" and str(rep.imported) in a.summary and "stopped" in a.summary
    assert project.items() == [] and project.labels() == []  # the classes the import made leave again
    project.redo()
    assert sorted(it.id for it in project.items()) == sorted(rep.items)
    assert_clean(project)


def test_a_finished_import_is_not_an_undo_step(project, colour_folder):
    import_files(project, [colour_folder])
    assert not project.can_undo()
