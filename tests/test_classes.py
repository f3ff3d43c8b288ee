"""Classes renamed, merged and deleted: one undoable action each, files restored byte for byte, the class list
and the folders always agreeing with the database, even after a crash; and the command line verbs for them."""

from __future__ import annotations

import json
import os
import shutil
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

import hostile
import imagegen
from tl_app.errors import InputError, ItemNotFound, LabelExists
from tl_app.images import sha256_file
from tl_app.importer import import_files
from tl_app.project import Project

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def three_template(tmp_path_factory):
    base = tmp_path_factory.mktemp("three")
    project = Project.open(base / "proj", create=True)
    src = imagegen.class_folder(base / "src", per_class=4, classes=("red", "blue", "green"))
    import_files(project, [src / "red"], label="red")  # one import per class: the class order is red, blue, green
    import_files(project, [src / "blue"], label="blue")
    import_files(project, [src / "green"], label="green")
    return project.root


@pytest.fixture
def three(three_template, tmp_path):
    """A project with red, blue and green (in that order), 4 pictures each; a fresh copy per test."""
    shutil.copytree(three_template, tmp_path / "p")
    return Project.open(tmp_path / "p")


def state(p: Project) -> dict:
    """Everything a person could notice: the class list in order, each picture's class, place and bytes,
    the trash, and the folders under images/."""
    return {"labels": p.labels(), "counts": p.label_counts(),
            "items": {it.id: (it.label, str(p.path_of(it).relative_to(p.root)), sha256_file(p.path_of(it)))
                      for it in p.items()},
            "deleted": sorted(it.id for it in p.items(status="deleted")),
            "folders": sorted(d.name for d in p.images_dir.iterdir() if d.is_dir())}


def consistent(p: Project) -> None:
    """Every active row has its file in its class folder, every file has a row, every class its folder only."""
    items = p.items()
    assert all(p.path_of(it).exists() and p.path_of(it).parent.name == it.label for it in items)
    assert hostile.files_under(p.images_dir) == {p.path_of(it) for it in items}
    assert sorted(d.name for d in p.images_dir.iterdir() if d.is_dir()) == sorted(p.labels())


def undo_redo_round_trip(p: Project, before: dict, after: dict) -> None:
    p.undo()
    assert state(p) == before
    consistent(p)
    p.redo()
    assert state(p) == after
    consistent(p)
    p.undo()
    assert state(p) == before


# --- rename -------------------------------------------------------------------------------------

def test_rename_moves_the_folder_and_pictures_and_keeps_the_class_in_its_place(three):
    before = state(three)
    a = three.rename_label("Red", "crimson")  # the old name in any letter case
    assert a.kind == "rename_class" and a.summary == "renamed class 'red' to 'crimson' (4 pictures)"
    assert three.labels() == ["crimson", "blue", "green"]
    moved = three.items(label="crimson")
    assert len(moved) == 4 and {it.id for it in moved} == {i for i, v in before["items"].items() if v[0] == "red"}
    for it in moved:  # the same bytes, now under crimson/
        assert three.path_of(it).parent.name == "crimson"
        assert sha256_file(three.path_of(it)) == before["items"][it.id][2]
    assert not (three.images_dir / "red").exists()
    assert len(three.history()) == 1
    consistent(three)
    undo_redo_round_trip(three, before, state(three))


def test_a_change_of_letter_case_only_is_a_rename(three):
    before = state(three)
    three.rename_label("red", "Red")
    assert three.labels() == ["Red", "blue", "green"] and three.label_counts()["Red"] == 4
    consistent(three)
    three.undo()
    assert state(three) == before


def test_renaming_to_another_class_is_a_merge_only_when_asked(three):
    before = state(three)
    with pytest.raises(LabelExists) as e:
        three.rename_label("red", "BLUE")
    assert "There is already a class 'blue'" in str(e.value) and "merge" in str(e.value)
    assert state(three) == before and three.history() == []

    a = three.rename_label("red", "BLUE", merge=True)
    assert a.kind == "merge_classes" and a.summary == "merged 'red' into 'blue' (4 pictures moved)"
    assert three.labels() == ["blue", "green"] and three.label_counts() == {"blue": 8, "green": 4}
    consistent(three)
    three.undo()
    assert state(three) == before


@pytest.mark.parametrize("old,new,words", [("red", "red", "already called"), ("nope", "x", "no class 'nope'"),
                                           ("", "x", "Choose a class"), ("red", "a/b", "cannot have"),
                                           ("red", "  ", "cannot be empty")])
def test_bad_renames_are_input_mistakes_that_change_nothing(three, old, new, words):
    before = state(three)
    with pytest.raises(InputError) as e:
        three.rename_label(old, new)
    assert words in str(e.value)
    assert state(three) == before and three.history() == []


# --- merge --------------------------------------------------------------------------------------

def test_merge_into_a_new_name_leaves_no_empty_class_behind(three):
    before = state(three)
    a = three.merge_labels(["RED", "blue"], "warm")
    assert a.summary == "merged 'red' and 'blue' into 'warm' (8 pictures moved)"
    assert three.labels() == ["warm", "green"]  # the new class takes the place of the first one merged
    assert three.label_counts() == {"warm": 8, "green": 4}
    consistent(three)
    after = state(three)
    undo_redo_round_trip(three, before, after)


def test_merge_into_one_of_the_classes_keeps_its_pictures_where_they_are(three):
    before = state(three)
    greens = {it.id: three.path_of(it) for it in three.items(label="green")}
    a = three.merge_labels(["red", "green", "blue"], "Green")
    assert a.summary == "merged 'red' and 'blue' into 'green' (8 pictures moved)"
    assert three.labels() == ["green"] and three.label_counts() == {"green": 12}
    assert all(three.path_of(three.item(i)) == path for i, path in greens.items())
    assert {p["item"] for p in a.items}.isdisjoint(greens)  # green's own pictures did not move
    consistent(three)
    undo_redo_round_trip(three, before, state(three))


def test_merge_needs_another_class(three):
    for names, into in ((["red"], "red"), ([], "red"), (["red", "RED"], "Red")):
        with pytest.raises(InputError):
            three.merge_labels(names, into)
    assert three.history() == []


# --- delete -------------------------------------------------------------------------------------

def test_deleting_a_class_trashes_its_pictures_and_undo_brings_back_class_and_bytes(three):
    before = state(three)
    a = three.delete_labels(["blue"])
    assert a.kind == "delete_class" and a.summary == "deleted class 'blue' (4 pictures to the trash)"
    assert three.labels() == ["red", "green"] and not (three.images_dir / "blue").exists()
    trashed = three.items(status="deleted")
    assert len(trashed) == 4 and all(three.path_of(it).is_relative_to(three.trash_dir) for it in trashed)
    assert {sha256_file(three.path_of(it)) for it in trashed} == {v[2] for v in before["items"].values()
                                                                  if v[0] == "blue"}
    consistent(three)
    undo_redo_round_trip(three, before, state(three))
    assert three.labels() == ["red", "blue", "green"]  # back in its place in the list


def test_deleting_several_classes_and_an_empty_one_is_one_action(three):
    three.add_label("empty")
    before = state(three)
    a = three.delete_labels(["red", "EMPTY"])
    assert a.summary == "deleted classes 'red' and 'empty' (4 pictures to the trash)"
    assert three.labels() == ["blue", "green"] and len(three.history()) == 1
    three.undo()
    assert state(three) == before


# --- what else refers to classes ----------------------------------------------------------------

def test_kept_pictures_stay_kept_and_download_records_follow_the_class(three):
    red = [it.id for it in three.items(label="red")]
    three.keep(red[:2])
    with three._write() as con:  # a download's record of where each link went
        con.execute("INSERT INTO sources(url, label, item, outcome, reason, fetched) VALUES(?,?,?,?,?,?)",
                    ("http://example.org/1.jpg", "red", red[0], "imported", "", time.time()))
        con.execute("INSERT INTO sources(url, label, item, outcome, reason, fetched) VALUES(?,?,?,?,?,?)",
                    ("http://example.org/gone.jpg", "red", None, "refused", "HTTP 404", time.time()))

    def sources():
        with three._read() as con:
            return {r["url"]: r["label"] for r in con.execute("SELECT url, label FROM sources")}

    three.merge_labels(["red", "blue"], "warm")
    assert set(red[:2]) <= three.kept()
    assert sources() == {"http://example.org/1.jpg": "warm", "http://example.org/gone.jpg": "warm"}
    three.undo()
    assert sources() == {"http://example.org/1.jpg": "red", "http://example.org/gone.jpg": "red"}
    assert set(red[:2]) <= three.kept()


def test_pictures_added_to_a_renamed_class_stay_when_the_rename_is_undone(three, tmp_path):
    three.rename_label("red", "crimson")
    new = tmp_path / "new.png"
    new.write_bytes(hostile.png(seed=321))
    rep = import_files(three, [new], label="crimson")
    three.undo()
    # The four red pictures are red again; the one added since keeps its class, which therefore stays.
    assert three.label_counts() == {"red": 4, "blue": 4, "green": 4, "crimson": 1}
    assert three.item(rep.items[0]).label == "crimson"
    consistent(three)


def test_undo_of_a_deleted_class_goes_into_a_class_made_since_under_another_case(three):
    three.delete_labels(["blue"])
    three.add_label("Blue")
    three.undo()
    assert three.labels() == ["red", "green", "Blue"] and three.label_counts()["Blue"] == 4
    consistent(three)
    three.redo()  # deletes that class again, with the pictures the undo put there
    assert three.labels() == ["red", "green"] and len(three.items(status="deleted")) == 4
    consistent(three)


def test_move_sends_pictures_to_several_classes_in_one_action(three):
    before = state(three)
    red = [it.id for it in three.items(label="red")]
    a = three.move({red[0]: "blue", red[1]: "green", red[2]: "red"})  # the third is already there
    assert a.kind == "relabel" and a.summary == "moved 1 image to 'blue' and 1 image to 'green'"
    assert three.label_counts() == {"red": 2, "blue": 5, "green": 5}
    three.undo()
    assert state(three) == before
    with pytest.raises(ItemNotFound):
        three.move({red[2]: "red"})
    # A class the move created leaves again with its undo: no empty class is left behind.
    three.move({red[0]: "purple"})
    assert three.labels() == ["red", "blue", "green", "purple"]
    three.undo()
    assert state(three) == before
    three.redo()
    assert three.label_counts()["purple"] == 1


# --- crash consistency --------------------------------------------------------------------------

def _crash_after_moves(monkeypatch):
    def moves_then_die(self, moves):
        for src, dst in moves:
            dst.parent.mkdir(parents=True, exist_ok=True)
            os.replace(src, dst)
        raise KeyboardInterrupt  # the process "dies" before the transaction commits

    monkeypatch.setattr(Project, "_move_all", moves_then_die)


@pytest.mark.parametrize("change", [lambda p: p.rename_label("red", "crimson"),
                                    lambda p: p.merge_labels(["red", "blue"], "warm"),
                                    lambda p: p.delete_labels(["green"])])
def test_a_class_change_interrupted_before_commit_is_reverted_on_opening(three, monkeypatch, change):
    before = state(three)
    _crash_after_moves(monkeypatch)
    with pytest.raises(KeyboardInterrupt):
        change(three)
    monkeypatch.undo()
    # The files moved, the rows did not: the folders disagree with the database until it is opened again.
    assert hostile.files_under(three.images_dir) != {three.path_of(it) for it in three.items()}

    p = Project.open(three.root)  # opening repairs
    assert state(p) == before and p.history() == []
    consistent(p)


def test_a_committed_rename_with_files_left_behind_is_finished(three):
    reds = three.items(label="red")
    con = sqlite3.connect(three.db_path)
    with con:  # what a crash after COMMIT but before the renames would leave (files in red/)
        con.execute("UPDATE labels SET name='crimson' WHERE name='red'")
        for it in reds:
            con.execute("UPDATE items SET label='crimson', file=? WHERE id=?", (f"crimson/{it.id}.jpg", it.id))
    con.close()
    p = Project.open(three.root)
    assert p.label_counts() == {"crimson": 4, "blue": 4, "green": 4}
    assert not (p.images_dir / "red").exists()
    consistent(p)


# --- the command line ---------------------------------------------------------------------------

def run(*args, ok: bool = True) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    cp = subprocess.run([sys.executable, "-m", "tl_app", *map(str, args)], capture_output=True, text=True,
                        env=env, cwd=ROOT, timeout=120)
    assert (cp.returncode == 0) == ok, cp.stderr
    assert "Traceback" not in cp.stderr, cp.stderr
    return cp


def test_class_verbs_with_undo_and_redo_from_the_command_line(three):
    proj = three.root
    before = state(three)
    assert json.loads(run("class", "list", proj, "--json").stdout) == {"red": 4, "blue": 4, "green": 4}

    cp = run("class", "rename", proj, "red", "BLUE", ok=False)
    assert cp.stderr.strip().splitlines()[-1].startswith("error: There is already a class 'blue'")
    assert "--merge" in cp.stderr and state(three) == before

    out = json.loads(run("class", "rename", proj, "red", "crimson", "--json").stdout)
    assert out["kind"] == "rename_class" and out["labels"]["removed"][0]["name"] == "red"
    assert len(out["items"]) == 4
    assert run("class", "merge", proj, "crimson", "blue", "--into", "warm").stdout.strip() == \
        "merged 'crimson' and 'blue' into 'warm' (8 pictures moved) (undo reverts it)"
    assert run("class", "delete", proj, "GREEN").stdout.strip() == \
        "deleted class 'green' (4 pictures to the trash) (undo reverts it)"
    assert json.loads(run("class", "list", proj, "--json").stdout) == {"warm": 8}

    for _ in range(3):
        run("undo", proj)
    assert state(Project.open(proj)) == before
    for _ in range(3):
        run("redo", proj)
    assert json.loads(run("class", "list", proj, "--json").stdout) == {"warm": 8}

    cp = run("class", "delete", proj, "nope", "--json", ok=False)
    assert json.loads(cp.stdout) == {"error": "There is no class 'nope' in this project."}


def test_undoing_a_new_spelling_after_pictures_were_added_keeps_one_class(three, tmp_path):
    three.rename_label("red", "Red")
    new = tmp_path / "new.png"
    new.write_bytes(hostile.png(seed=322))
    import_files(three, [new], label="red")  # "red" is "Red" now, whatever the case typed
    three.undo()
    # Never two classes that differ only in letter case: the five pictures share one class.
    assert [n.casefold() for n in three.labels()].count("red") == 1
    assert three.label_counts()["Red"] == 5
    consistent(three)
