"""A new user's first session, clicked through in a real Chromium.

Empty project -> two classes of pictures -> train with the defaults (quick mode on
pretrained weights, from a fake checkpoint in TORCH_HOME) -> delete a suspicious
picture and undo -> classify a new picture.
"""

from __future__ import annotations

import re

import pytest

import imagegen
from tl_app import runs

expect = pytest.importorskip("playwright.sync_api", reason="Python Playwright is not installed").expect

pytestmark = pytest.mark.browser

PLOTTED = {"training loss", "validation loss", "accuracy"}


def _picked(project, details: str):
    """The item the Review details describe: they name the picture and its class, never an item id."""
    from tl_app.review import picture_name

    name = re.search(r"Picture:\s*(.+)", details).group(1).strip()
    label = re.search(r"Class:\s*(\S+)", details).group(1)
    return next(it for it in project.items(label=label) if picture_name(it) == name)


def test_first_session(app, server, fake_pretrained, tmp_path):
    page, project = app.page, server.project
    pictures = imagegen.class_folder(tmp_path / "pictures", per_class=12)

    # 1. An empty project: no classes yet.
    assert project.labels() == []
    expect(page.locator("#classes-table")).not_to_contain_text("red")

    # 2. Two classes, each with a dozen pictures.
    for label in ("red", "blue"):
        app.add_class(label)
        summary = app.add_pictures(label, sorted((pictures / label).glob("*.png")))
        assert "12 imported" in summary
        app.wait_text("classes-table", rf"{label}\s+12")
    assert project.label_counts() == {"red": 12, "blue": 12}

    # 3. Train with the recommended defaults (only smaller): the first press is quick mode.
    app.tab("train")
    assert page.locator("#train-pretrained input[type=checkbox]").is_checked()
    assert app.train_mode() == "quick" and "CPU" in app.text("train-device")
    status = app.train(size=128, timeout_ms=180_000)
    run = runs.list_runs(project)[0]
    assert status.startswith(f"{run.name} finished"), status
    assert run.mode == "quick" and run.config["pretrained"] is True and run.config["size"] == 128
    app.wait_text("runs-table", rf"{re.escape(run.name)}\s+finished")
    assert set(app.plot_lines("train-plot")) == PLOTTED
    expect(page.locator("#train-confusion-plot img")).to_have_count(1)  # the confusion matrix, drawn
    assert app.train_mode() == "full"  # the next press fine-tunes further

    # 4. Review: the most suspicious picture, deleted and brought back.
    app.tab("review")
    expect(app.review_thumbs()).to_have_count(24)
    details = app.review_pick(0)
    item = _picked(project, details)
    path = project.path_of(item)
    before = path.read_bytes()
    first_src = app.review_sources()[0]

    app.review_action("delete", r"Deleted 1 image")
    expect(app.review_thumbs()).to_have_count(23)
    assert item.sha256 not in " ".join(app.review_sources()) and first_src not in app.review_sources()
    assert not path.exists() and project.item(item.id).status == "deleted"

    app.review_action("undo", r"Undone: deleted 1 image")
    expect(app.review_thumbs()).to_have_count(24)
    assert any(item.sha256 in s for s in app.review_sources())
    assert path.read_bytes() == before

    # 5. Classify a picture the model has not seen.
    new = tmp_path / "new picture.png"
    imagegen.noisy(imagegen.COLOURS["red"], seed=4242).save(new)
    shown = app.classify([new])
    assert re.search(r"(red|blue)", shown) and re.search(r"\d+%", shown), shown
    expect(page.locator("#classify-gallery img")).to_have_count(1)

    # 6. Back on the first tab, the pictures last added are still on show; after a reload
    #    the classes and the finished run are too.
    app.tab("search")
    expect(page.locator("#browse-gallery img")).to_have_count(12)
    assert app.options("browse-class") == ["red", "blue"]
    page.reload()
    app.open()
    assert app.options("target-class") == ["red", "blue"]
    app.tab("train")
    app.wait_text("runs-table", rf"{re.escape(run.name)}\s+finished")
    expect(page.locator("#train-plot [aria-roledescription='line mark']")).to_have_count(3)
    assert set(app.plot_lines("train-plot")) == PLOTTED
