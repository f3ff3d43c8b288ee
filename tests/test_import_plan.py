"""What an import will do, told before it does it (``plan_import``), and the import doing exactly that:
a zip with a folder per class fills those classes, loose pictures go to the chosen class, duplicates filed in
another class are reported (and can be moved), and no import leaves an empty class behind."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

import hostile
from tl_app.errors import InvalidLabel
from tl_app.importer import import_files, plan_import
from tl_app.project import Item

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture
def animals(tmp_path) -> Path:
    """animals.zip: a wrapping folder with cat (4), dog (3) and fox (1), a README, and one picture outside."""
    members = {f"animals/cat/{i}.png": hostile.png(seed=400 + i) for i in range(4)}
    members |= {f"animals/dog/{i}.jpg": hostile.jpeg(seed=410 + i) for i in range(3)}
    members |= {"animals/fox/a.png": hostile.png(seed=420), "animals/README.txt": b"CC-BY pictures\n",
                "animals/loose.png": hostile.png(seed=430)}
    return hostile.make_zip(tmp_path / "animals.zip", members)


def test_a_zip_with_a_folder_per_class_is_planned_and_imported_folder_by_folder(project, animals):
    project.add_label("Cat")  # an existing class in another letter case: the zip's "cat" goes there
    plan = plan_import([animals], loose_label="pets", project=project)
    assert plan.lines() == [
        "The zip animals.zip holds 3 folders: Cat (4), dog (3), fox (1); each becomes its class.",
        "1 picture outside the folders goes into 'pets'.",
        "1 other file in animals.zip is not a picture by the name and will be refused.",
        "New classes: dog, fox, pets."]
    assert plan.classes == {"Cat": 4, "dog": 3, "fox": 1, "pets": 1} and plan.pictures == 9
    assert not plan.needs_label

    rep = import_files(project, [animals], loose_label="pets")
    # The import does what the plan said, class by class.
    assert rep.imported == 9 and rep.labels == {"Cat": 4, "dog": 3, "fox": 1, "pets": 1}
    assert [r.file for r in rep.rejected] == ["animals.zip!animals/README.txt"]


def test_every_picture_into_one_class_when_asked(project, animals):
    plan = plan_import([animals], label="cat", loose_label="cat", project=project)
    assert plan.lines()[0] == "The zip animals.zip holds 9 pictures; they go into 'cat'."
    assert import_files(project, [animals], label="cat").labels == {"cat": 9}


def test_loose_pictures_need_a_class_and_say_so(project, tmp_path):
    files = []
    for i in range(3):
        f = tmp_path / f"photo {i}.png"
        f.write_bytes(hostile.png(seed=440 + i))
        files.append(f)
    plan = plan_import(files, project=project)
    assert plan.needs_label and plan.unlabelled == 3
    assert plan.lines() == ["These 3 pictures need a class: choose one or type a new name."]
    plan = plan_import(files, loose_label="birds", project=project)
    assert plan.lines() == ["These 3 pictures go into 'birds'.", "New class: birds."]
    with pytest.raises(InvalidLabel):
        plan_import(files, loose_label="a/b")
    assert project.labels() == []  # planning changes nothing


def test_a_zip_of_loose_pictures_goes_to_the_chosen_class_or_takes_its_name(project, tmp_path):
    z = hostile.make_zip(tmp_path / "kittens.zip", {f"{i}.png": hostile.png(seed=450 + i) for i in range(2)})
    assert plan_import([z]).lines() == ["The zip kittens.zip holds 2 pictures; they go into 'kittens'.",
                                        "New class: kittens."]
    assert plan_import([z], loose_label="cat").lines()[0] == "The zip kittens.zip holds 2 pictures; they go into 'cat'."
    assert import_files(project, [z], loose_label="cat").labels == {"cat": 2}


def test_files_refused_in_advance_and_bad_folder_names_are_told(project, tmp_path):
    z = hostile.make_zip(tmp_path / "odd.zip", {"../evil.png": hostile.png(seed=460), "con/1.png": hostile.png(seed=461),
                                                "ok/1.png": hostile.png(seed=462)})
    lines = plan_import([z], project=project).lines()
    assert lines[0] == "The zip odd.zip holds 1 folder: ok (1); it becomes a class."
    assert "../evil.png will be refused: its path inside the zip leads outside the archive (unsafe zip)." in lines
    assert any(x.startswith("con/1.png will be refused: 'con' is a reserved name on Windows") for x in lines)


def test_the_plan_uses_the_names_uploads_had(project, tmp_path):
    tmp = tmp_path / "upload-1a2b3c"  # uploads arrive under temporary names
    tmp.mkdir()
    z = hostile.make_zip(tmp / "tmpxyz.zip", {"cat/1.png": hostile.png(seed=470)})
    plan = plan_import([z], names={str(z): "my cats.zip"})
    assert plan.lines()[0] == "The zip my cats.zip holds 1 folder: cat (1); it becomes a class."


def test_reimporting_a_zip_reports_pictures_filed_in_another_class_and_moves_them_in_one_step(project, animals):
    import_files(project, [animals], label="cat")  # the old mistake: everything went into "cat"
    assert project.label_counts() == {"cat": 9}
    rep = import_files(project, [animals], loose_label="cat")
    assert rep.imported == 0 and rep.duplicates == 9
    # No empty class is created for pictures that were all duplicates.
    assert project.labels() == ["cat"]
    assert sorted(rep.elsewhere.values()) == ["dog"] * 3 + ["fox"]
    assert rep.elsewhere_note() == ("4 of the duplicates are already in another class than this import gives them: "
                                    "3 in 'cat' (here: 'dog'), 1 in 'cat' (here: 'fox').")
    a = project.move(rep.elsewhere)
    assert project.label_counts() == {"cat": 5, "dog": 3, "fox": 1} and len(project.history()) == 1
    project.undo()
    assert project.label_counts() == {"cat": 9}


def test_a_duplicate_never_creates_a_class(project, tmp_path):
    f = tmp_path / "one.png"
    f.write_bytes(hostile.png(seed=480))
    import_files(project, [f], label="cat")
    rep = import_files(project, [f], label="dog")
    assert rep.duplicates == 1 and project.labels() == ["cat"]
    assert rep.elsewhere == {project.items()[0].id: "dog"}


@pytest.mark.parametrize("source,label,shown", [
    ("pets.zip!animals/cat/1.png", "cat", "cat/1.png"),
    ("pets.zip!1.png", "cat", "1.png"),
    ("/home/me/Pictures/Fluffy on the sofa.jpg", "cat", "Pictures/Fluffy on the sofa.jpg"),
    ("Fluffy on the sofa.jpg", "cat", "Fluffy on the sofa.jpg"),  # an upload: its own name only
    ("https://example.org/img/tabby%20cat.jpg?w=300", "cat", "tabby cat.jpg"),
    ("https://cdn.example.org/th/id/OIP.a8F3kd9aKd0Zc2-x_9kLmQHaE8", "cat", "cat"),  # an opaque token
    ("", "cat", "cat")])
def test_pictures_are_named_by_their_file_or_their_class_never_an_id(source, label, shown):
    it = Item("0123456789ab", label, f"{label}/0123456789ab.jpg", "0" * 64, 64, 64, source, 0.0, "active")
    assert it.display_name == shown


def test_cli_import_dry_run_tells_and_changes_nothing(tmp_path, animals):
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proj = tmp_path / "proj"

    def run(*args):
        cp = subprocess.run([sys.executable, "-m", "tl_app", *map(str, args)], capture_output=True, text=True,
                            env=env, cwd=ROOT, timeout=120)
        assert cp.returncode == 0 and "Traceback" not in cp.stderr, cp.stderr
        return cp

    out = run("import", proj, animals, "--dry-run")
    assert out.stdout.splitlines()[0] == "The zip animals.zip holds 3 folders: cat (4), dog (3), fox (1); each becomes its class."
    assert not proj.exists()
    plan = json.loads(run("import", proj, animals, "--dry-run", "--json").stdout)
    assert plan["classes"] == {"cat": 4, "dog": 3, "fox": 1, "animals": 1} and plan["pictures"] == 9

    run("import", proj, animals, "--label", "cat")
    cp = run("import", proj, animals)
    assert "5 of the duplicates are already in another class" in cp.stderr and "--move-duplicates" in cp.stderr
    rep = json.loads(run("import", proj, animals, "--move-duplicates", "--json").stdout)
    assert rep["labels"] == {"cat": 4, "dog": 3, "fox": 1, "animals": 1}
