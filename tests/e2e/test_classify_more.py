"""Classify in a browser: why (a heatmap), add the picture to the dataset and undo, many pictures with a CSV."""

from __future__ import annotations

import os
import re
import zipfile
from pathlib import Path

import pytest

import harness
import imagegen

expect = pytest.importorskip("playwright.sync_api", reason="Python Playwright is not installed").expect

pytestmark = pytest.mark.browser
SHOTS = os.environ.get("TL_SHOTS")  # a folder to keep the screenshots in (for a person to look at)


def _shot(app, name: str) -> None:
    if SHOTS:
        app.screenshot(Path(SHOTS) / name)


def test_why_then_add_the_picture_to_a_new_class_and_undo(browser, trained_project, tmp_path):
    pic = tmp_path / "IMG_0042.png"
    imagegen.noisy(imagegen.COLOURS["blue"], seed=93).save(pic)
    with harness.serve(trained_project.root) as srv, harness.app_page(browser, srv.url) as app:
        app.classify([pic])
        actions = app.page.locator("#picture-actions")
        expect(actions).to_be_visible()
        predicted = re.search(r"\b(red|blue)\b", app.text("classify-label")).group(1)  # not the "red" of "Prediction"
        expect(app.page.locator("#classify-add-as input")).to_have_value(predicted)  # the answer, preselected

        app.page.locator("#classify-why").click()
        app.wait_idle(60_000)
        heat = app.page.locator("#classify-heatmap")
        expect(heat).to_contain_text(f"Where the model looked to say “{predicted}”")
        expect(heat.locator("img")).to_be_visible()
        _shot(app, "classify-why-1280.png")

        app.choose("classify-add-as", "navy")
        app.page.locator("#classify-add").click()
        app.wait_text("classify-add-note", r"Added IMG_0042\.png to 'navy' \(a new class\)")
        [item] = srv.project.items(label="navy")
        assert item.meta["provenance"] == "classified" and item.meta["name"] == "IMG_0042.png"
        assert "navy" in app.options("classify-add-as")

        app.page.locator("#classify-undo").click()
        app.wait_text("classify-add-note", r"Undone: added IMG_0042\.png to 'navy'")
        assert "navy" not in srv.project.labels() and srv.project.items(label="navy") == []


def test_many_pictures_give_a_table_and_a_csv_download(browser, trained_project, tmp_path):
    src = imagegen.class_folder(tmp_path / "src", per_class=3, seed=31)
    zpath = tmp_path / "more blues.zip"
    with zipfile.ZipFile(zpath, "w") as zf:
        for f in sorted((src / "blue").glob("*.png")):
            zf.write(f, f"blue/{f.name}")
    notes = tmp_path / "notes.txt"
    notes.write_text("a shopping list")
    files = sorted((src / "red").glob("*.png")) + [zpath, notes]
    for width in (1280, 390):
        with harness.serve(trained_project.root) as srv, harness.app_page(browser, srv.url, width=width) as app:
            app.tab("classify")
            app.page.locator("#bulk").get_by_text("Many pictures at once").click()
            app.upload("bulk-files", files)
            app.wait_text("bulk-summary", r"Classified 6 pictures", 120_000)
            assert "1 file not classified" in app.text("bulk-summary")
            table = app.page.locator("#bulk-table")
            expect(table).to_contain_text("more blues.zip!blue/0.png")
            expect(table).to_contain_text("a text file, not an image")
            _shot(app, f"classify-bulk-{width}.png")
            if width == 1280:
                with app.page.expect_download() as dl:
                    app.page.locator("#bulk-csv").click()
                text = Path(dl.value.path()).read_text(encoding="utf-8")
                lines = text.splitlines()
                assert lines[0].startswith("file,label,confidence,unknown") and len(lines) == 1 + 7
                assert any(line.startswith("notes.txt,") and "a text file" in line for line in lines)
                with app.page.expect_download() as dl:
                    app.page.locator("#bulk-zip").click()
                with zipfile.ZipFile(dl.value.path()) as zf:
                    assert len([n for n in zf.namelist() if n.endswith(".png")]) == 6

                # A row of the table: that picture (a zip member) becomes the one the actions act on.
                table.get_by_text("more blues.zip!blue/1.png").click()
                expect(app.page.locator("#classify-label")).to_contain_text(
                    "Prediction for more blues.zip!blue/1.png")
                expect(app.page.locator("#picture-actions")).to_be_visible()
                app.page.locator("#classify-why").click()
                app.wait_idle(60_000)
                expect(app.page.locator("#classify-heatmap")).to_contain_text("in more blues.zip!blue/1.png")
                app.choose("classify-add-as", "blue")
                app.page.locator("#classify-add").click()
                app.wait_text("classify-add-note", r"Added more blues\.zip!blue/1\.png to 'blue'")
                added = [it for it in srv.project.items(label="blue") if it.meta.get("provenance") == "classified"]
                assert len(added) == 1 and added[0].meta["name"] == "more blues.zip!blue/1.png"
                _shot(app, "classify-bulk-row-1280.png")
