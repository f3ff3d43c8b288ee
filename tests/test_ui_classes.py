"""The Search & download tab's own pictures and classes, over HTTP with gradio_client as another program would:
a dropped zip with a folder per class (told first, then imported folder by folder), pictures moved and deleted,
classes renamed, merged and deleted, each undone and redone; the project on disk is checked after each step."""

from __future__ import annotations

import pytest
from gradio_client import Client, handle_file
from gradio_client.exceptions import AppError

import hostile
from e2e.harness import serve
from tl_app.images import sha256_file

VIEW = ("classes", "target", "browse_class", "gallery", "selected", "note", "manage_pick", "move_to")


def _client(url: str) -> Client:
    return Client(url, verbose=False, download_files=False)


def _view(out) -> dict:
    return dict(zip(VIEW, out))


def _counts(table: dict) -> dict[str, int]:
    return {row[0]: int(row[1]) for row in table["data"]}


def _value(out):
    return out.get("value") if isinstance(out, dict) and out.get("__type__") == "update" else out


def _error(call) -> str:
    with pytest.raises(AppError) as ei:
        call()
    return str(ei.value)


def _disk(project) -> dict:
    """Class -> {item: sha256 of its file} for every active picture, read from the files themselves."""
    out: dict[str, dict] = {}
    for it in project.items():
        path = project.path_of(it)
        assert path.parent.name == it.label
        out.setdefault(it.label, {})[it.id] = sha256_file(path)
    return out


@pytest.fixture
def animals(tmp_path):
    members = {f"animals/cat/{i}.png": hostile.png(seed=500 + i) for i in range(4)}
    members |= {f"animals/dog/{i}.png": hostile.png(seed=510 + i) for i in range(3)}
    members |= {"animals/fox/a.png": hostile.png(seed=520)}
    return hostile.make_zip(tmp_path / "animals.zip", members)


def test_a_zip_with_a_folder_per_class_is_told_then_imported_folder_by_folder(tmp_path, animals):
    with serve(tmp_path / "proj") as srv:
        c = _client(srv.url)
        note, into = c.predict([handle_file(animals)], "", False, api_name="/plan_files")
        assert note == ("The zip animals.zip holds 3 folders: cat (4), dog (3), fox (1); each becomes its class. "
                        "New classes: cat, dog, fox.")
        assert into["visible"] is True  # the choice to ignore the folders is offered for a zip with folders
        assert srv.project.labels() == []  # telling changes nothing

        out = c.predict("", [handle_file(animals)], False, api_name="/add_files")  # no class chosen: none needed
        v, result = _view(out), out[len(VIEW)]
        assert _counts(v["classes"]) == {"cat": 4, "dog": 3, "fox": 1}
        assert "8 imported" in result
        assert _value(v["browse_class"]) == "cat" and len(v["gallery"]) == 4
        assert {g["caption"] for g in v["gallery"]} == {f"☐ cat/{i}.png" for i in range(4)}  # named as in the zip

        # The old way, everything into one class, is still there when asked for.
        note, _ = c.predict([handle_file(animals)], "pets", True, api_name="/plan_files")
        assert note.startswith("The zip animals.zip holds 8 pictures; they go into 'pets'.")
        out = c.predict("pets", [handle_file(animals)], True, api_name="/add_files")
        result = out[len(VIEW)]
        assert "8 duplicates skipped" in result
        assert "8 of the duplicates are already in another class than this import gives them" in result
        assert "pets" not in srv.project.labels()  # duplicates create no class


def test_loose_pictures_need_a_class(tmp_path):
    f = tmp_path / "photo.png"
    f.write_bytes(hostile.png(seed=530))
    with serve(tmp_path / "proj") as srv:
        c = _client(srv.url)
        note, into = c.predict([handle_file(f)], "", False, api_name="/plan_files")
        assert note == "This picture needs a class: choose one or type a new name."
        assert into["visible"] is False
        msg = _error(lambda: c.predict("", [handle_file(f)], False, api_name="/add_files"))
        assert "Choose the class this picture belongs to" in msg
        note, _ = c.predict([handle_file(f)], "birds", False, api_name="/plan_files")
        assert note == "This picture goes into 'birds'. New class: birds."
        assert srv.project.labels() == []


def test_pictures_are_moved_and_deleted_then_undone_and_redone(tmp_path, animals):
    with serve(tmp_path / "proj") as srv:
        c = _client(srv.url)
        c.predict("", [handle_file(animals)], False, api_name="/add_files")
        before = _disk(srv.project)
        cats = list(before["cat"])

        out = c.predict(",".join(cats[:2]), "Dog", "cat", api_name="/move_pictures")  # any letter case
        v, status = _view(out), out[-1]
        assert status == "Moved 2 images to 'dog'. Undo moves them back."
        assert _counts(v["classes"]) == {"cat": 2, "dog": 5, "fox": 1}
        assert _value(v["browse_class"]) == "cat" and len(v["gallery"]) == 2 and v["selected"] == ""
        assert set(_disk(srv.project)["dog"]) >= set(cats[:2])

        out = c.predict(cats[2], "cat", api_name="/delete_pictures")
        assert out[-1] == "Deleted 1 image (to the project's trash). Undo brings it back."
        assert _counts(_view(out)["classes"]) == {"cat": 1, "dog": 5, "fox": 1}

        assert c.predict("cat", api_name="/undo_pictures")[-1] == "Undone: deleted 1 image."
        assert c.predict("cat", api_name="/undo_pictures")[-1] == "Undone: moved 2 images to 'dog'."
        assert _disk(srv.project) == before  # the same bytes in the same classes
        assert c.predict("cat", api_name="/redo_pictures")[-1] == "Redone: moved 2 images to 'dog'."
        assert srv.project.label_counts() == {"cat": 2, "dog": 5, "fox": 1}

        assert "Click the pictures you want first" in _error(lambda: c.predict("", "dog", "cat",
                                                                                api_name="/move_pictures"))
        assert "Choose the class to move" in _error(lambda: c.predict(cats[3], "", "cat", api_name="/move_pictures"))
        assert "not an item of this project" in _error(lambda: c.predict("../x", "dog", "cat",
                                                                          api_name="/move_pictures"))


def test_classes_are_renamed_merged_and_deleted_each_in_one_undoable_step(tmp_path, animals):
    with serve(tmp_path / "proj") as srv:
        c = _client(srv.url)
        c.predict("", [handle_file(animals)], False, api_name="/add_files")
        before = _disk(srv.project)

        out = c.predict(["cat"], "kitten", "cat", api_name="/rename_class")
        v, status, name = _view(out), out[-2], out[-1]
        assert status == "Renamed class 'cat' to 'kitten' (4 pictures). Undo reverts it." and name == ""
        assert _counts(v["classes"]) == {"kitten": 4, "dog": 3, "fox": 1}
        assert _value(v["browse_class"]) == "kitten" and len(v["gallery"]) == 4  # the gallery follows the class
        assert _value(v["manage_pick"]) == ["kitten"] and [x[0] for x in v["target"]["choices"]] == ["kitten", "dog", "fox"]
        assert not (srv.project.images_dir / "cat").exists()

        # Renaming to another class's name merges them, as the note under the fields said before the click.
        out = c.predict(["fox"], "DOG", "kitten", api_name="/rename_class")
        assert out[-2] == "Merged 'fox' into 'dog' (1 picture moved). Undo reverts it."
        assert srv.project.label_counts() == {"kitten": 4, "dog": 4}

        out = c.predict(["kitten", "dog"], "animals", "kitten", api_name="/merge_classes")
        v = _view(out)
        assert out[-2] == "Merged 'kitten' and 'dog' into 'animals' (8 pictures moved). Undo reverts it."
        assert _counts(v["classes"]) == {"animals": 8} and _value(v["browse_class"]) == "animals"

        out = c.predict(["animals"], "animals", api_name="/delete_classes")
        assert out[-1] == "Deleted class 'animals' (8 pictures to the trash). Undo brings it back."
        assert _counts(_view(out)["classes"]) == {} and srv.project.labels() == []

        for expected in ("deleted class 'animals'", "merged 'kitten' and 'dog' into 'animals'",
                         "merged 'fox' into 'dog'", "renamed class 'cat' to 'kitten'"):
            assert c.predict("", api_name="/undo_pictures")[-1].startswith(f"Undone: {expected}")
        assert _disk(srv.project) == before and srv.project.labels() == ["cat", "dog", "fox"]
        assert "nothing to undo" in _error(lambda: c.predict("", api_name="/undo_pictures"))
        out = c.predict("cat", api_name="/redo_pictures")
        assert out[-1] == "Redone: renamed class 'cat' to 'kitten' (4 pictures)."
        assert _value(_view(out)["browse_class"]) == "kitten"  # the class shown follows its new name

        # Mistakes are told, and change nothing.
        assert "Choose one class to rename" in _error(lambda: c.predict([], "x", "", api_name="/rename_class"))
        assert "one class at a time" in _error(lambda: c.predict(["kitten", "dog"], "x", "", api_name="/rename_class"))
        assert "Type the name of the class" in _error(lambda: c.predict(["kitten", "dog"], "", "",
                                                                        api_name="/merge_classes"))
        assert "Choose the class to delete" in _error(lambda: c.predict([], "", api_name="/delete_classes"))
        assert srv.project.label_counts() == {"kitten": 4, "dog": 3, "fox": 1}
