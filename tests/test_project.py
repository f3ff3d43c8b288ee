"""The project store: labels, item ids, undoable actions, and repair after a crash."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import time
import unicodedata
from pathlib import Path

import pytest

import hostile
import imagegen
from tl_app.errors import InvalidLabel, ItemNotFound, NothingToUndo, OutsideProject, ProjectNotFound
from tl_app.images import normalize, sha256_file
from tl_app.importer import import_files
from tl_app.project import NewImage, Project, inside, validate_item_id, validate_label

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def filled_template(tmp_path_factory):
    base = tmp_path_factory.mktemp("filled")
    project = Project.open(base / "proj", create=True)
    rep = import_files(project, [imagegen.class_folder(base / "src", per_class=12)])
    assert rep.imported == 24
    return project.root


@pytest.fixture
def filled(filled_template, tmp_path):
    """A project with red/ and blue/ holding 12 pictures each (a fresh copy per test)."""
    shutil.copytree(filled_template, tmp_path / "filled")
    return Project.open(tmp_path / "filled")


def snapshot(project: Project) -> dict[str, tuple[str, str]]:
    """item -> (path relative to the project, sha256 of the file) for every active item."""
    return {it.id: (str(project.path_of(it).relative_to(project.root)), sha256_file(project.path_of(it)))
            for it in project.items()}


def db(project: Project, sql: str, *args) -> None:
    con = sqlite3.connect(project.db_path)
    with con:
        con.execute(sql, args)
    con.close()


def assert_consistent(project: Project) -> None:
    """Every active row has its file, and every file in images/ has an active row."""
    active = {project.path_of(it) for it in project.items()}
    assert all(p.exists() for p in active)
    assert hostile.files_under(project.images_dir) == active


# --- labels -------------------------------------------------------------------------------

BAD_LABELS = ["..", ".", "a/b", "a\\b", "../../etc", "", "   ", "\t\n", "x" * 65, ".hidden", "ctl\x07",
              "nul\x00byte", "CON", "con", "Aux", "com1", "LPT9.txt", "what?", "a:b", 'say"hi"', "dot.", "a|b"]


@pytest.mark.parametrize("bad", BAD_LABELS)
def test_add_label_refuses_names_that_cannot_be_folders(project, bad):
    with pytest.raises(InvalidLabel) as e:
        project.add_label(bad)
    assert str(e.value)  # a message a person can act on
    assert project.labels() == []
    assert list(project.images_dir.iterdir()) == []
    assert not (project.root.parent / "etc").exists()


def test_label_names_are_normalised_and_matched_without_case(project):
    assert project.add_label("  chat noir  ") == "chat noir"
    decomposed = unicodedata.normalize("NFD", "café")  # what macOS folder names look like
    assert project.add_label(decomposed) == unicodedata.normalize("NFC", "café")
    assert project.add_label("CHAT NOIR") == "chat noir"
    assert project.add_label("x" * 64) == "x" * 64
    assert project.labels() == ["chat noir", "café", "x" * 64]
    assert {p.name for p in project.images_dir.iterdir()} == {"chat noir", "café", "x" * 64}


def test_validate_label_returns_the_stored_form():
    assert validate_label(" 狗 ") == "狗"
    assert validate_label("a.b") == "a.b"
    with pytest.raises(InvalidLabel, match="too long"):
        validate_label("y" * 65)
    with pytest.raises(InvalidLabel, match="reserved"):
        validate_label("PRN")


def test_inside_keeps_paths_in_the_project(project, tmp_path):
    assert inside(project.images_dir, "cat/x.jpg") == project.images_dir / "cat" / "x.jpg"
    for bad in ("../x", "cat/../../x", "/etc/passwd", str(tmp_path)):
        with pytest.raises(OutsideProject):
            inside(project.images_dir, bad)
    (project.images_dir / "link").symlink_to(tmp_path)  # a symlink that leads out
    with pytest.raises(OutsideProject):
        inside(project.images_dir, "link/x.jpg")


# --- item ids -----------------------------------------------------------------------------

BAD_IDS = ["../x", "../../project.db", "/etc/passwd", "random-string", "", "   ", "cat/abc.jpg", "0" * 65,
           "deadbeef", "abcdef0123456789", "ABCDEF12/../x", "\x00"]


@pytest.mark.parametrize("bad", BAD_IDS)
def test_ids_from_outside_are_refused_by_delete_relabel_keep_and_item(filled, bad):
    before = snapshot(filled)
    for act in (lambda: filled.delete([bad]), lambda: filled.relabel([bad], "blue"),
                lambda: filled.keep([bad]), lambda: filled.item(bad)):
        with pytest.raises(ItemNotFound):
            act()
    assert snapshot(filled) == before and filled.history() == []


def test_validate_item_id_accepts_only_the_form_the_app_gives():
    assert validate_item_id(" ABCDEF012345 ") == "abcdef012345"
    with pytest.raises(ItemNotFound):
        validate_item_id("abc")


def test_a_bad_id_among_good_ones_changes_nothing(filled):
    before = snapshot(filled)
    good = filled.items()[0].id
    with pytest.raises(ItemNotFound):
        filled.delete([good, "../etc/passwd"])
    with pytest.raises(ItemNotFound):
        filled.delete([good, "feedfacefeed"])
    assert snapshot(filled) == before


def test_open_without_a_project_says_so(tmp_path):
    with pytest.raises(ProjectNotFound):
        Project.open(tmp_path / "nothing")
    assert not (tmp_path / "nothing").exists()
    f = tmp_path / "file"
    f.write_text("x")
    with pytest.raises(ProjectNotFound):
        Project.open(f, create=True)


# --- delete, relabel, keep and their undo ---------------------------------------------------


def test_delete_moves_the_file_to_the_trash_and_undo_restores_it_byte_for_byte(filled):
    it = filled.items(label="red")[0]
    path, sha = filled.path_of(it), sha256_file(filled.path_of(it))

    a = filled.delete([it.id])

    assert not path.exists()
    gone = filled.item(it.id)
    trashed = filled.path_of(gone)
    assert gone.status == "deleted" and trashed.parent.parent == filled.trash_dir and sha256_file(trashed) == sha
    assert it.id not in {x.id for x in filled.items()}
    assert a.kind == "delete" and a.summary == "deleted 1 image"

    u = filled.undo()

    assert u.id == a.id and u.state == "undone"
    assert path.exists() and sha256_file(path) == sha and not trashed.exists()
    assert filled.item(it.id).status == "active" and filled.label_counts() == {"red": 12, "blue": 12}
    assert_consistent(filled)


def test_multi_item_delete_is_one_action_and_one_undo(filled):
    before = snapshot(filled)
    ids = [it.id for it in filled.items()[:5]] + [filled.items()[0].id]  # a repeated id counts once
    a = filled.delete(ids)
    assert a.summary == "deleted 5 images" and len(filled.items()) == 19
    assert len(filled.history()) == 1
    filled.undo()
    assert snapshot(filled) == before


def test_relabel_moves_the_file_and_undo_moves_it_back(filled):
    before = snapshot(filled)
    it = filled.items(label="red")[0]
    a = filled.relabel([it.id], "purple")
    moved = filled.item(it.id)
    assert moved.label == "purple" and filled.path_of(moved).parent.name == "purple"
    assert sha256_file(filled.path_of(moved)) == before[it.id][1]
    assert a.summary == "moved 1 image to 'purple'"
    assert filled.label_counts() == {"red": 11, "blue": 12, "purple": 1}
    filled.undo()
    assert snapshot(filled) == before
    assert_consistent(filled)


def test_relabel_refuses_bad_targets_and_no_ops(filled):
    before = snapshot(filled)
    it = filled.items(label="red")[0]
    with pytest.raises(InvalidLabel):
        filled.relabel([it.id], "../blue")
    with pytest.raises(ItemNotFound, match="already"):
        filled.relabel([it.id], "RED")  # the same class, whatever the case
    assert snapshot(filled) == before and filled.history() == []


def test_redo_after_undo_and_a_new_action_clears_redo(filled):
    a, b = filled.items(label="red")[:2]
    filled.delete([a.id])
    filled.undo()
    assert filled.can_redo()
    r = filled.redo()
    assert r.state == "done" and filled.item(a.id).status == "deleted"
    assert not filled.path_of(a).exists()  # a is the active-row snapshot: its images/ path
    filled.undo()
    assert filled.item(a.id).status == "active" and filled.can_redo()

    filled.relabel([b.id], "blue")  # a new action
    assert not filled.can_redo()
    with pytest.raises(NothingToUndo):
        filled.redo()
    assert filled.item(a.id).status == "active"  # the voided delete stays undone
    assert [h.kind for h in filled.history()] == ["relabel"]


def test_undo_and_redo_walk_the_history_in_order(filled):
    before = snapshot(filled)
    r1, r2 = filled.items(label="red")[:2]
    filled.delete([r1.id])
    filled.relabel([r2.id], "blue")
    filled.keep([r2.id])
    after = snapshot(filled)
    kept_after = filled.kept()

    assert [filled.undo().kind for _ in range(3)] == ["keep", "relabel", "delete"]
    assert snapshot(filled) == before and filled.kept() == set()
    with pytest.raises(NothingToUndo):
        filled.undo()

    assert [filled.redo().kind for _ in range(3)] == ["delete", "relabel", "keep"]
    assert snapshot(filled) == after and filled.kept() == kept_after == {r2.id}
    with pytest.raises(NothingToUndo):
        filled.redo()
    assert_consistent(filled)


def test_undo_with_empty_history_says_there_is_nothing_to_undo(project):
    assert not project.can_undo() and not project.can_redo()
    with pytest.raises(NothingToUndo, match="nothing to undo"):
        project.undo()
    with pytest.raises(NothingToUndo, match="nothing to redo"):
        project.redo()


def test_keep_and_its_undo(filled):
    a, b = [it.id for it in filled.items()[:2]]
    k = filled.keep([a, b])
    assert k.summary == "kept 2 images" and filled.kept() == {a, b}
    filled.undo()
    assert filled.kept() == set()
    filled.redo()
    assert filled.kept() == {a, b}
    filled.keep([a])  # keeping again and undoing that leaves the first keep in place
    filled.undo()
    assert filled.kept() == {a, b}


def test_deleting_a_deleted_item_is_refused(filled):
    it = filled.items()[0]
    filled.delete([it.id])
    with pytest.raises(ItemNotFound, match="deleted"):
        filled.delete([it.id])
    with pytest.raises(ItemNotFound):
        filled.relabel([it.id], "blue")


def test_undo_after_the_trash_was_emptied_explains_and_moves_on(filled):
    a, b, c = filled.items(label="red")[:3]
    filled.relabel([a.id], "blue")
    filled.delete([b.id, c.id])
    (filled.root / filled.item(b.id).trash_file).unlink()  # the user empties part of trash/
    c_trashed = filled.root / filled.item(c.id).trash_file

    with pytest.raises(ItemNotFound, match="removed outside the app") as e:
        Project.open(filled.root).undo()  # opening first (as the CLI does) must not change the outcome

    assert "deleted 2 images" in str(e.value) and "\n" not in str(e.value)
    assert c_trashed.exists() and filled.item(c.id).status == "deleted"  # nothing half-undone
    assert [h.kind for h in filled.history()] == ["relabel"]  # the broken step left the history
    assert filled.undo().kind == "relabel"  # and undo reaches the step before it
    assert filled.item(a.id).label == "red"
    assert_consistent(filled)


def test_redo_of_a_file_removed_by_hand_explains_and_moves_on(filled):
    a = filled.items()[0]
    filled.delete([a.id])
    filled.undo()
    filled.path_of(a).unlink()
    with pytest.raises(ItemNotFound, match="Cannot redo"):
        filled.redo()
    assert not filled.can_redo() and not filled.can_undo()


def test_a_failed_move_puts_every_file_and_row_back(filled, monkeypatch):
    """If the second rename of a delete fails, the first is undone and nothing is recorded."""
    before = snapshot(filled)
    ids = [it.id for it in filled.items()[:3]]
    real_replace = os.replace
    calls = []

    def flaky(src, dst):
        calls.append(src)
        if len(calls) == 2:
            raise OSError(28, "No space left on device")
        return real_replace(src, dst)

    monkeypatch.setattr(os, "replace", flaky)
    with pytest.raises(OSError):
        filled.delete(ids)
    monkeypatch.setattr(os, "replace", real_replace)
    assert snapshot(filled) == before and filled.history() == []
    assert_consistent(filled)


# --- repair after a crash ---------------------------------------------------------------------


def test_reconcile_on_a_healthy_project_changes_nothing(filled):
    before = snapshot(filled)
    rep = Project.open(filled.root).reconcile()
    assert (rep.moved_back, rep.finished_deletes, rep.missing, rep.orphans, rep.temp_removed) == (0, 0, [], [], 0)
    assert snapshot(filled) == before


def _crash_after_moves(monkeypatch):
    """Make the next action die after its renames, before its transaction commits."""
    def moves_then_die(self, moves):
        for src, dst in moves:
            dst.parent.mkdir(parents=True, exist_ok=True)
            os.replace(src, dst)
        raise KeyboardInterrupt  # the process "dies": the transaction rolls back

    monkeypatch.setattr(Project, "_move_all", moves_then_die)


def test_delete_interrupted_before_commit_is_reverted(filled, monkeypatch):
    before = snapshot(filled)
    ids = [it.id for it in filled.items()[:2]]
    _crash_after_moves(monkeypatch)
    with pytest.raises(KeyboardInterrupt):
        filled.delete(ids)
    monkeypatch.undo()
    assert not Path(filled.root / before[ids[0]][0]).exists()  # the file is in the trash, the row is active

    rep = Project(filled.root).reconcile()
    assert rep.moved_back == 2
    assert snapshot(filled) == before and filled.history() == []
    assert_consistent(filled)


def test_delete_committed_but_file_still_in_images_is_finished(filled):
    it = filled.items(label="blue")[0]
    sha = sha256_file(filled.path_of(it))
    db(filled, "UPDATE items SET status='deleted', trash_file=? WHERE id=?", f"trash/9/{it.id}.jpg", it.id)

    rep = Project(filled.root).reconcile()

    assert rep.finished_deletes == 1
    trashed = filled.root / "trash" / "9" / f"{it.id}.jpg"
    assert sha256_file(trashed) == sha
    assert not (filled.images_dir / it.file).exists()
    assert_consistent(filled)


def test_relabel_interrupted_before_commit_is_reverted(filled, monkeypatch):
    before = snapshot(filled)
    it = filled.items(label="red")[0]
    _crash_after_moves(monkeypatch)
    with pytest.raises(KeyboardInterrupt):
        filled.relabel([it.id], "blue")
    monkeypatch.undo()
    assert (filled.images_dir / "blue" / f"{it.id}.jpg").exists()  # file moved, row still says red

    p = Project.open(filled.root)  # opening repairs
    assert snapshot(p) == before
    assert_consistent(p)


def test_relabel_committed_but_file_left_in_the_old_class_folder_is_moved(filled):
    it = filled.items(label="red")[0]
    sha = sha256_file(filled.path_of(it))
    db(filled, "UPDATE items SET label='blue', file=? WHERE id=?", f"blue/{it.id}.jpg", it.id)

    rep = Project(filled.root).reconcile()

    assert rep.moved_back == 1 and rep.orphans == []
    assert sha256_file(filled.images_dir / "blue" / f"{it.id}.jpg") == sha
    assert not (filled.images_dir / "red" / f"{it.id}.jpg").exists()
    assert_consistent(filled)


def test_a_stray_file_in_images_goes_to_trash_recovered_not_away(filled):
    stray = filled.images_dir / "red" / "dropped by hand.jpg"
    data = hostile.jpeg(seed=200)
    stray.write_bytes(data)
    (filled.images_dir / "newclass").mkdir()
    (filled.images_dir / "newclass" / "x.png").write_bytes(hostile.png(seed=201))

    rep = Project(filled.root).reconcile()

    assert sorted(rep.orphans) == ["newclass/x.png", "red/dropped by hand.jpg"]
    assert not stray.exists()
    assert (filled.trash_dir / "recovered" / "red" / "dropped by hand.jpg").read_bytes() == data
    assert (filled.trash_dir / "recovered" / "newclass" / "x.png").exists()
    assert_consistent(filled)
    assert len(filled.items()) == 24


def test_stale_temp_files_of_dead_processes_are_removed(filled):
    pid_max = int(Path("/proc/sys/kernel/pid_max").read_text()) if Path("/proc/sys/kernel/pid_max").exists() else 4_194_304
    dead = filled.tmp_dir / f"{pid_max + 1}-abcdef.part"  # no process can have this pid
    nameless = filled.tmp_dir / "leftover.part"
    mine = filled.temp_path()  # a live process's file (ours) is being written: keep it
    for f in (dead, nameless, mine):
        f.write_bytes(b"half a jpeg")

    rep = Project(filled.root).reconcile()

    assert rep.temp_removed == 2
    assert not dead.exists() and not nameless.exists() and mine.exists()
    mine.unlink()


def test_pictures_an_import_writes_in_place_are_left_alone_by_a_reconcile_while_it_runs(filled):
    """An import writes each picture straight into its class folder before its row is in: a project
    opened meanwhile (another process, or the app) must not take those files away as strays."""
    img = normalize(hostile.jpeg(seed=210))
    stray = filled.images_dir / "red" / "dropped by hand.jpg"
    with filled.importing():
        path = filled.place(img, filled.ensure_class_folder("red")[0])
        assert Path(path).parent == filled.images_dir / "red"  # in place, not staged
        stray.write_bytes(hostile.jpeg(seed=211))
        rep = Project(filled.root).reconcile()  # what opening the project does
        assert Path(path).exists() and rep.orphans == ["red/dropped by hand.jpg"]  # the hand-made one goes
        with filled.adding() as adding:
            res = adding.add([NewImage(img, "red", staged=path)])[0]
    assert filled.path_of(res.item) == Path(path) and sha256_file(path) == img.sha256
    assert Project(filled.root).reconcile().orphans == []
    assert_consistent(filled)


def test_an_import_that_died_leaves_no_picture_it_wrote_in_place_and_no_stray_is_lost(filled):
    pid_max = int(Path("/proc/sys/kernel/pid_max").read_text()) if Path("/proc/sys/kernel/pid_max").exists() else 4_194_304
    older = filled.images_dir / "red" / "0123456789ab.jpg"  # a stored name, but there before the import
    older.write_bytes(hostile.jpeg(seed=212))
    os.utime(older, (time.time() - 3600, time.time() - 3600))
    mark = filled.tmp_dir / f"{pid_max + 1}-abcdef.importing"  # the mark of an import whose process is gone
    mark.touch()
    os.utime(mark, (time.time() - 60, time.time() - 60))
    left = filled.place(normalize(hostile.jpeg(seed=213)), filled.ensure_class_folder("blue")[0])

    rep = Project(filled.root).reconcile()

    assert not Path(left).exists() and not mark.exists()
    assert rep.orphans == ["red/0123456789ab.jpg"]  # set aside, not removed
    assert (filled.trash_dir / "recovered" / "red" / "0123456789ab.jpg").exists()
    assert_consistent(filled)


def test_a_picture_written_in_place_is_not_discarded_once_another_import_added_it_there(filled):
    """Two imports of the same picture: one writes it in place, the other adds it first (onto that
    file). The first, finding a duplicate (or stopped), must not remove the file the row now names."""
    img = normalize(hostile.jpeg(seed=214))
    with filled.importing():
        path = filled.place(img, filled.ensure_class_folder("red")[0])
        res = filled.add_images([NewImage(img, "red")])[0]  # the other import: staged, then renamed there
        assert filled.path_of(res.item) == Path(path)
        filled.discard([path])  # the first import stops
        assert sha256_file(path) == img.sha256
        with filled.adding() as adding:  # or goes on and finds the duplicate
            assert adding.add([NewImage(img, "red", staged=path)])[0].duplicate
        assert sha256_file(path) == img.sha256
        # The same picture written in place under another class is removed as a duplicate.
        other = filled.place(img, filled.ensure_class_folder("blue")[0])
        assert Path(other).parent.name == "blue"
        with filled.adding() as adding:
            assert adding.add([NewImage(img, "blue", staged=other)])[0].duplicate
        assert not Path(other).exists()
    assert_consistent(filled)


def test_a_file_missing_everywhere_is_marked_missing(filled):
    it = filled.items()[0]
    filled.path_of(it).unlink()
    rep = Project(filled.root).reconcile()
    assert rep.missing == [it.id]
    assert filled.item(it.id).status == "missing" and it.id not in {x.id for x in filled.items()}
    assert_consistent(filled)


# --- a process killed in the middle of an import -----------------------------------------------


def _count_files(folder: Path) -> int:
    return sum(len(files) for _, _, files in os.walk(folder))


def _start_import(project_dir: Path, src: Path) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.Popen([sys.executable, "-m", "tl_app", "import", str(project_dir), str(src), "--json"],
                            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, env=env, cwd=ROOT)


def _committed(project_dir: Path) -> int:
    try:
        con = sqlite3.connect(f"file:{project_dir / 'project.db'}?mode=ro", uri=True, timeout=5)
        try:
            return con.execute("SELECT COUNT(*) FROM items").fetchone()[0]
        finally:
            con.close()
    except sqlite3.Error:
        return 0


def _kill_when(proc: subprocess.Popen, images: Path, at_least: int, committed_over: int = -1) -> None:
    """Kill the import once ``images`` holds ``at_least`` files and more than ``committed_over`` rows are in."""
    deadline = time.monotonic() + 60
    try:
        while (not images.exists() or _count_files(images) < at_least
               or (committed_over >= 0 and _committed(images.parent) <= committed_over)):
            assert proc.poll() is None, "the import ended before it could be killed"
            assert time.monotonic() < deadline, "the import made no progress"
            time.sleep(0.002)
        proc.send_signal(signal.SIGKILL)
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait()
    assert proc.returncode == -signal.SIGKILL


def _check_after_crash(project_dir: Path) -> Project:
    p = Project.open(project_dir)  # runs reconcile
    items = p.items()
    for it in items:
        assert hostile.decode_fully(p.path_of(it)) == ("JPEG", "RGB", (it.width, it.height))
        assert sha256_file(p.path_of(it)) == it.sha256
    assert hostile.files_under(p.images_dir) == {p.path_of(it) for it in items}
    assert [f for f in p.tmp_dir.iterdir() if f.is_file()] == []
    # What the import wrote and did not add is its own leftovers, removed: nothing is set aside as found.
    assert not (p.trash_dir / "recovered").exists()
    return p


def test_an_import_killed_part_way_leaves_a_consistent_project(tmp_path):
    src = imagegen.class_folder(tmp_path / "src", per_class=145, size=(96, 96))
    for i in range(10):  # byte copies under other names: 300 files, 290 distinct pictures
        (src / "red" / f"copy {i}.png").write_bytes((src / "red" / f"{i}.png").read_bytes())
    proj = tmp_path / "proj"

    _kill_when(_start_import(proj, src), proj / "images", 25, committed_over=0)
    p = _check_after_crash(proj)
    first = len(p.items())
    assert 0 < first < 290

    # Killed again, later, on the second attempt (once it has added some: pictures are written in their
    # class folders before their batch's commit, so their count alone does not say it has).
    _kill_when(_start_import(proj, src), proj / "images", first + 40, committed_over=first)
    p = _check_after_crash(proj)
    second = len(p.items())
    assert first < second < 290

    proc = _start_import(proj, src)
    out, _ = proc.communicate(timeout=120)
    assert proc.returncode == 0
    rep = json.loads(out)
    assert rep["imported"] == 290 - second and rep["duplicates"] == 300 - rep["imported"]
    assert rep["rejected"] == [] and rep["labels"] == {"red": 145, "blue": 145}
    p = _check_after_crash(proj)
    assert len(p.items()) == 290
    assert len({it.sha256 for it in p.items()}) == 290




def _descendants(pid: int) -> set[int]:
    """Every process started by ``pid``, and by those (the fork server and the helpers it forks)."""
    parents: dict[int, int] = {}
    for d in Path("/proc").iterdir():
        if d.name.isdigit():
            try:
                parents[int(d.name)] = int((d / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, ValueError, IndexError):
                continue
    out, todo = set(), [pid]
    while todo:
        p = todo.pop()
        kids = {c for c, pp in parents.items() if pp == p} - out
        out |= kids
        todo.extend(kids)
    return out


def _running(pid: int) -> bool:
    """Whether process ``pid`` still runs (one that ended and waits to be reaped, a zombie, does not:
    an orphan's zombie stays until the system's first process reaps it, which some containers never do)."""
    try:
        return (Path(f"/proc/{pid}") / "stat").read_text().rsplit(")", 1)[1].split()[0] not in ("Z", "X")
    except (OSError, IndexError):
        return False


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
def test_an_import_on_helper_processes_killed_part_way_leaves_no_helpers_and_a_consistent_project(tmp_path):
    """Killed, an import that decodes on helper processes leaves none behind, and no half-written file."""
    src = imagegen.class_folder(tmp_path / "src", per_class=300, size=(40, 40))
    proj = tmp_path / "proj"
    code = ("import sys; from tl_app.importer import import_files; from tl_app.project import Project; "
            "import_files(Project.open(sys.argv[1], create=True), [sys.argv[2]], processes=True, workers=2)")
    proc = subprocess.Popen([sys.executable, "-c", code, str(proj), str(src)], stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, env={**os.environ, "PYTHONPATH": str(ROOT)}, cwd=ROOT)
    helpers: set[int] = set()
    deadline = time.monotonic() + 60
    while len(helpers) < 3 or _committed(proj) < 20:  # the fork server and its two helpers
        assert proc.poll() is None, "the import ended before it could be killed"
        assert time.monotonic() < deadline, "the import made no progress"
        helpers |= _descendants(proc.pid)
        time.sleep(0.002)
    helpers |= _descendants(proc.pid)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    deadline = time.monotonic() + 5
    while any(_running(h) for h in helpers) and time.monotonic() < deadline:
        time.sleep(0.05)
    left = [h for h in helpers if _running(h)]
    for h in left:  # leave nothing running when it fails
        with contextlib.suppress(OSError):
            os.kill(h, signal.SIGKILL)
    assert left == []
    kept = len(_check_after_crash(proj).items())
    assert 20 <= kept < 600
    proc = _start_import(proj, src)  # the rest comes in on a second attempt
    out, _ = proc.communicate(timeout=120)
    assert proc.returncode == 0 and json.loads(out)["imported"] == 600 - kept
    assert len(_check_after_crash(proj).items()) == 600


def test_reads_sharing_one_connection_still_see_what_others_write_meanwhile(tmp_path):
    """Inside ``reading()`` reads share one connection, yet each sees what another process (another
    Project, its own connection) committed just before it: no stale class list."""
    p = Project.open(tmp_path / "p", create=True)
    other = Project(p.root)
    p.add_label("cat")
    with p.reading():
        assert p.labels() == ["cat"]
        other.add_label("dog")
        assert p.labels() == ["cat", "dog"]
        with p.reading():  # nested: the same connection
            other.rename_label("dog", "puppy")
            assert p.labels() == ["cat", "puppy"]
        assert p.labels() == ["cat", "puppy"]
    assert p.labels() == ["cat", "puppy"]
