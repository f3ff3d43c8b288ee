"""Getting pictures in and organising classes, clicked through in Chromium: a zip with a folder per class
dropped on the upload area (told first, then imported folder by folder), pictures selected in the gallery and
moved, classes renamed, merged and deleted with undo and redo; and every control reachable at 390 px."""

from __future__ import annotations

import re

import pytest

import hostile
import imagegen
from harness import app_page
from tl_app.images import sha256_file
from tl_app.importer import import_files

expect = pytest.importorskip("playwright.sync_api", reason="Python Playwright is not installed").expect

pytestmark = pytest.mark.browser


def _zip(tmp_path):
    members = {f"animals/cat/{i}.png": hostile.png(seed=600 + i) for i in range(5)}
    members |= {f"animals/dog/{i}.png": hostile.png(seed=620 + i) for i in range(3)}
    members |= {"animals/fox/a.png": hostile.png(seed=640)}
    return hostile.make_zip(tmp_path / "animals.zip", members)


def _disk(project) -> dict:
    return {it.id: (it.label, sha256_file(project.path_of(it))) for it in project.items()}


def test_a_zip_with_a_folder_per_class_is_told_then_imported_as_its_classes(app, server, tmp_path):
    page = app.page
    expect(page.locator("#add-files")).to_have_text("Add these pictures")
    app.upload("upload-files", [_zip(tmp_path)])
    # Before anything happens, the page says what will: each folder becomes its class.
    app.wait_text("import-plan", re.escape("The zip animals.zip holds 3 folders: cat (5), dog (3), fox (1); "
                                           "each becomes its class."))
    expect(page.locator("#add-files")).to_have_text("Add 9 pictures to 3 classes")
    expect(page.locator("#import-into-target")).to_be_visible()
    assert server.project.labels() == []

    page.locator("#add-files").click()
    app.wait_text("import-result", r"9 imported")
    app.wait_idle()
    assert app.class_counts() == {"cat": 5, "dog": 3, "fox": 1}
    assert server.project.label_counts() == {"cat": 5, "dog": 3, "fox": 1}
    # The first class is shown, its pictures captioned by their file names.
    expect(app.browse_thumbs()).to_have_count(5)
    expect(page.locator("#browse-gallery")).to_contain_text("cat/0.png")
    expect(page.locator("#import-plan")).to_have_text("")  # the drop area is empty again, and so is the note
    expect(page.locator("#add-files")).to_have_text("Add these pictures")


def test_a_folder_of_this_computer_is_told_then_imported(app, server, tmp_path):
    folder = imagegen.class_folder(tmp_path / "pics", per_class=3, classes=("red", "blue"))
    page = app.page
    page.get_by_text("Import a folder from this computer").click()
    page.locator("#import-folder-path textarea, #import-folder-path input").first.fill(str(folder))
    page.keyboard.press("Tab")
    app.wait_text("folder-plan", r"\bblue \(3\), red \(3\)")
    expect(page.locator("#import-folder")).to_have_text("Import 6 pictures to 2 classes")
    assert server.project.labels() == []  # told, not done
    page.locator("#import-folder").click()
    app.wait_text("import-result", r"6 imported")
    assert server.project.label_counts() == {"blue": 3, "red": 3}
    expect(page.locator("#folder-plan")).to_have_text("")  # told, then done: the plan goes
    expect(page.locator("#import-folder")).to_have_text("Import folder")


def test_pictures_moved_from_the_gallery_and_classes_renamed_merged_deleted_with_undo(app, server, tmp_path):
    import_files(server.project, [imagegen.class_folder(tmp_path / "pics", per_class=4,
                                                        classes=("red", "blue", "green"))])
    before = _disk(server.project)
    page = app.page
    page.reload()
    app.open()
    app.choose("browse-class", "red")
    expect(app.browse_thumbs()).to_have_count(4)

    # Select two pictures and move them to blue.
    assert "1 selected" in app.toggle_picture(0)
    assert "2 selected" in app.toggle_picture(1)
    app.choose("move-to", "blue")
    page.locator("#move-selected").click()
    app.wait_text("pictures-status", r"Moved 2 images to 'blue'\. Undo moves them back\.")
    app.wait_idle()
    expect(app.browse_thumbs()).to_have_count(2)
    assert app.class_counts() == {"blue": 6, "green": 4, "red": 2}
    app.class_action("pictures-undo", r"Undone: moved 2 images to 'blue'")
    assert app.class_counts() == {"blue": 4, "green": 4, "red": 4}

    # Rename: the note says what the button will do before the click.
    app.pick_classes(["red"])
    page.locator("#manage-name textarea, #manage-name input").first.fill("crimson")
    app.wait_text("manage-note", r"Rename: 'red' becomes 'crimson' \(4 pictures follow\)")
    app.class_action("class-rename", r"Renamed class 'red' to 'crimson' \(4 pictures\)\. Undo reverts it\.")
    assert app.class_counts() == {"blue": 4, "crimson": 4, "green": 4}
    expect(page.locator("#browse-class input")).to_have_value("crimson")  # the gallery follows its class
    expect(app.browse_thumbs()).to_have_count(4)

    # Renaming to a class that exists is a merge, and the note says so first.
    app.pick_classes(["green"])
    page.locator("#manage-name textarea, #manage-name input").first.fill("Blue")
    app.wait_text("manage-note", r"Rename = merge: 'blue' is already a class, so the 4 pictures of 'green' go "
                                 r"into 'blue' and 'green' is removed\.")
    app.class_action("class-rename", r"Merged 'green' into 'blue' \(4 pictures moved\)\. Undo reverts it\.")
    assert app.class_counts() == {"blue": 8, "crimson": 4}

    # Merge what is left into a new class, then delete it.
    app.pick_classes(["crimson", "blue"])
    page.locator("#manage-name textarea, #manage-name input").first.fill("colours")
    app.wait_text("manage-note", r"Merge: .* go into 'colours' \(a new class\)")
    app.class_action("class-merge", r"Merged 'crimson' and 'blue' into 'colours' \(\d+ pictures moved\)")
    assert app.class_counts() == {"colours": 12}
    app.class_action("class-delete", r"Deleted class 'colours' \(12 pictures to the trash\)\. Undo brings it back\.")
    assert app.class_counts() == {}
    assert server.project.labels() == []

    for step in (r"Undone: deleted class 'colours'", r"Undone: merged 'crimson' and 'blue' into 'colours'",
                 r"Undone: merged 'green' into 'blue'", r"Undone: renamed class 'red' to 'crimson'"):
        app.class_action("pictures-undo", step)
    assert app.class_counts() == {"blue": 4, "green": 4, "red": 4}
    assert _disk(server.project) == before  # every picture back in its class, byte for byte
    app.class_action("pictures-redo", r"Redone: renamed class 'red' to 'crimson'")
    assert app.class_counts() == {"blue": 4, "crimson": 4, "green": 4}
    # No red "Error" badge anywhere on the way.
    assert page.locator("[data-testid=status-tracker] .error").count() == 0


def test_every_new_control_is_reachable_and_labelled_at_390_px(browser, server, tmp_path):
    import_files(server.project, [imagegen.class_folder(tmp_path / "pics", per_class=12)])
    with app_page(browser, server.url, width=390, height=844) as app:
        page = app.page
        app.choose("browse-class", "red")
        expect(app.browse_thumbs()).to_have_count(12)
        app.open_accordion("manage-classes")
        app.upload("upload-files", [_zip(tmp_path)])
        app.wait_text("import-plan", "holds 3 folders")
        labelled = {"#target-class": "Add pictures to class", "#import-into-target": "Put every picture into",
                    "#move-to": "Move selected pictures to class", "#manage-pick": "Classes to change",
                    "#manage-name": "New name (for rename or merge)"}
        buttons = {"#add-files": "Add 9 pictures to 3 classes", "#move-selected": "Move selected",
                   "#delete-selected": "Delete selected", "#browse-clear": "Unselect all", "#class-rename": "Rename",
                   "#class-merge": "Merge", "#class-delete": "Delete class", "#pictures-undo": "Undo",
                   "#pictures-redo": "Redo"}
        for sel, words in {**labelled, **buttons}.items():
            loc = page.locator(sel)
            loc.scroll_into_view_if_needed()
            expect(loc).to_be_visible()
            box = loc.bounding_box()
            assert box["x"] >= 0 and box["x"] + box["width"] <= 390, (sel, box)
            expect(loc).to_contain_text(words)
        for sel in buttons:  # a button a person can press: its name is its text
            expect(page.get_by_role("button", name=buttons[sel], exact=True)).to_be_visible()
        # Every picture of the class is inside the screen's width: none hides in a sideways scroll.
        for i in range(12):
            box = app.browse_thumbs().nth(i).bounding_box()
            assert box["x"] >= 0 and box["x"] + box["width"] <= 390, (i, box)
        app.screenshot(tmp_path / "search-390.png")
