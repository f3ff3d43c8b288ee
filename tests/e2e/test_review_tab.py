"""The Review tab in a real browser: select pictures, act with the keyboard, open a confusion cell."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

import imagegen
from tl_app import review
from tl_app.importer import import_files
from tl_app.train import TrainConfig, train

expect = pytest.importorskip("playwright.sync_api", reason="Python Playwright is not installed").expect

pytestmark = pytest.mark.browser


@pytest.fixture
def misfiled(tmp_path, server):
    """The served project: red and blue pictures, two reds filed as blue, trained once."""
    src = imagegen.class_folder(tmp_path / "pictures", per_class=12)
    for i in range(2):
        imagegen.noisy(imagegen.COLOURS["red"], seed=700 + i).save(src / "blue" / f"wrong{i}.png")
    project = server.project
    import_files(project, [src])
    assert train(project, TrainConfig(size=64, epochs=2, pretrained=False)).status == "finished"
    return project, [it.id for it in project.items() if Path(it.source).name.startswith("wrong")]


def test_select_act_with_keys_and_undo(app, misfiled):
    project, wrong = misfiled
    page = app.page
    app.tab("review")
    expect(app.review_thumbs()).to_have_count(26)
    app.wait_text("review-note", r"probably in the wrong class")

    # Two clicks select two pictures (the two the queue puts first); the details and captions say so.
    chosen = [r.item for r in review.queue(project, top=2).rows]
    assert set(chosen) == set(wrong)
    app.review_pick(0)
    app.review_thumbs().nth(1).click()
    app.wait_text("review-details", r"2 selected")
    expect(page.locator("#review-gallery").get_by_text("☑")).to_have_count(2)
    befores = {i: project.path_of(project.item(i)).read_bytes() for i in chosen}

    # D deletes the selection (to the trash), U brings both back byte for byte.
    page.locator("body").click(position={"x": 5, "y": 5})  # the focus out of any text field
    page.keyboard.press("d")
    app.wait_text("review-status", r"Deleted 2 images")
    expect(app.review_thumbs()).to_have_count(24)
    assert all(project.item(i).status == "deleted" for i in chosen)
    page.keyboard.press("u")
    app.wait_text("review-status", r"Undone: deleted 2 images")
    expect(app.review_thumbs()).to_have_count(26)
    assert all(project.path_of(project.item(i)).read_bytes() == befores[i] for i in chosen)

    # A selects every picture shown, Escape clears; keys typed into a field do nothing.
    page.keyboard.press("a")
    app.wait_text("review-details", r"26 selected")
    page.keyboard.press("Escape")
    app.wait_text("review-details", r"Click pictures to select")
    box = page.locator("#review-move-to input")
    box.click()
    box.type("d")
    box.press("Escape")
    page.wait_for_timeout(300)
    assert len(project.items()) == 26


def test_a_confusion_cell_opens_its_pictures_and_they_move_to_the_class_they_look_like(app, misfiled):
    project, wrong = misfiled
    page = app.page
    app.tab("review")
    page.get_by_text("Confusion matrix: click a cell").click()
    matrix = page.locator("#review-matrix")
    expect(matrix).to_contain_text("→ red")
    # Row "blue", column "→ red": the pictures filed as blue that look red.
    cell = matrix.get_by_role("row").filter(has_text=re.compile(r"^\s*blue")).get_by_role("gridcell").nth(2)
    cell.click()
    app.wait_text("review-cell-note", r"blue → red")
    app.wait_idle()
    shown = app.review_thumbs().count()
    assert shown >= 2
    page.keyboard.press("a")
    app.wait_text("review-details", rf"{shown} selected|Picture")
    page.locator("body").click(position={"x": 5, "y": 5})
    page.keyboard.press("p")
    app.wait_text("review-status", r"Moved \d+ images? to 'red'")
    assert all(project.item(i).label == "red" for i in wrong)
    page.keyboard.press("z")
    app.wait_text("review-status", r"Undone: moved")
    assert all(project.item(i).label == "blue" for i in wrong)
