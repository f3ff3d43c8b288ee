"""Classify a picture of a kind the model never learned: the Prediction box says it is none of its classes."""

from __future__ import annotations

import os
import re
import shutil

import pytest

import harness
import imagegen

expect = pytest.importorskip("playwright.sync_api", reason="Python Playwright is not installed").expect

pytestmark = pytest.mark.browser


def test_a_picture_of_no_class_shows_as_not_one_of_them(browser, open_set_project, tmp_path):
    grey, red = tmp_path / "grey cat.png", tmp_path / "my red one.png"
    imagegen.noisy((128, 128, 128), seed=95).save(grey)
    # A red picture the run trained on: by design 1 new known picture in 20 is refused (the threshold
    # accepts 95%), so one new picture could be that one; the project's own pictures are accepted (those it
    # trained on are at distance 0, and with 20 held out the threshold is the largest of their scores).
    shutil.copy(sorted((open_set_project.root / "images" / "red").iterdir())[0], red)
    with harness.serve(open_set_project.root) as srv, harness.app_page(browser, srv.url) as app:
        app.classify([grey, red])
        box = app.page.locator("#classify-label")
        expect(box).to_contain_text(re.compile(r"Not one of: blue, red \(nearest: (red|blue) \d+%\)"))
        captions = app.page.locator("#classify-gallery").inner_text()
        assert re.search(r"grey cat\.png: not one of these \(nearest: (red|blue) \d+%\)", captions)
        app.screenshot(tmp_path / "unknown.png")
        app.page.locator("#classify-gallery img").nth(1).click()
        expect(box).to_contain_text("Prediction for my red one.png (2 of 2;")
        expect(box).not_to_contain_text("Not one of")
        app.screenshot(tmp_path / "known.png")
        if out := os.environ.get("TL_SHOTS"):  # keep the screenshots to look at
            for n in ("unknown.png", "known.png"):
                shutil.copy(tmp_path / n, f"{out}/{n}")
